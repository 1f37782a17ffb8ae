"""model_type -> architecture family: what building, loading and saving a model need to know."""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bertjax.models import bert, deberta, distilbert, electra, modernbert
from bertjax.models.config import BERT_TYPES, bert_config_from_hf, bert_config_to_hf
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
    encoder, classifier: the bare encoder and the sequence classifier, Flax modules made from
        keyword fields (config=, classifier also num_labels=, peft= an AdapterConfig or None,
        dtype=, and remat= where the family has it) and called as
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
    norms: module-path suffixes of the encoder's layer norms, which adapter methods train
        beside the adapters (Houlsby et al. 2019); peft.trainable_mask(norms=...).
    remat: whether its layers take config.train.remat (activation checkpointing).
    packing: whether it takes packed rows (segment_ids, position_ids, cls_index;
        bertjax/data/packing.py).
    first_tokens: whether its classifier takes `first_tokens_only=True` (the last layer then
        computes only the tokens the head reads; the training and evaluation steps pass it).
    memory_estimate: whether bertjax/train/memory.py's per-layer count (BERT's layer layout:
        Q, K, V, one GELU FFN, post-norms, absolute positions) describes its layers.
    """

    config_from_hf: Callable[[dict], Any]
    config_to_hf: Callable[[Any], dict]
    encoder: Callable[..., nn.Module]
    classifier: Callable[..., nn.Module]
    architecture: str
    prefix: str
    encoder_keys: tuple[str, ...]
    head: tuple[str, ...] = ("classifier",)
    pretraining_heads: tuple[str, ...] = ("cls.", "lm_head.")
    optional: tuple[str, ...] = ()
    layer_prefix: str = "encoder.layer"
    per_layer: tuple[str, ...] = ()
    first_layer_differs: bool = False
    norms: tuple[str, ...] = ("LayerNorm",)
    remat: bool = False
    packing: bool = False
    first_tokens: bool = False
    memory_estimate: bool = False


def _bert_encoder(config, **fields) -> nn.Module:
    return bert.EncoderModel(config, add_pooler=config.family == "bert", **fields)


_BERT_LAYOUT = dict(
    config_from_hf=bert_config_from_hf,
    config_to_hf=bert_config_to_hf,
    encoder=_bert_encoder,
    classifier=bert.SequenceClassifier,
    encoder_keys=("embeddings", "encoder", "pooler"),
    remat=True,
    packing=True,
    first_tokens=True,
    memory_estimate=True,
)

FAMILIES = {
    **{
        model_type: Family(**_BERT_LAYOUT, architecture=architecture, prefix=layout)
        for model_type, (layout, architecture) in BERT_TYPES.items()
    },
    "distilbert": Family(
        distilbert.config_from_hf,
        distilbert.config_to_hf,
        distilbert.DistilBertModel,
        distilbert.DistilBertClassifier,
        architecture="DistilBert",
        prefix="distilbert",
        encoder_keys=("embeddings", "transformer"),
        head=("pre_classifier", "classifier"),
        pretraining_heads=("vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
        layer_prefix="transformer.layer",
        norms=("LayerNorm", "sa_layer_norm", "output_layer_norm"),
        packing=True,
        first_tokens=True,
        memory_estimate=True,
    ),
    "electra": Family(
        electra.config_from_hf,
        bert_config_to_hf,  # ELECTRA's config.json uses BERT's names (+ embedding_size)
        functools.partial(bert.EncoderModel, add_pooler=False),
        electra.ElectraClassifier,
        architecture="Electra",
        prefix="electra",
        encoder_keys=("embeddings", "embeddings_project", "encoder"),
        pretraining_heads=(
            "discriminator_predictions.",
            "generator_predictions.",
            "generator_lm_head.",
        ),
        packing=True,
        first_tokens=True,
        memory_estimate=True,
    ),
    # Hugging Face peft trains only `classifier` beside the adapters (its modules_to_save),
    # leaving DeBERTa's pooler and ModernBERT's prediction head as loaded: so does `head`.
    "deberta-v2": Family(
        deberta.config_from_hf,
        deberta.hf_config_dict,
        deberta.DebertaModel,
        deberta.DebertaForSequenceClassification,
        architecture="DebertaV2",
        prefix=deberta.PREFIX,
        encoder_keys=("embeddings", "encoder"),
        optional=("pooler",),
        packing=True,  # relative buckets within each example
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
        modernbert.ModernBertModel,
        modernbert.ModernBertForSequenceClassification,
        architecture="ModernBert",
        prefix=modernbert.PREFIX,
        encoder_keys=("embeddings", "layers", "final_norm"),
        optional=("head",),  # masked-LM checkpoints have it (loaded), bare ones don't
        pretraining_heads=("decoder.",),
        layer_prefix="layers",
        per_layer=("layer_types",),  # each kept layer keeps its kind (global or local)
        first_layer_differs=True,
        # pre-norm layers (layer 0 has no attn_norm); not head/norm, which PEFT leaves as loaded
        norms=("embeddings/norm", "attn_norm", "mlp_norm", "final_norm"),
        packing=True,  # rotary positions and the local window within each example
    ),
}


def family_of(model_type: str | None) -> Family:
    """The Family of a config.json's model_type; a one-line error naming the supported ones."""
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def family_of_model(model) -> Family:
    """The Family of a built model (a peft.Peft wrapper reads its wrapped model's config)."""
    return family_of(model.config.model_type)


def head_modules(model) -> tuple[str, ...]:
    """Top-level parameter names of `model`'s classification head (Family.head)."""
    return family_of_model(model).head


def norm_modules(model) -> tuple[str, ...]:
    """Module-path suffixes of `model`'s layer norms (Family.norms)."""
    return family_of_model(model).norms


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
    by its family (Family.encoder / classifier), with adapters inside; LoRA, DoRA and IA3
    wrap it in `peft.Peft` (same call, parameters added by module path). remat (families
    with Family.remat): recompute each encoder layer's activations in the backward pass
    (True) or keep what a named jax.checkpoint_policies policy saves (REMAT_POLICIES)."""
    family = family_of(config.model_type)
    if remat and not family.remat:
        raise ValueError(
            f"train.remat is implemented for BERT/RoBERTa layers, not {config.model_type}; "
            "use --config.train.remat=False"
        )
    adapter = peft if isinstance(peft, AdapterConfig) else None
    fields = dict(config=config, peft=adapter, dtype=dtype)
    if remat:
        fields["remat"] = remat
    if num_labels is None:
        model = family.encoder(**fields)
    else:
        model = family.classifier(num_labels=num_labels, **fields)
    if peft is None or adapter is not None:
        return model
    return Peft(model, dataclasses.replace(peft, head=family.head))  # the head trains whole
