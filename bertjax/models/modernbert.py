"""Flax ModernBERT encoder and sequence classifier, named like the HF state dict."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bertjax.models import precision
from bertjax.models.layers import (
    ACTIVATION_DTYPE,
    ACTIVATIONS,
    Block,
    ModelOutput,
    PeftConfig,
    block_dropout,
    first_tokens,
    linear,
    same_example,
)

PREFIX = "model"  # where ModernBertFor* keep the encoder in their state dict
ENCODER_ROOTS = ("embeddings.", "layers.", "final_norm.")  # the bare ModernBertModel's keys
HEAD_NAMES = ("head", "classifier")  # ModernBertForSequenceClassification's new layers
GLOBAL, LOCAL = "full_attention", "sliding_attention"  # transformers' layer_types


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """The fields of a ModernBERT `config.json` that define the computation."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    layer_types: tuple[str, ...]  # GLOBAL or LOCAL per layer
    max_position_embeddings: int = 8192
    hidden_activation: str = "gelu"
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    mlp_dropout: float = 0.0
    embedding_dropout: float = 0.0
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    local_attention: int = 128  # the whole window: a token sees local_attention // 2 each side
    classifier_pooling: str = "cls"
    classifier_dropout: float = 0.0
    classifier_bias: bool = False
    classifier_activation: str = "gelu"
    initializer_range: float = 0.02
    pad_token_id: int = 50283
    model_type: str = "modernbert"

    @property
    def family(self) -> str:
        return "modernbert"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def sliding_window(self) -> int:
        """Keys at most this far from the query are seen in local layers."""
        return self.local_attention // 2

    @property
    def head_dropout(self) -> float:
        return self.classifier_dropout


def hf_config_dict(config: ModernBertConfig) -> dict:
    """The `config.json` fields transformers needs to rebuild this model (None fields left
    out: transformers reads a missing key as its default, an explicit null as null)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def _refuse(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"ModernBERT config.json: unsupported {key}={value!r}; {why}")


def _rope_thetas(raw: dict) -> dict:
    """(global, local) theta from transformers' rope_parameters or the hub's older
    global_rope_theta / local_rope_theta keys."""
    if raw.get("rope_scaling"):
        raise _refuse("rope_scaling", raw["rope_scaling"], "only plain (default) rotary")
    rope = raw.get("rope_parameters") or {}
    thetas = {}
    for layer_type, key in ((GLOBAL, "global_rope_theta"), (LOCAL, "local_rope_theta")):
        params = rope.get(layer_type) or {}
        if params.get("rope_type", "default") != "default":
            raise _refuse("rope_parameters", rope, "only rope_type 'default'")
        theta = params.get("rope_theta", raw.get(key))
        if theta is not None:
            thetas[key] = float(theta)
    return thetas


def config_from_hf(hf_config: Any) -> ModernBertConfig:
    """A ModernBertConfig from a transformers `ModernBertConfig`, its `to_dict()` or a hub
    `config.json` dict (older files give global_attn_every_n_layers and *_rope_theta)."""
    raw = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    raw = {k: v for k, v in raw.items() if v is not None}
    if raw.get("model_type") != "modernbert":
        raise _refuse("model_type", raw.get("model_type"), "expected 'modernbert'")
    layers = raw["num_hidden_layers"]
    every = raw.get("global_attn_every_n_layers", 3)
    layer_types = raw.get("layer_types") or [LOCAL if i % every else GLOBAL for i in range(layers)]
    if len(layer_types) != layers or not set(layer_types) <= {GLOBAL, LOCAL}:
        raise _refuse("layer_types", layer_types, f"{layers} of {GLOBAL!r}/{LOCAL!r}")
    for key in ("hidden_activation", "classifier_activation"):
        if key in raw and raw[key] not in ACTIVATIONS:
            raise _refuse(key, raw[key], f"choose from {', '.join(sorted(ACTIVATIONS))}")
    if raw.get("classifier_pooling", "cls") not in ("cls", "mean"):
        raise _refuse("classifier_pooling", raw["classifier_pooling"], "'cls' or 'mean'")
    head_dim = raw["hidden_size"] // raw["num_attention_heads"]
    if raw.get("head_dim", head_dim) != head_dim:
        raise _refuse("head_dim", raw["head_dim"], f"transformers' attention uses {head_dim}")
    names = {f.name for f in dataclasses.fields(ModernBertConfig)}
    fields = {k: v for k, v in raw.items() if k in names}
    fields.update(_rope_thetas(raw), layer_types=tuple(layer_types))
    return ModernBertConfig(**fields)


def rotary_tables(seq_len: int, head_size: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin) [seq, head_size] in float32, as transformers' default rotary embedding."""
    exponents = np.arange(0, head_size, 2, dtype=np.float32) / np.float32(head_size)
    inv_freq = np.float32(1.0) / (np.float32(theta) ** exponents)
    freqs = np.arange(seq_len, dtype=np.float32)[:, None] * inv_freq[None, :]
    angles = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(angles), np.sin(angles)


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [batch, seq, heads, head_size] rotated in float32; cos/sin [batch or 1, seq,
    head_size] (each token's position's)."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    cos = cos.astype(jnp.float32)[:, :, None, :]
    sin = sin.astype(jnp.float32)[:, :, None, :]
    return (x32 * cos + rotated * sin).astype(x.dtype)


