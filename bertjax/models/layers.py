"""Layers every encoder family shares: the Block base (Dense/LayerNorm/dropout/adapter helpers),
outputs, attention masks as biases, multi-head attention and first-token pooling."""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from bertjax.models import precision
from bertjax.models.config import ModelConfig
from peft.adapter import ACTIVATIONS, Adapter, AdapterConfig
from peft.dropout import module_dropout
from peft.inject import PeftMethod

# Adapters live inside the blocks; LoRA, DoRA and IA3 are injected from outside (peft.Peft).
PeftConfig = PeftMethod | AdapterConfig | None
# config.train.remat's named policies: what each layer's backward pass keeps (True: nothing).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")
# Activations, LayerNorm, softmax and the loss stay float32 whatever the compute dtype:
# bfloat16 elementwise work is no faster than float32 on CPU, and it loses precision.
ACTIVATION_DTYPE = jnp.float32


def linear(features: int, dtype: jnp.dtype, **kwargs) -> nn.Dense:
    """nn.Dense computing in `dtype`: float32 is the plain layer; bfloat16 casts the input
    and kernel to bfloat16 for the dot and returns float32 (the bias added in float32)."""
    if jnp.dtype(dtype) == jnp.dtype(jnp.float32):
        return nn.Dense(features, dtype=jnp.float32, **kwargs)
    if jnp.dtype(dtype) != jnp.dtype(jnp.bfloat16):
        raise ValueError(f"compute dtype {dtype} unknown; use float32 or bfloat16")
    return nn.Dense(
        features,
        promote_dtype=precision.keep_dtypes,
        dot_general=precision.bfloat16_dot_general,
        **kwargs,
    )


@flax.struct.dataclass
class ModelOutput:
    """last_hidden_state [batch, seq, hidden]; pooler_output [batch, hidden] (BERT encoder);
    logits [batch, num_labels] (classifiers)."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    logits: jax.Array | None = None


def block_dropout(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Hashed dropout under `module`'s "dropout" rng stream; draws no key when it is off."""
    return module_dropout(module, x, rate, not deterministic)


class Block(nn.Module):
    """Shared fields, the Dense factory and the adapter placement of every block."""

    config: ModelConfig
    peft: AdapterConfig | None = None
    dtype: jnp.dtype = jnp.float32  # of the matmuls' operands (`linear`, `precision.einsum`)
    deterministic: bool = True
    remat: bool | str = False  # activation checkpointing per encoder layer (REMAT_POLICIES)

    def child(self, block: type["Block"], name: str, **extra) -> "Block":
        """A submodule sharing this block's config, peft, dtype and dropout mode."""
        return block(
            config=self.config,
            peft=self.peft,
            dtype=self.dtype,
            deterministic=self.deterministic,
            remat=self.remat,
            name=name,
            **extra,
        )

    def dense(self, features: int, name: str, use_bias: bool = True) -> nn.Module:
        init = nn.initializers.normal(self.config.initializer_range)
        return linear(features, self.dtype, use_bias=use_bias, kernel_init=init, name=name)

    def layer_norm(self, name: str = "LayerNorm") -> nn.Module:
        return nn.LayerNorm(self.config.layer_norm_eps, dtype=ACTIVATION_DTYPE, name=name)

    def dropout(self, x: jax.Array, rate: float) -> jax.Array:
        return block_dropout(self, x, rate, self.deterministic)

    def adapter(self, x: jax.Array, sublayer: str) -> jax.Array:
        if isinstance(self.peft, AdapterConfig) and self.peft.placed_after(sublayer):
            return Adapter(self.peft, dtype=ACTIVATION_DTYPE, name="adapter")(x)
        return x


def check_length(input_ids: jax.Array, limit: int) -> None:
    """One-line error for inputs longer than the position embeddings reach."""
    if input_ids.shape[-1] > limit:
        raise ValueError(
            f"input length {input_ids.shape[-1]} exceeds this model's limit of {limit} tokens "
            "(max_position_embeddings); truncate the input (data.max_length)"
        )


def attention_bias(attention_mask: jax.Array) -> jax.Array:
    """[batch, 1, 1, seq]: 0 where attended, the most negative float where masked."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


def same_example(segment_ids: jax.Array) -> jax.Array:
    """Packed rows: [rows, 1, seq, seq] bool, True where query and key belong to one example
    (segment_ids equal and > 0): block-diagonal."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (same & (segment_ids[:, None, :] > 0))[:, None]


