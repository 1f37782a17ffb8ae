"""Flax BERT/RoBERTa encoder and classification heads, named like the HF state dict."""

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from bertjax.config import ModelConfig
from bertjax.dropout import dropout
from peft.adapter import ACTIVATIONS, Adapter, AdapterConfig
from peft.inject import Peft, PeftMethod

# Adapters live inside the blocks; LoRA, DoRA and IA3 are injected from outside (peft.Peft).
PeftConfig = PeftMethod | AdapterConfig | None
# config.train.remat's named policies: what each layer's backward pass keeps (True: nothing).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


@flax.struct.dataclass
class ModelOutput:
    """last_hidden_state [batch, seq, hidden]; pooler_output [batch, hidden] (BERT encoder);
    logits [batch, num_labels] (classifiers)."""

    last_hidden_state: jax.Array
    pooler_output: jax.Array | None = None
    logits: jax.Array | None = None


def _dropout(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Hashed dropout under `module`'s "dropout" rng stream; draws no key when it is off."""
    if deterministic or rate == 0:
        return x
    return dropout(x, rate, module.make_rng("dropout"))


class _Block(nn.Module):
    """Shared fields, the Dense factory and the adapter placement of every block."""

    config: ModelConfig
    peft: AdapterConfig | None = None
    dtype: jnp.dtype = jnp.float32
    deterministic: bool = True
    remat: bool | str = False  # activation checkpointing per encoder layer (REMAT_POLICIES)

    def child(self, block: type["_Block"], name: str, **extra) -> "_Block":
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
        return nn.Dense(
            features,
            use_bias=use_bias,
            dtype=self.dtype,
            kernel_init=nn.initializers.normal(self.config.initializer_range),
            name=name,
        )

    def layer_norm(self, name: str = "LayerNorm") -> nn.Module:
        return nn.LayerNorm(self.config.layer_norm_eps, dtype=self.dtype, name=name)

    def dropout(self, x: jax.Array, rate: float) -> jax.Array:
        return _dropout(self, x, rate, self.deterministic)

    def adapter(self, x: jax.Array, sublayer: str) -> jax.Array:
        if isinstance(self.peft, AdapterConfig) and self.peft.placed_after(sublayer):
            return Adapter(self.peft, dtype=self.dtype, name="adapter")(x)
        return x


def position_ids(input_ids: jax.Array, config: ModelConfig) -> jax.Array:
    """[batch, seq] positions: 0.. for BERT; RoBERTa counts non-pad tokens from pad+1
    and gives pads pad_token_id, as transformers' create_position_ids_from_input_ids."""
    seq_len = input_ids.shape[-1]
    if config.family != "roberta":
        return jnp.broadcast_to(jnp.arange(seq_len), input_ids.shape)
    not_pad = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(not_pad, axis=-1) * not_pad + config.pad_token_id


def packed_positions(
    position_ids: jax.Array, segment_ids: jax.Array, config: ModelConfig
) -> jax.Array:
    """Packed rows' [rows, len] positions within each example (0, 1, …) -> the family's
    position ids: as is for BERT; RoBERTa's pad+1+index, and pad_token_id on padding."""
    if config.family != "roberta":
        return position_ids
    pad = config.pad_token_id
    return jnp.where(segment_ids > 0, position_ids + pad + 1, pad)


def check_length(input_ids: jax.Array, limit: int) -> None:
    """One-line error for inputs longer than the position embeddings reach."""
    if input_ids.shape[-1] > limit:
        raise ValueError(
            f"input length {input_ids.shape[-1]} exceeds this model's limit of {limit} tokens "
            "(max_position_embeddings); truncate the input (data.max_length)"
        )


class Embeddings(_Block):
    @nn.compact
    def __call__(
        self, input_ids: jax.Array, token_type_ids: jax.Array, positions: jax.Array | None = None
    ) -> jax.Array:
        """positions: [batch, seq] position ids; None: from input_ids (`position_ids`)."""
        cfg = self.config
        if positions is None:
            positions = position_ids(input_ids, cfg)
        check_length(input_ids, cfg.max_position_embeddings - cfg.position_offset)
        init = nn.initializers.normal(cfg.initializer_range)

        def embed(num: int, name: str) -> nn.Embed:
            width = cfg.embedding_width
            return nn.Embed(num, width, dtype=self.dtype, embedding_init=init, name=name)

        hidden = (
            embed(cfg.vocab_size, "word_embeddings")(input_ids)
            + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
            + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        )
        return self.dropout(self.layer_norm()(hidden), cfg.hidden_dropout_prob)


def attention_bias(attention_mask: jax.Array) -> jax.Array:
    """[batch, 1, 1, seq]: 0 where attended, the most negative float where masked."""
    return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)


