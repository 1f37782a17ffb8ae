"""model_type -> architecture family: what building, loading and saving a model need to know."""

import dataclasses
from collections.abc import Callable
from typing import Any

from bertjax import deberta, distilbert, electra, modernbert
from bertjax.config import bert_config_from_hf, bert_config_to_hf
from bertjax.model import build_bert


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family. Adding one: a module bertjax/<family>.py and an entry below.

    The family's config object has `model_type` and `hidden_size` (adapter sizes), plus
    `initializer_range` and `layer_norm_eps` where its blocks use model._Block's helpers. The
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