class _ModernBlock(Block):
    """layers.Block with a ModernBertConfig: LayerNorms whose bias the config may switch
    off (norm_bias; Linear layers take `use_bias` from attention_bias, mlp_bias, …)."""

    config: ModernBertConfig

    def layer_norm(self, name: str = "norm") -> nn.Module:
        cfg = self.config
        return nn.LayerNorm(cfg.norm_eps, dtype=ACTIVATION_DTYPE, use_bias=cfg.norm_bias, name=name)


class Embeddings(_ModernBlock):
    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        embed = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=ACTIVATION_DTYPE,
            embedding_init=nn.initializers.normal(cfg.initializer_range),
            name="tok_embeddings",
        )
        return self.dropout(self.layer_norm()(embed(input_ids)), cfg.embedding_dropout)


class Attention(_ModernBlock):
    """Fused Wqkv → rotary q, k → softmax attention under `bias` → Wo → dropout."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, cos: jax.Array, sin: jax.Array):
        """hidden [batch, seq, hidden]; bias [batch, 1, 1 or seq, seq] additive;
        cos, sin [batch or 1, seq, head_size]."""
        cfg = self.config
        heads, size = cfg.num_attention_heads, cfg.head_size
        qkv = self.dense(3 * heads * size, "Wqkv", cfg.attention_bias)(hidden)
        qkv = qkv.reshape(*qkv.shape[:-1], 3, heads, size)
        query = _rotate(qkv[..., 0, :, :], cos, sin)
        key = _rotate(qkv[..., 1, :, :], cos, sin)
        scores = precision.einsum("bqhd,bkhd->bhqk", query, key, self.dtype)
        probs = jax.nn.softmax(scores * jnp.float32(size**-0.5) + bias, axis=-1)
        probs = self.dropout(probs, cfg.attention_dropout)
        context = precision.einsum("bhqk,bkhd->bqhd", probs, qkv[..., 2, :, :], self.dtype)
        context = context.reshape(*context.shape[:-2], heads * size)
        out = self.dense(cfg.hidden_size, "Wo", cfg.attention_bias)(context)
        return self.adapter(self.dropout(out, cfg.attention_dropout), "attention")


class MLP(_ModernBlock):
    """GeGLU: Wi → (input, gate) → act(input) * gate → dropout → Wo."""

    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        cfg = self.config
        wide = self.dense(2 * cfg.intermediate_size, "Wi", cfg.mlp_bias)(hidden)
        value, gate = jnp.split(wide, 2, axis=-1)
        gated = self.dropout(ACTIVATIONS[cfg.hidden_activation](value) * gate, cfg.mlp_dropout)
        return self.adapter(self.dense(cfg.hidden_size, "Wo", cfg.mlp_bias)(gated), "ffn")


class Layer(_ModernBlock):
    """Pre-norm block; layer 0 has no attn_norm (the embeddings were just normed)."""

    index: int = 0

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, cos: jax.Array, sin: jax.Array):
        normed = hidden if self.index == 0 else self.layer_norm("attn_norm")(hidden)
        hidden = hidden + self.child(Attention, "attn")(normed, bias, cos, sin)
        return hidden + self.child(MLP, "mlp")(self.layer_norm("mlp_norm")(hidden))


def attention_biases(
    attended: jax.Array, positions: jax.Array, sliding_window: int
) -> dict[str, jax.Array]:
    """{GLOBAL, LOCAL}: additive biases [batch, 1, 1 or seq, seq] from attended [batch, 1,
    1 or seq, seq] bool (which keys each query may see) and positions [batch or 1, seq]
    (index within each example): local layers also need |query - key position| ≤ window."""
    distance = jnp.abs(positions[:, :, None] - positions[:, None, :])
    window = (distance <= sliding_window)[:, None]  # [batch or 1, 1, seq, seq]
    lowest = jnp.finfo(jnp.float32).min
    return {
        GLOBAL: jnp.where(attended, 0.0, lowest),
        LOCAL: jnp.where(attended & window, 0.0, lowest),
    }


class LayerStack(_ModernBlock):
    """Holds layers "0", "1", … so paths read `layers/0/…` as in HF; each layer gets the
    global or the sliding-window mask and rotary tables its layer type asks for."""

    @nn.compact
    def __call__(self, hidden: jax.Array, attended: jax.Array, positions: jax.Array):
        """hidden [batch, seq, hidden]; attended [batch, 1, 1 or seq, seq] bool (the keys
        each query sees); positions [batch or 1, seq] (index within each example)."""
        cfg = self.config
        seq_len = hidden.shape[1]
        biases = attention_biases(attended, positions, cfg.sliding_window)
        thetas = {GLOBAL: cfg.global_rope_theta, LOCAL: cfg.local_rope_theta}
        # cos/sin in float32, the hidden states' dtype (bfloat16 is for matmul operands); each
        # token takes its position's row: a packed example's angles then equal its unpacked
        # ones exactly (row positions would agree only up to float rounding).
        tables = {
            kind: [jnp.asarray(t)[positions] for t in rotary_tables(seq_len, cfg.head_size, theta)]
            for kind, theta in thetas.items()
        }
        for i, kind in enumerate(cfg.layer_types):
            hidden = self.child(Layer, str(i), index=i)(hidden, biases[kind], *tables[kind])
        return hidden


class ModernBertModel(nn.Module):
    """ModernBertModel: embeddings → layers → final_norm. token_type_ids are ignored."""

    config: ModernBertConfig
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
    ) -> ModelOutput:
        """input_ids, attention_mask: [batch, seq] ints. Packed rows (bertjax/data/packing.py)
        also give segment_ids [rows, seq] (0 padding, 1.. the example) and position_ids [rows,
        seq] (index within the example): attention, rotary positions and the local window
        then stay within each example."""
        del token_type_ids  # ModernBERT has no segment embeddings
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if segment_ids is None:  # one example per row: every query sees the row's tokens
            attended = attention_mask[:, None, None, :] > 0
            position_ids = jnp.arange(input_ids.shape[-1])[None]
        else:
            attended = same_example(segment_ids)
        fields = dict(
            config=self.config, peft=self.peft, dtype=self.dtype, deterministic=deterministic
        )
        hidden = Embeddings(**fields, name="embeddings")(input_ids)
        hidden = LayerStack(**fields, name="layers")(hidden, attended, position_ids)
        cfg = self.config
        final_norm = nn.LayerNorm(
            cfg.norm_eps, dtype=ACTIVATION_DTYPE, use_bias=cfg.norm_bias, name="final_norm"
        )
        return ModelOutput(last_hidden_state=final_norm(hidden))


class PredictionHead(_ModernBlock):
    """dense → classifier_activation → norm."""

    @nn.compact
    def __call__(self, pooled: jax.Array) -> jax.Array:
        cfg = self.config
        dense = self.dense(cfg.hidden_size, "dense", cfg.classifier_bias)
        return self.layer_norm()(ACTIVATIONS[cfg.classifier_activation](dense(pooled)))


def pool(hidden: jax.Array, mask: jax.Array, how: str) -> jax.Array:
    """[batch, seq, hidden] -> [batch, hidden]: the first token or the mean over tokens."""
    if how == "cls":
        return hidden[:, 0]
    weights = mask.astype(jnp.float32)[..., None]
    mean = (hidden.astype(jnp.float32) * weights).sum(axis=1) / weights.sum(axis=1)
    return mean.astype(hidden.dtype)


def pool_packed(
    hidden: jax.Array, segment_ids: jax.Array, cls_index: jax.Array, how: str
) -> jax.Array:
    """Packed rows: hidden [rows, seq, hidden] -> [rows, E, hidden], each example's first
    token (cls_index [rows, E]) or mean over its tokens (segment_ids [rows, seq] = slot + 1;
    an empty slot's mean is 0, not NaN, so its zero loss weight keeps gradients finite)."""
    if how == "cls":
        return first_tokens(hidden, cls_index)
    rows, per_row = cls_index.shape
    # Token -> (row, slot) as one id; padding (segment 0) gets a slot of its own, dropped.
    ids = (segment_ids + jnp.arange(rows)[:, None] * (per_row + 1)).reshape(-1)
    total = rows * (per_row + 1)
    flat = hidden.astype(jnp.float32).reshape(-1, hidden.shape[-1])
    sums = jax.ops.segment_sum(flat, ids, total).reshape(rows, per_row + 1, -1)
    counts = jax.ops.segment_sum(jnp.ones_like(ids, jnp.float32), ids, total)
    counts = counts.reshape(rows, per_row + 1, 1)
    mean = sums[:, 1:] / jnp.maximum(counts[:, 1:], 1.0)
    return mean.astype(hidden.dtype)


class ModernBertForSequenceClassification(nn.Module):
    """ModernBertForSequenceClassification: `model` encoder, pooling, `head`, dropout,
    `classifier`."""

    config: ModernBertConfig
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
    ) -> ModelOutput:
        """input_ids, attention_mask: [batch, seq] ints; logits [batch, num_labels], or
        [rows, E, num_labels] for packed rows (see ModernBertModel)."""
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        encoder = ModernBertModel(cfg, self.peft, self.dtype, name=PREFIX)
        out = encoder(
            input_ids, attention_mask, token_type_ids, deterministic, segment_ids, position_ids
        )
        hidden, how = out.last_hidden_state, cfg.classifier_pooling
        if segment_ids is None:
            pooled = pool(hidden, attention_mask, how)
        else:
            pooled = pool_packed(hidden, segment_ids, cls_index, how)
        head = PredictionHead(cfg, self.peft, self.dtype, deterministic, name="head")
        pooled = block_dropout(self, head(pooled), cfg.classifier_dropout, deterministic)
        classifier = linear(
            self.num_labels,
            self.dtype,
            kernel_init=nn.initializers.normal(cfg.initializer_range),
            name="classifier",
        )
        return out.replace(pooler_output=pooled, logits=classifier(pooled).astype(jnp.float32))