def segment_bias(segment_ids: jax.Array) -> jax.Array:
    """Packed rows: [rows, 1, seq, seq], 0 where query and key belong to one example
    (segment_ids equal and > 0), the most negative float elsewhere (block-diagonal)."""
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    attended = same & (segment_ids[:, None, :] > 0)
    return jnp.where(attended[:, None], 0.0, jnp.finfo(jnp.float32).min)


def first_tokens(hidden: jax.Array, cls_index: jax.Array | None) -> jax.Array:
    """hidden [rows, seq, width] -> the examples' first tokens: [rows, width] (token 0) when
    cls_index is None, else [rows, E, width] at cls_index [rows, E] (packed rows)."""
    if cls_index is None:
        return hidden[:, 0]
    return jnp.take_along_axis(hidden, cls_index[..., None], axis=1)


def multi_head_attention(block: _Block, hidden: jax.Array, bias: jax.Array, names) -> jax.Array:
    """Softmax attention over `block`'s query/key/value Dense layers named `names`:
    hidden [batch, seq, hidden] -> context [batch, seq, hidden] (before the output Dense)."""
    cfg = block.config
    heads, size = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads

    def project(name: str) -> jax.Array:  # [batch, seq, heads, head_size]
        out = block.dense(cfg.hidden_size, name)(hidden)
        return out.reshape(*out.shape[:-1], heads, size)

    query, key, value = (project(name) for name in names)
    scores = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(size).astype(block.dtype)
    probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(block.dtype)
    probs = block.dropout(probs, cfg.attention_probs_dropout_prob)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, value)
    return context.reshape(*context.shape[:-2], cfg.hidden_size)


