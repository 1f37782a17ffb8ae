"""ELECTRA (discriminator): BERT layers over narrower embeddings, and its classification head."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.bert import EncoderModel, RobertaHead
from bertjax.models.config import ModelConfig, bert_config_from_hf
from bertjax.models.layers import ACTIVATIONS, ModelOutput, PeftConfig, head_index


@dataclasses.dataclass(frozen=True)
class ElectraConfig(ModelConfig):
    """ModelConfig plus the embedding width; the embeddings are projected up to hidden_size
    (`embeddings_project`) when they are narrower."""

    embedding_size: int = 128  # transformers' ElectraConfig default

    @property
    def family(self) -> str:
        return "electra"

    @property
    def embedding_width(self) -> int:
        return self.embedding_size


def config_from_hf(raw: dict) -> ElectraConfig:
    """ELECTRA `config.json` fields (BERT's names + embedding_size) -> ElectraConfig."""
    for key in ("is_decoder", "add_cross_attention"):
        if raw.get(key):
            raise ValueError(f"ELECTRA config.json: {key}=true is not supported (encoders only)")
    if raw.get("hidden_act", "gelu") not in ACTIVATIONS:
        raise ValueError(
            f"ELECTRA config.json: hidden_act {raw['hidden_act']!r} not supported; "
            f"use one of {', '.join(ACTIVATIONS)}"
        )
    bert = bert_config_from_hf(raw)  # checks fields and position_embedding_type
    return ElectraConfig(**dataclasses.asdict(bert), embedding_size=raw.get("embedding_size", 128))


class ElectraClassifier(nn.Module):
    """ElectraForSequenceClassification: the encoder under `electra`, the head under
    `classifier` ({dense, out_proj}: dropout → dense → GELU → dropout → out_proj on [CLS])."""

    config: ElectraConfig
    num_labels: int = 2
    peft: PeftConfig = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        deterministic: bool = True,
        segment_ids: jax.Array | None = None,
        position_ids: jax.Array | None = None,
        cls_index: jax.Array | None = None,
        first_tokens_only: bool = False,
    ) -> ModelOutput:
        """input_ids, attention_mask, token_type_ids: [batch, seq] ints; packed rows and
        first_tokens_only as bertjax.models.bert.SequenceClassifier."""
        encoder = EncoderModel(self.config, self.peft, self.dtype, add_pooler=False, name="electra")
        packed = dict(segment_ids=segment_ids, position_ids=position_ids, cls_index=cls_index)
        packed["first_tokens_only"] = first_tokens_only
        out = encoder(input_ids, attention_mask, token_type_ids, deterministic, **packed)
        head = RobertaHead(  # no peft: the head trains in full, as RoBERTa's
            self.config,
            dtype=self.dtype,
            deterministic=deterministic,
            num_labels=self.num_labels,
            activation="gelu",  # transformers: get_activation("gelu"), whatever hidden_act is
            name="classifier",
        )
        logits = head(out.last_hidden_state, head_index(cls_index, first_tokens_only))
        return out.replace(logits=logits.astype(jnp.float32))