def segment_bias(segment_ids: jax.Array) -> jax.Array:
    """Packed rows: [rows, 1, seq, seq], 0 where query and key belong to one example
    (same_example), the most negative float elsewhere."""
    return jnp.where(same_example(segment_ids), 0.0, jnp.finfo(jnp.float32).min)


def first_tokens(hidden: jax.Array, cls_index: jax.Array | None) -> jax.Array:
    """hidden [rows, seq, width] -> the examples' first tokens: [rows, width] (token 0) when
    cls_index is None, else [rows, E, width] at cls_index [rows, E] (packed rows)."""
    if cls_index is None:
        return hidden[:, 0]
    return tokens_at(hidden, cls_index)


def first_token_index(input_ids: jax.Array, cls_index: jax.Array | None) -> jax.Array:
    """[batch, E] positions of the tokens a classification head reads: cls_index of packed
    rows, else token 0 ([batch, 1])."""
    if cls_index is not None:
        return cls_index
    return jnp.zeros((input_ids.shape[0], 1), jnp.int32)


def tokens_at(x: jax.Array, index: jax.Array | None) -> jax.Array:
    """x [batch, seq, …] at index [batch, E] -> [batch, E, …]; all of x when index is None."""
    if index is None:
        return x
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


def query_bias(bias: jax.Array, queries: jax.Array | None) -> jax.Array:
    """An attention bias [batch, 1, seq | 1, seq] restricted to the query positions
    `queries` [batch, E] (None: all); a bias the same for every query stays as it is."""
    if queries is None or bias.shape[2] == 1:
        return bias
    return jnp.take_along_axis(bias, queries[:, None, :, None], axis=2)


def head_index(cls_index: jax.Array | None, first_tokens_only: bool) -> jax.Array | None:
    """The cls_index a head applies to the encoder's output: as given, or, where the last
    layer computed only the first tokens (first_tokens_only), 0..E-1 of those."""
    if cls_index is None or not first_tokens_only:
        return cls_index
    return jnp.broadcast_to(jnp.arange(cls_index.shape[-1]), cls_index.shape)


def multi_head_attention(
    block: Block, hidden: jax.Array, bias: jax.Array, names, queries: jax.Array | None = None
) -> jax.Array:
    """Softmax attention over `block`'s query/key/value Dense layers named `names`:
    hidden [batch, seq, hidden] -> context [batch, seq, hidden] (before the output Dense);
    with `queries` [batch, E] only those positions attend: context [batch, E, hidden]."""
    cfg = block.config
    heads, size = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def project(name: str, x: jax.Array) -> jax.Array:  # [batch, seq, heads, head_size]
        out = block.dense(cfg.hidden_size, name)(x)
        return out.reshape(*out.shape[:-1], heads, size)

    query = project(names[0], tokens_at(hidden, queries))
    key, value = (project(name, hidden) for name in names[1:])
    bias = query_bias(bias, queries)
    scores = precision.einsum("bqhd,bkhd->bhqk", query, key, block.dtype) / jnp.sqrt(size)
    probs = jax.nn.softmax(scores + bias, axis=-1)
    probs = block.dropout(probs, cfg.attention_probs_dropout_prob)
    context = precision.einsum("bhqk,bkhd->bqhd", probs, value, block.dtype)
    return context.reshape(*context.shape[:-2], cfg.hidden_size)


class ResidualOutput(Block):
    """dense → dropout → [adapter] → LayerNorm(· + residual): BertSelfOutput / BertOutput."""

    sublayer: str = "ffn"

    @nn.compact
    def __call__(self, hidden: jax.Array, residual: jax.Array) -> jax.Array:
        out = self.dense(self.config.hidden_size, "dense")(hidden)
        out = self.dropout(out, self.config.hidden_dropout_prob)
        out = self.adapter(out, self.sublayer)
        return self.layer_norm()(out + residual)


class Intermediate(Block):
    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        out = self.dense(self.config.intermediate_size, "dense")(hidden)
        return ACTIVATIONS[self.config.hidden_act](out)
