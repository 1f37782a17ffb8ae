"""model_type -> architecture family: what building, loading and saving a model need to know."""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bertjax.models import deberta, distilbert, electra, modernbert
from bertjax.models.bert import build_bert
from bertjax.models.config import bert_config_from_hf, bert_config_to_hf
from bertjax.models.layers import PeftConfig
from peft.adapter import AdapterConfig
from peft.inject import Peft


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family. Adding one: a module bertjax/models/<family>.py and an entry below.

    The family's config object has `model_type` and `hidden_size` (adapter sizes), plus
    `initializer_range` and `layer_norm_eps` where its blocks use layers.Block's helpers. The
    built module has the attributes `config`, `peft` and, classifiers only, `num_labels`
    (save_pretrained and from_pretrained read them).

    config_from_hf: config.json dict -> the config the model takes; a one-line ValueError
        for options the family does not implement.
    config_to_hf: config -> the model fields of a transformers config.json.
    build: (config, num_labels | None, peft, dtype) -> the bare encoder (num_labels None) or
        the sequence classifier, a Flax module called as
        (input_ids, attention_mask, token_type_ids, deterministic) -> ModelOutput.
    architecture: transformers' class stem: {architecture}Model and
        {architecture}ForSequenceClassification.
    prefix: the encoder's name in the classifier's state dict ("bert", "distilbert").
    encoder_keys: top-level names of the bare encoder's state dict.
    head: top-level modules of the classification head, the parameters a base checkpoint
        may lack and every PEFT method trains (peft.trainable_mask(head=...)).
    pretraining_heads: key prefixes of pretraining checkpoints a classifier drops.
    optional: other top-level modules a base checkpoint may lack (initialised from the seed
        and, as in Hugging Face peft, not trained by PEFT methods: DeBERTa's pooler).
    layer_prefix: state-dict path of the encoder layers: layer i's keys hold
        f"{layer_prefix}.{i}." (from_pretrained(layers=…) keeps some of them).
    per_layer: config fields holding one value per layer (ModernBERT's layer_types).
    first_layer_differs: layer 0 is built unlike the others (ModernBERT's has no attention
        LayerNorm), so a layer selection must keep it.
    """

    config_from_hf: Callable[[dict], Any]
    config_to_hf: Callable[[Any], dict]
    build: Callable[..., Any]
    architecture: str
    prefix: str
    encoder_keys: tuple[str, ...]
    head: tuple[str, ...] = ("classifier",)
    pretraining_heads: tuple[str, ...] = ("cls.", "lm_head.")
    optional: tuple[str, ...] = ()
    layer_prefix: str = "encoder.layer"
    per_layer: tuple[str, ...] = ()
    first_layer_differs: bool = False


_BERT_LAYOUT = dict(
    config_from_hf=bert_config_from_hf,
    config_to_hf=bert_config_to_hf,
    build=build_bert,
    encoder_keys=("embeddings", "encoder", "pooler"),
)

FAMILIES = {
    "bert": Family(**_BERT_LAYOUT, architecture="Bert", prefix="bert"),
    "roberta": Family(**_BERT_LAYOUT, architecture="Roberta", prefix="roberta"),
    "xlm-roberta": Family(**_BERT_LAYOUT, architecture="XLMRoberta", prefix="roberta"),
    "camembert": Family(**_BERT_LAYOUT, architecture="Camembert", prefix="roberta"),
    "distilbert": Family(
        distilbert.config_from_hf,
        distilbert.config_to_hf,
        distilbert.build,
        architecture="DistilBert",
        prefix="distilbert",
        encoder_keys=("embeddings", "transformer"),
        head=("pre_classifier", "classifier"),
        pretraining_heads=("vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
        layer_prefix="transformer.layer",
    ),
    "electra": Family(
        electra.config_from_hf,
        bert_config_to_hf,  # ELECTRA's config.json uses BERT's names (+ embedding_size)
        electra.build,
        architecture="Electra",
        prefix="electra",
        encoder_keys=("embeddings", "embeddings_project", "encoder"),
        pretraining_heads=(
            "discriminator_predictions.",
            "generator_predictions.",
            "generator_lm_head.",
        ),
    ),
    # Hugging Face peft trains only `classifier` beside the adapters (its modules_to_save),
    # leaving DeBERTa's pooler and ModernBERT's prediction head as loaded: so does `head`.
    "deberta-v2": Family(
        deberta.config_from_hf,
        deberta.hf_config_dict,
        deberta.build,
        architecture="DebertaV2",
        prefix=deberta.PREFIX,
        encoder_keys=("embeddings", "encoder"),
        optional=("pooler",),
        # MLM heads, and the absolute position table that position_biased_input=False ignores
        pretraining_heads=(
            "lm_predictions.",
            "mask_predictions.",
            "cls.",
            "deberta.embeddings.position_embeddings.",
            "embeddings.position_embeddings.",
        ),
    ),
    "modernbert": Family(
        modernbert.config_from_hf,
        modernbert.hf_config_dict,
        modernbert.build,
        architecture="ModernBert",
        prefix=modernbert.PREFIX,
        encoder_keys=("embeddings", "layers", "final_norm"),
        optional=("head",),  # masked-LM checkpoints have it (loaded), bare ones don't
        pretraining_heads=("decoder.",),
        layer_prefix="layers",
        per_layer=("layer_types",),  # each kept layer keeps its kind (global or local)
        first_layer_differs=True,
    ),
}


def family_of(model_type: str | None) -> Family:
    """The Family of a config.json's model_type; a one-line error naming the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def head_modules(model) -> tuple[str, ...]:
    """Top-level parameter names of `model`'s classification head (Family.head)."""
    return family_of(model.config.model_type).head


def model_config_from_hf(hf_config: Any):
    """The config object of the model family of a `transformers` config (or its dict):
    a ModelConfig for BERT/RoBERTa, a family's own subclass or dataclass otherwise."""
    raw = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    return family_of(raw.get("model_type")).config_from_hf(raw)


def build(
    config,
    num_labels: int | None = None,
    peft: PeftConfig = None,
    dtype: jnp.dtype = jnp.float32,
    remat: bool | str = False,
) -> nn.Module:
    """The bare encoder (num_labels=None) or the sequence classifier for `config`, built
    by its family's module (bertjax/models/families.py), with adapters inside; LoRA, DoRA and IA3
    wrap it in `peft.Peft` (same call, parameters added by module path). remat (BERT-layout
    layers only): see build_bert."""
    family = family_of(config.model_type)
    adapter = peft if isinstance(peft, AdapterConfig) else None
    if remat and family.build is not build_bert:
        raise ValueError(
            f"train.remat is implemented for BERT/RoBERTa layers, not {config.model_type}; "
            "use --config.train.remat=False"
        )
    extra = dict(remat=remat) if remat else {}
    model = family.build(config, num_labels, adapter, dtype, **extra)
    if peft is None or adapter is not None:
        return model
    return Peft(model, dataclasses.replace(peft, head=family.head))  # the head trains whole
