"""DistilBERT: encoder and DistilBertForSequenceClassification, named like the HF state dict."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models.config import ModelConfig
from bertjax.models.layers import (
    ACTIVATION_DTYPE,
    ACTIVATIONS,
    Block,
    ModelOutput,
    PeftConfig,
    attention_bias,
    block_dropout,
    check_length,
    first_token_index,
    first_tokens,
    head_index,
    linear,
    multi_head_attention,
    segment_bias,
    tokens_at,
)

# DistilBERT config.json name -> ModelConfig field, with transformers' DistilBertConfig
# default for files that omit it.
_FIELDS = {
    "vocab_size": ("vocab_size", 30522),
    "max_position_embeddings": ("max_position_embeddings", 512),
    "sinusoidal_pos_embds": ("sinusoidal_pos_embds", False),
    "n_layers": ("num_hidden_layers", 6),
    "n_heads": ("num_attention_heads", 12),
    "dim": ("hidden_size", 768),
    "hidden_dim": ("intermediate_size", 3072),
    "dropout": ("hidden_dropout_prob", 0.1),
    "attention_dropout": ("attention_probs_dropout_prob", 0.1),
    "activation": ("hidden_act", "gelu"),
    "initializer_range": ("initializer_range", 0.02),
    "seq_classif_dropout": ("classifier_dropout", 0.2),
    "pad_token_id": ("pad_token_id", 0),
}


@dataclasses.dataclass(frozen=True)
class DistilBertConfig(ModelConfig):
    """ModelConfig in BERT's names (hidden_size = dim, …); classifier_dropout holds
    seq_classif_dropout. No token types; LayerNorm eps is fixed at 1e-12."""

    sinusoidal_pos_embds: bool = False

    @property
    def family(self) -> str:
        return "distilbert"


def config_from_hf(raw: dict) -> DistilBertConfig:
    """DistilBERT `config.json` fields -> DistilBertConfig."""
    values = {ours: raw.get(theirs, default) for theirs, (ours, default) in _FIELDS.items()}
    if values["hidden_act"] not in ACTIVATIONS:
        raise ValueError(
            f"DistilBERT config.json: activation {values['hidden_act']!r} not supported; "
            f"use one of {', '.join(ACTIVATIONS)}"
        )
    if values["hidden_size"] % values["num_attention_heads"]:
        raise ValueError(
            f"DistilBERT config.json: n_heads {values['num_attention_heads']} does not divide "
            f"dim {values['hidden_size']}"
        )
    return DistilBertConfig(
        model_type="distilbert", type_vocab_size=0, layer_norm_eps=1e-12, **values
    )


def config_to_hf(config: DistilBertConfig) -> dict:
    """The model fields of a transformers DistilBERT `config.json`."""
    out = {theirs: getattr(config, ours) for theirs, (ours, _) in _FIELDS.items()}
    return dict(model_type="distilbert", **out)


def sinusoidal_init(key, shape, dtype=jnp.float32) -> jax.Array:
    """transformers' create_sinusoidal_embeddings: sin on even columns, cos on odd ones."""
    del key
    positions, dim = shape
    angles = np.arange(positions)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)
    table = np.where(np.arange(dim) % 2 == 0, np.sin(angles), np.cos(angles))
    return jnp.asarray(table, dtype)


class Embeddings(Block):
    """word + position embeddings → LayerNorm → dropout (no token types)."""

    @nn.compact
    def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        """positions: [batch, seq] (packed rows: index within each example); None: 0, 1, …"""
        cfg = self.config
        check_length(input_ids, cfg.max_position_embeddings)
        init = nn.initializers.normal(cfg.initializer_range)
        position_init = sinusoidal_init if cfg.sinusoidal_pos_embds else init

        def embed(num: int, name: str, embedding_init) -> nn.Embed:
            width, dtype = cfg.hidden_size, ACTIVATION_DTYPE
            return nn.Embed(num, width, dtype=dtype, embedding_init=embedding_init, name=name)

        words = embed(cfg.vocab_size, "word_embeddings", init)(input_ids)
        if positions is None:
            positions = jnp.arange(input_ids.shape[-1])[None, :]
        hidden = words + embed(cfg.max_position_embeddings, "position_embeddings", position_init)(
            positions
        )
        return self.dropout(self.layer_norm()(hidden), cfg.hidden_dropout_prob)