class SelfAttention(_Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        return multi_head_attention(self, hidden, bias, ("query", "key", "value"))


class ResidualOutput(_Block):
    """dense → dropout → [adapter] → LayerNorm(· + residual): BertSelfOutput / BertOutput."""

    sublayer: str = "ffn"

    @nn.compact
    def __call__(self, hidden: jax.Array, residual: jax.Array) -> jax.Array:
        out = self.dense(self.config.hidden_size, "dense")(hidden)
        out = self.dropout(out, self.config.hidden_dropout_prob)
        out = self.adapter(out, self.sublayer)
        return self.layer_norm()(out + residual)


class Attention(_Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        context = self.child(SelfAttention, "self")(hidden, bias)
        return self.child(ResidualOutput, "output", sublayer="attention")(context, hidden)


class Intermediate(_Block):
    @nn.compact
    def __call__(self, hidden: jax.Array) -> jax.Array:
        out = self.dense(self.config.intermediate_size, "dense")(hidden)
        return ACTIVATIONS[self.config.hidden_act](out)


class Layer(_Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        attended = self.child(Attention, "attention")(hidden, bias)
        expanded = self.child(Intermediate, "intermediate")(attended)
        return self.child(ResidualOutput, "output", sublayer="ffn")(expanded, attended)


class LayerStack(_Block):
    """Holds layers named "0", "1", … so paths read `encoder/layer/0/…` as in HF."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        named = isinstance(self.remat, str)
        policy = getattr(jax.checkpoint_policies, self.remat) if named else None  # None: nothing
        layer = nn.remat(Layer, policy=policy) if self.remat else Layer
        for i in range(self.config.num_hidden_layers):
            hidden = self.child(layer, str(i))(hidden, bias)
        return hidden


class Encoder(_Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array) -> jax.Array:
        return self.child(LayerStack, "layer")(hidden, bias)


class Pooler(_Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, cls_index: jax.Array | None = None) -> jax.Array:
        first = first_tokens(hidden, cls_index)
        return jnp.tanh(self.dense(self.config.hidden_size, "dense")(first))


class EncoderModel(nn.Module):
    """BertModel / RobertaModel / ElectraModel: embeddings (→ ELECTRA's embeddings_project
    when they are narrower than hidden_size) → encoder (→ pooler for BERT)."""

    config: ModelConfig
    peft: AdapterConfig | None = None
    dtype: jnp.dtype = jnp.float32
    add_pooler: bool = True
    remat: bool | str = False

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
        """input_ids, attention_mask, token_type_ids: [batch, seq] ints. Packed rows (see
        bertjax/packing.py) also give segment_ids [rows, seq] (0 padding, 1.. the example),
        position_ids [rows, seq] (index within the example) and cls_index [rows, E]; then
        attention stays within each example and pooler_output is [rows, E, hidden]."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        fields = dict(
            config=self.config,
            peft=self.peft,
            dtype=self.dtype,
            deterministic=deterministic,
            remat=self.remat,
        )
        cfg = self.config
        positions, bias = None, None
        if segment_ids is not None:
            positions = packed_positions(position_ids, segment_ids, cfg)
            bias = segment_bias(segment_ids)
        else:
            bias = attention_bias(attention_mask)
        hidden = Embeddings(**fields, name="embeddings")(input_ids, token_type_ids, positions)
        if cfg.embedding_width != cfg.hidden_size:
            # A plain Dense: LoRA reaches the Dense layers of _Block modules only, and HF
            # peft's ELECTRA targets (query, value) live there.
            project = nn.Dense(
                cfg.hidden_size,
                dtype=self.dtype,
                kernel_init=nn.initializers.normal(cfg.initializer_range),
                name="embeddings_project",
            )
            hidden = project(hidden)
        hidden = Encoder(**fields, name="encoder")(hidden, bias)
        pooled = Pooler(**fields, name="pooler")(hidden, cls_index) if self.add_pooler else None
        return ModelOutput(last_hidden_state=hidden, pooler_output=pooled)


class RobertaHead(_Block):
    """RobertaClassificationHead: dropout → dense → tanh → dropout → out_proj on <s>;
    ElectraClassificationHead with activation "gelu" (exact erf GELU)."""

    num_labels: int = 2
    activation: str = "tanh"

    @nn.compact
    def __call__(self, hidden: jax.Array, cls_index: jax.Array | None = None) -> jax.Array:
        x = self.dropout(first_tokens(hidden, cls_index), self.config.head_dropout)
        x = ACTIVATIONS[self.activation](self.dense(self.config.hidden_size, "dense")(x))
        x = self.dropout(x, self.config.head_dropout)
        return self.dense(self.num_labels, "out_proj")(x)


class SequenceClassifier(nn.Module):
    """BertForSequenceClassification / RobertaForSequenceClassification.

    Parameters: the encoder under `bert`/`roberta`, the head under `classifier`
    (`{kernel,bias}` for BERT, `{dense,out_proj}` for RoBERTa). RoBERTa has no pooler.
    """

    config: ModelConfig
    num_labels: int = 2
    peft: AdapterConfig | None = None
    dtype: jnp.dtype = jnp.float32
    remat: bool | str = False

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
        num_labels], or [rows, E, num_labels] for packed rows (see EncoderModel)."""
        cfg = self.config
        is_bert = cfg.family == "bert"
        encoder = EncoderModel(
            cfg, self.peft, self.dtype, add_pooler=is_bert, remat=self.remat, name=cfg.family
        )
        packed = dict(segment_ids=segment_ids, position_ids=position_ids, cls_index=cls_index)
        out = encoder(input_ids, attention_mask, token_type_ids, deterministic, **packed)
        if is_bert:
            pooled = _dropout(self, out.pooler_output, cfg.head_dropout, deterministic)
            classifier = nn.Dense(
                self.num_labels,
                dtype=self.dtype,
                kernel_init=nn.initializers.normal(cfg.initializer_range),
                name="classifier",
            )
            logits = classifier(pooled)
        else:
            head = RobertaHead(
                cfg,
                dtype=self.dtype,
                deterministic=deterministic,
                num_labels=self.num_labels,
                name="classifier",
            )
            logits = head(out.last_hidden_state, cls_index)
        return out.replace(logits=logits.astype(jnp.float32))


def build(
    config,
    num_labels: int | None = None,
    peft: PeftConfig = None,
    dtype: jnp.dtype = jnp.float32,
    remat: bool | str = False,
) -> nn.Module:
    """The bare encoder (num_labels=None) or the sequence classifier for `config`, built
    by its family's module (bertjax/families.py), with adapters inside; LoRA, DoRA and IA3
    wrap it in `peft.Peft` (same call, parameters added by module path). remat (BERT-layout
    layers only): see build_bert."""
    from bertjax.families import family_of  # the families' modules import this one

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


def build_bert(
    config: ModelConfig,
    num_labels: int | None = None,
    peft: PeftConfig = None,
    dtype: jnp.dtype = jnp.float32,
    remat: bool | str = False,
) -> nn.Module:
    """BERT/RoBERTa: the bare encoder (num_labels=None) or the sequence classifier; remat:
    recompute each encoder layer's activations in the backward pass (True) or keep what a
    named jax.checkpoint_policies policy saves (REMAT_POLICIES)."""
    if num_labels is None:
        return EncoderModel(config, peft, dtype, add_pooler=config.family == "bert", remat=remat)
    return SequenceClassifier(config, num_labels, peft, dtype, remat)
