"""Flax DeBERTa-v2/v3 encoder and sequence classifier, named like the HF state dict."""

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
    Intermediate,
    ModelOutput,
    PeftConfig,
    ResidualOutput,
    block_dropout,
    first_tokens,
    linear,
    same_example,
)

PREFIX = "deberta"  # where DebertaV2For* keep the encoder in their state dict
ENCODER_ROOTS = ("embeddings.", "encoder.")  # the bare DebertaV2Model's top-level keys
HEAD_NAMES = ("pooler", "classifier")  # DebertaV2ForSequenceClassification's new layers
_POS_ATT_TYPES = ("c2p", "p2c")


@dataclasses.dataclass(frozen=True)
class DebertaConfig:
    """The fields of a DeBERTa-v2/v3 `config.json` that define the computation."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-7
    initializer_range: float = 0.02
    pad_token_id: int = 0
    embedding_size: int | None = None
    position_biased_input: bool = True
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    pos_att_type: tuple[str, ...] = ()
    share_att_key: bool = False
    norm_rel_ebd: str = "none"  # "none" or "layer_norm"
    conv_kernel_size: int = 0
    conv_act: str = "tanh"
    conv_groups: int = 1
    pooler_hidden_act: str = "gelu"
    pooler_dropout: float = 0.0
    cls_dropout: float | None = None
    model_type: str = "deberta-v2"

    @property
    def family(self) -> str:
        return "deberta-v2"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_relative(self) -> int:
        """The clip range of relative distances (max_position_embeddings when unset)."""
        if self.max_relative_positions < 1:
            return self.max_position_embeddings
        return self.max_relative_positions

    @property
    def attention_span(self) -> int:
        """Half the rows of `rel_embeddings` (transformers' att_span / pos_ebd_size)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative

    @property
    def head_dropout(self) -> float:
        """The dropout before `classifier` (cls_dropout, else hidden_dropout_prob)."""
        return self.hidden_dropout_prob if self.cls_dropout is None else self.cls_dropout


def hf_config_dict(config: DebertaConfig) -> dict:
    """The `config.json` fields transformers needs to rebuild this model (None fields left
    out: transformers reads a missing key as its default, an explicit null as null)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if v is not None}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}


def _refuse(key: str, value: Any, why: str) -> ValueError:
    return ValueError(f"DeBERTa config.json: unsupported {key}={value!r}; {why}")


def config_from_hf(hf_config: Any) -> DebertaConfig:
    """A DebertaConfig from a `DebertaV2Config`, its `to_dict()` or a `config.json` dict."""
    raw = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    raw = {k: v for k, v in raw.items() if v is not None}
    if raw.get("model_type") != "deberta-v2":
        raise _refuse("model_type", raw.get("model_type"), "only 'deberta-v2' (v2 and v3)")
    pos_att_type = raw.get("pos_att_type", ())
    if isinstance(pos_att_type, str):
        pos_att_type = [p.strip() for p in pos_att_type.lower().split("|")]
    if unknown := [p for p in pos_att_type if p not in _POS_ATT_TYPES]:
        raise _refuse("pos_att_type", unknown, "only 'c2p' and 'p2c'")
    norm = [p.strip() for p in str(raw.get("norm_rel_ebd", "none")).lower().split("|")]
    if not set(norm) <= {"none", "layer_norm"}:
        raise _refuse("norm_rel_ebd", raw["norm_rel_ebd"], "only 'none' or 'layer_norm'")
    kernel = raw.get("conv_kernel_size", 0)
    if kernel > 0 and kernel % 2 == 0:
        raise _refuse("conv_kernel_size", kernel, "transformers pads odd kernels only")
    for key in ("hidden_act", "conv_act", "pooler_hidden_act"):
        if key in raw and raw[key] not in ACTIVATIONS:
            raise _refuse(key, raw[key], f"choose from {', '.join(sorted(ACTIVATIONS))}")
    hidden, heads = raw["hidden_size"], raw["num_attention_heads"]
    for key in ("pooler_hidden_size", "attention_head_size"):
        expected = hidden if key == "pooler_hidden_size" else hidden // heads
        if raw.get(key, expected) != expected:
            raise _refuse(key, raw[key], f"transformers' layers need {expected}")
    names = {f.name for f in dataclasses.fields(DebertaConfig)}
    fields = {k: v for k, v in raw.items() if k in names}
    fields.update(
        pos_att_type=tuple(pos_att_type),
        norm_rel_ebd="layer_norm" if "layer_norm" in norm else "none",
    )
    if fields.get("embedding_size") == hidden:
        fields["embedding_size"] = None
    return DebertaConfig(**fields)


def log_bucket_position(relative: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """transformers' make_log_bucket_position in float32: distances under bucket_size/2 kept,
    longer ones log-spaced up to max_position."""
    sign = np.sign(relative)
    mid = bucket_size // 2
    inner = (relative < mid) & (relative > -mid)
    abs_pos = np.where(inner, mid - 1, np.abs(relative)).astype(np.float32)
    log_ratio = np.log(abs_pos / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(log_ratio * np.float32(mid - 1)) + np.float32(mid)
    return np.where(abs_pos <= mid, relative, log_pos * sign).astype(np.int32)


def bucket_table(seq_len: int, config: DebertaConfig) -> np.ndarray:
    """[2 * seq - 1] int32: the relative position of each distance -(seq - 1) … seq - 1,
    log-bucketed when configured (computed once in numpy, as transformers does in float32)."""
    relative = np.arange(-(seq_len - 1), seq_len)
    if config.position_buckets > 0 and config.max_relative > 0:
        return log_bucket_position(relative, config.position_buckets, config.max_relative)
    return relative.astype(np.int32)


def relative_positions(positions: jax.Array, config: DebertaConfig) -> jax.Array:
    """positions [batch or 1, seq] (index within each example) -> [batch or 1, seq, seq]
    int32: query position - key position, log-bucketed when configured. Pairs across
    packed examples get a distance too, masked out of attention (layers.same_example)."""
    seq_len = positions.shape[-1]
    table = jnp.asarray(bucket_table(seq_len, config))
    return table[positions[:, :, None] - positions[:, None, :] + seq_len - 1]


class _DebertaBlock(Block):
    """layers.Block (dense/layer_norm/dropout/adapter helpers) holding a DebertaConfig;
    model.py's Intermediate and ResidualOutput read only fields both configs share."""

    config: DebertaConfig


class Embeddings(_DebertaBlock):
    @nn.compact
    def __call__(
        self, input_ids: jax.Array, token_type_ids: jax.Array, mask: jax.Array, positions
    ) -> jax.Array:
        """[batch, seq] ints; positions [batch or 1, seq] (index within each example)."""
        cfg = self.config
        width = cfg.embedding_size or cfg.hidden_size
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(num: int, name: str) -> nn.Embed:
            return nn.Embed(num, width, dtype=ACTIVATION_DTYPE, embedding_init=init, name=name)

        hidden = embed(cfg.vocab_size, "word_embeddings")(input_ids)
        if cfg.position_biased_input:
            seq_len = input_ids.shape[-1]
            if seq_len > cfg.max_position_embeddings:
                raise ValueError(
                    f"input length {seq_len} exceeds this model's limit of "
                    f"{cfg.max_position_embeddings} tokens (max_position_embeddings); "
                    "truncate the input (data.max_length)"
                )
            hidden = hidden + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
        if cfg.type_vocab_size > 0:
            hidden = hidden + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        if width != cfg.hidden_size:
            project = linear(cfg.hidden_size, self.dtype, use_bias=False, name="embed_proj")
            hidden = project(hidden)
        hidden = self.layer_norm()(hidden) * mask[..., None].astype(ACTIVATION_DTYPE)
        return self.dropout(hidden, cfg.hidden_dropout_prob)


def _gather_last(scores: jax.Array, index: jax.Array) -> jax.Array:
    """scores [batch, heads, n, span], index [batch or 1, n, m] -> [batch, heads, n, m]."""
    index = jnp.broadcast_to(index[:, None], (*scores.shape[:2], *index.shape[1:]))
    return jnp.take_along_axis(scores, index, axis=-1)


class DisentangledSelfAttention(_DebertaBlock):
    """Content-to-content plus content-to-position (c2p) and position-to-content (p2c)
    scores, as transformers' DisentangledSelfAttention."""

    @nn.compact
    def __call__(
        self,
        hidden: jax.Array,
        pair_mask: jax.Array,
        relative_pos: jax.Array | None,
        rel_embeddings: jax.Array | None,
    ) -> jax.Array:
        """hidden [batch, seq, hidden]; pair_mask [batch, 1, seq, seq] bool;
        relative_pos [batch or 1, seq, seq]; rel_embeddings [2 * span, hidden]."""
        cfg = self.config
        heads, size = cfg.num_attention_heads, cfg.head_size
        kinds = cfg.pos_att_type

        def split(x: jax.Array) -> jax.Array:  # [..., heads, head_size]
            return x.reshape(*x.shape[:-1], heads, size)

        query_proj = self.dense(heads * size, "query_proj")
        key_proj = self.dense(heads * size, "key_proj")
        query, key = split(query_proj(hidden)), split(key_proj(hidden))
        value = split(self.dense(heads * size, "value_proj")(hidden))

        scale = jnp.sqrt(jnp.float32(size * (1 + len(kinds))))
        scores = precision.einsum("bqhd,bkhd->bhqk", query, key / scale, self.dtype)
        if cfg.relative_attention:
            span = cfg.attention_span
            rel = self.dropout(rel_embeddings, cfg.hidden_dropout_prob)[: 2 * span]

            def position_proj(name: str, shared: nn.Module) -> nn.Module:
                return shared if cfg.share_att_key else self.dense(heads * size, name)

            relative = 0.0
            if "c2p" in kinds:
                # [2 * span, heads, head_size]
                pos_key = split(position_proj("pos_key_proj", key_proj)(rel))
                c2p = precision.einsum("bqhd,phd->bhqp", query, pos_key, self.dtype)
                index = jnp.clip(relative_pos + span, 0, 2 * span - 1)
                relative = relative + _gather_last(c2p, index) / scale
            if "p2c" in kinds:
                pos_query = split(position_proj("pos_query_proj", query_proj)(rel))
                p2c = precision.einsum("bkhd,phd->bhkp", key, pos_query, self.dtype)
                index = jnp.clip(-relative_pos + span, 0, 2 * span - 1)
                relative = relative + jnp.swapaxes(_gather_last(p2c, index), -1, -2) / scale
            scores = scores + relative
        scores = jnp.where(pair_mask, scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1)
        probs = self.dropout(probs, cfg.attention_probs_dropout_prob)
        context = precision.einsum("bhqk,bkhd->bqhd", probs, value, self.dtype)
        return context.reshape(*context.shape[:-2], heads * size)


class Attention(_DebertaBlock):
    @nn.compact
    def __call__(self, hidden, pair_mask, relative_pos, rel_embeddings) -> jax.Array:
        attention = self.child(DisentangledSelfAttention, "self")
        context = attention(hidden, pair_mask, relative_pos, rel_embeddings)
        return self.child(ResidualOutput, "output", sublayer="attention")(context, hidden)


class Layer(_DebertaBlock):
    @nn.compact
    def __call__(self, hidden, pair_mask, relative_pos, rel_embeddings) -> jax.Array:
        attended = self.child(Attention, "attention")(
            hidden, pair_mask, relative_pos, rel_embeddings
        )
        expanded = self.child(Intermediate, "intermediate")(attended)
        return self.child(ResidualOutput, "output", sublayer="ffn")(expanded, attended)


class LayerStack(_DebertaBlock):
    """Holds layers "0", "1", …; called once per layer so the encoder can run its conv
    between layer 0 and layer 1 while paths stay `encoder/layer/0/…` as in HF."""

    @nn.compact
    def __call__(self, index: int, hidden, pair_mask, relative_pos, rel_embeddings):
        return self.child(Layer, str(index))(hidden, pair_mask, relative_pos, rel_embeddings)


def neighbours(x: jax.Array, segment_ids: jax.Array, width: int) -> jax.Array:
    """x [batch, seq, hidden] -> [batch, seq, width, hidden]: the `width` tokens centred on
    each token, zero past the row's ends and in other examples (segment_ids [batch, seq]), so
    a convolution over them sees each packed example as if it were alone, zero-padded."""
    half, seq_len = (width - 1) // 2, x.shape[1]
    padded = jnp.pad(x, ((0, 0), (half, half), (0, 0)))
    segments = jnp.pad(segment_ids, ((0, 0), (half, half)), constant_values=-1)
    taps = [
        jnp.where(
            (segments[:, j : j + seq_len] == segment_ids)[..., None], padded[:, j : j + seq_len], 0
        )
        for j in range(width)
    ]
    return jnp.stack(taps, axis=2)


class ConvLayer(_DebertaBlock):
    """DeBERTa-v2's convolution beside layer 0: LayerNorm(layer-0 output + act(conv(input)))."""

    @nn.compact
    def __call__(
        self, embedded: jax.Array, residual: jax.Array, segment_ids: jax.Array
    ) -> jax.Array:
        cfg = self.config
        width = cfg.conv_kernel_size
        # One window per token (padding "VALID"): transformers' zero-padded conv, kept
        # within each example of a packed row.
        conv = nn.Conv(
            cfg.hidden_size,
            (width,),
            padding="VALID",
            feature_group_count=cfg.conv_groups,
            dtype=ACTIVATION_DTYPE,
            name="conv",
        )
        keep = segment_ids[..., None] > 0
        out = jnp.where(keep, conv(neighbours(embedded, segment_ids, width))[:, :, 0], 0)
        out = ACTIVATIONS[cfg.conv_act](self.dropout(out, cfg.hidden_dropout_prob))
        return self.layer_norm()(residual + out) * keep.astype(ACTIVATION_DTYPE)


class Encoder(_DebertaBlock):
    @nn.compact
    def __call__(
        self, embedded: jax.Array, segment_ids: jax.Array, positions: jax.Array
    ) -> jax.Array:
        """embedded [batch, seq, hidden]; segment_ids [batch, seq] (0 padding, 1.. the
        example); positions [batch or 1, seq] (index within each example)."""
        cfg = self.config
        # A pair (q, k) is scored only within one example; pad rows softmax uniformly.
        pair_mask = same_example(segment_ids)
        relative_pos = rel_embeddings = None
        if cfg.relative_attention:
            relative_pos = relative_positions(positions, cfg)
            rows = 2 * cfg.attention_span
            table = nn.Embed(
                rows,
                cfg.hidden_size,
                dtype=ACTIVATION_DTYPE,
                embedding_init=nn.initializers.normal(cfg.initializer_range),
                name="rel_embeddings",
            )
            rel_embeddings = table(jnp.arange(rows))
            if cfg.norm_rel_ebd == "layer_norm":
                rel_embeddings = self.layer_norm()(rel_embeddings)
        layers = self.child(LayerStack, "layer")
        hidden = embedded
        for i in range(cfg.num_hidden_layers):
            hidden = layers(i, hidden, pair_mask, relative_pos, rel_embeddings)
            if i == 0 and cfg.conv_kernel_size > 0:
                hidden = self.child(ConvLayer, "conv")(embedded, hidden, segment_ids)
        return hidden


def _defaults(input_ids, attention_mask, token_type_ids):
    if attention_mask is None:
        attention_mask = jnp.ones_like(input_ids)
    if token_type_ids is None:
        token_type_ids = jnp.zeros_like(input_ids)
    return attention_mask, token_type_ids


class DebertaModel(nn.Module):
    """DebertaV2Model: embeddings → encoder (no pooler)."""

    config: DebertaConfig
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
        """input_ids, attention_mask, token_type_ids: [batch, seq] ints. Packed rows
        (bertjax/data/packing.py) also give segment_ids [rows, seq] (0 padding, 1.. the
        example) and position_ids [rows, seq] (index within the example): attention, relative
        and absolute positions and the conv then stay within each example."""
        attention_mask, token_type_ids = _defaults(input_ids, attention_mask, token_type_ids)
        if segment_ids is None:  # one example per row, positions counted from its start
            segment_ids = (attention_mask > 0).astype(jnp.int32)
            position_ids = jnp.arange(input_ids.shape[-1])[None]
        fields = dict(
            config=self.config, peft=self.peft, dtype=self.dtype, deterministic=deterministic
        )
        embedded = Embeddings(**fields, name="embeddings")(
            input_ids, token_type_ids, segment_ids > 0, position_ids
        )
        hidden = Encoder(**fields, name="encoder")(embedded, segment_ids, position_ids)
        return ModelOutput(last_hidden_state=hidden)


class ContextPooler(_DebertaBlock):
    """dropout → dense → pooler_hidden_act on the first token (each example's, cls_index
    [rows, E], in packed rows: layers.first_tokens)."""

    @nn.compact
    def __call__(self, hidden: jax.Array, cls_index: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        first = self.dropout(first_tokens(hidden, cls_index), cfg.pooler_dropout)
        return ACTIVATIONS[cfg.pooler_hidden_act](self.dense(cfg.hidden_size, "dense")(first))


class DebertaForSequenceClassification(nn.Module):
    """DebertaV2ForSequenceClassification: `deberta` encoder, `pooler` (ContextPooler),
    dropout, `classifier`."""

    config: DebertaConfig
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
        """input_ids, attention_mask, token_type_ids: [batch, seq] ints; logits [batch,
        num_labels], or [rows, E, num_labels] for packed rows (see DebertaModel)."""
        cfg = self.config
        encoder = DebertaModel(cfg, self.peft, self.dtype, name=PREFIX)
        out = encoder(
            input_ids, attention_mask, token_type_ids, deterministic, segment_ids, position_ids
        )
        pooler = ContextPooler(
            cfg, self.peft, self.dtype, deterministic=deterministic, name="pooler"
        )
        pooled = pooler(out.last_hidden_state, cls_index)
        classifier = linear(
            self.num_labels,
            self.dtype,
            kernel_init=nn.initializers.normal(cfg.initializer_range),
            name="classifier",
        )
        logits = classifier(block_dropout(self, pooled, cfg.head_dropout, deterministic))
        return out.replace(pooler_output=pooled, logits=logits.astype(jnp.float32))