class MultiHeadSelfAttention(Block):
    """q_lin/k_lin/v_lin → attention → out_lin (no dropout after it, as transformers)
    → [adapter]."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        context = multi_head_attention(self, hidden, bias, ("q_lin", "k_lin", "v_lin"), queries)
        out = self.dense(self.config.hidden_size, "out_lin")(context)
        return self.adapter(out, "attention")


class FFN(Block):
    """lin1 → activation → lin2 → dropout → [adapter]."""

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        x = ACTIVATIONS[cfg.hidden_act](self.dense(cfg.intermediate_size, "lin1")(hidden))
        x = self.dropout(self.dense(cfg.hidden_size, "lin2")(x), cfg.hidden_dropout_prob)
        return self.adapter(x, "ffn")


class TransformerBlock(Block):
    """One layer; with `queries` [batch, E] only those positions' outputs ([batch, E, hidden])."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        attended = self.child(MultiHeadSelfAttention, "attention")(hidden, bias, queries)
        attended = self.layer_norm("sa_layer_norm")(attended + tokens_at(hidden, queries))
        out = self.child(FFN, "ffn")(attended)
        return self.layer_norm("output_layer_norm")(out + attended)


class LayerStack(Block):
    """Layers named "0", "1", … so paths read `transformer/layer/0/…` as in HF; `queries`:
    the last layer computes only those positions."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        last = self.config.num_hidden_layers - 1
        for i in range(self.config.num_hidden_layers):
            hidden = self.child(TransformerBlock, str(i))(
                hidden, bias, queries if i == last else None
            )
        return hidden


class Transformer(Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        return self.child(LayerStack, "layer")(hidden, bias, queries)


class DistilBertModel(nn.Module):
    """DistilBertModel: embeddings → transformer. token_type_ids is accepted and ignored:
    DistilBERT has no segment embeddings, a pair's halves differ by [SEP] only."""

    config: DistilBertConfig
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
        """input_ids, attention_mask: [batch, seq] ints; packed rows (bertjax/data/packing.py)
        give segment_ids and position_ids [rows, seq] instead of attention_mask.
        first_tokens_only: the last layer computes only the first tokens (token 0, or
        cls_index [rows, E] of packed rows): last_hidden_state [batch, 1 | E, hidden]."""
        del token_type_ids
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        fields = dict(
            config=self.config, peft=self.peft, dtype=self.dtype, deterministic=deterministic
        )
        if segment_ids is None:
            bias = attention_bias(attention_mask)
        else:
            bias = segment_bias(segment_ids)
        hidden = Embeddings(**fields, name="embeddings")(input_ids, position_ids)
        queries = first_token_index(input_ids, cls_index) if first_tokens_only else None
        hidden = Transformer(**fields, name="transformer")(hidden, bias, queries)
        return ModelOutput(last_hidden_state=hidden)


class DistilBertClassifier(nn.Module):
    """DistilBertForSequenceClassification: the encoder under `distilbert`; on the first
    token, pre_classifier → ReLU → dropout(seq_classif_dropout) → classifier."""

    config: DistilBertConfig
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
        """input_ids, attention_mask: [batch, seq] ints; token_type_ids ignored; logits
        [batch, num_labels], or [rows, E, num_labels] for packed rows; first_tokens_only as
        bertjax.models.bert.SequenceClassifier."""
        cfg = self.config
        encoder = DistilBertModel(cfg, self.peft, self.dtype, name="distilbert")
        out = encoder(
            input_ids,
            attention_mask,
            token_type_ids,
            deterministic,
            segment_ids,
            position_ids,
            cls_index,
            first_tokens_only,
        )

        def dense(features: int, name: str) -> nn.Dense:
            init = nn.initializers.normal(cfg.initializer_range)
            return linear(features, self.dtype, kernel_init=init, name=name)

        first = first_tokens(out.last_hidden_state, head_index(cls_index, first_tokens_only))
        pooled = nn.relu(dense(cfg.hidden_size, "pre_classifier")(first))
        pooled = block_dropout(self, pooled, cfg.head_dropout, deterministic)
        logits = dense(self.num_labels, "classifier")(pooled)
        return out.replace(logits=logits.astype(jnp.float32))
