"""Flax BERT/RoBERTa encoder and classification heads, named like the HF state dict."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from bertjax.models.config import ModelConfig
from bertjax.models.layers import (
    ACTIVATION_DTYPE,
    ACTIVATIONS,
    Block,
    Intermediate,
    ModelOutput,
    ResidualOutput,
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
from peft.adapter import AdapterConfig


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


class Embeddings(Block):
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
            return nn.Embed(num, width, dtype=ACTIVATION_DTYPE, embedding_init=init, name=name)

        hidden = (
            embed(cfg.vocab_size, "word_embeddings")(input_ids)
            + embed(cfg.max_position_embeddings, "position_embeddings")(positions)
            + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids)
        )
        return self.dropout(self.layer_norm()(hidden), cfg.hidden_dropout_prob)


class SelfAttention(Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        return multi_head_attention(self, hidden, bias, ("query", "key", "value"), queries)


class Attention(Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        context = self.child(SelfAttention, "self")(hidden, bias, queries)
        residual = tokens_at(hidden, queries)
        return self.child(ResidualOutput, "output", sublayer="attention")(context, residual)


class Layer(Block):
    """One encoder layer; with `queries` [batch, E] it computes the outputs of those
    positions only ([batch, E, hidden]), attending over all."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        attended = self.child(Attention, "attention")(hidden, bias, queries)
        expanded = self.child(Intermediate, "intermediate")(attended)
        return self.child(ResidualOutput, "output", sublayer="ffn")(expanded, attended)


class LayerStack(Block):
    """Holds layers named "0", "1", … so paths read `encoder/layer/0/…` as in HF. `queries`
    [batch, E]: the last layer computes only those positions."""

    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        named = isinstance(self.remat, str)
        policy = getattr(jax.checkpoint_policies, self.remat) if named else None  # None: nothing
        layer = nn.remat(Layer, policy=policy) if self.remat else Layer
        last = self.config.num_hidden_layers - 1
        for i in range(self.config.num_hidden_layers):
            hidden = self.child(layer, str(i))(hidden, bias, queries if i == last else None)
        return hidden


class Encoder(Block):
    @nn.compact
    def __call__(self, hidden: jax.Array, bias: jax.Array, queries=None) -> jax.Array:
        return self.child(LayerStack, "layer")(hidden, bias, queries)


class Pooler(Block):
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
        first_tokens_only: bool = False,
    ) -> ModelOutput:
        """input_ids, attention_mask, token_type_ids: [batch, seq] ints. Packed rows (see
        bertjax/data/packing.py) also give segment_ids [rows, seq] (0 padding, 1.. the example),
        position_ids [rows, seq] (index within the example) and cls_index [rows, E]; then
        attention stays within each example and pooler_output is [rows, E, hidden].

        first_tokens_only: the last layer computes only the tokens the pooler reads (token 0,
        or cls_index of packed rows), what a classifier needs (~1/8 fewer FLOPs in a
        6-layer model); last_hidden_state is then [batch, 1 | E, hidden] of those tokens."""
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
            # A plain Dense: LoRA reaches the Dense layers of Block modules only, and HF
            # peft's ELECTRA targets (query, value) live there.
            project = linear(
                cfg.hidden_size,
                self.dtype,
                kernel_init=nn.initializers.normal(cfg.initializer_range),
                name="embeddings_project",
            )
            hidden = project(hidden)
        queries = first_token_index(input_ids, cls_index) if first_tokens_only else None
        hidden = Encoder(**fields, name="encoder")(hidden, bias, queries)
        if not self.add_pooler:
            return ModelOutput(last_hidden_state=hidden)
        pooled = Pooler(**fields, name="pooler")(hidden, head_index(cls_index, first_tokens_only))
        return ModelOutput(last_hidden_state=hidden, pooler_output=pooled)


class RobertaHead(Block):
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
        first_tokens_only: bool = False,
    ) -> ModelOutput:
        """input_ids, attention_mask, token_type_ids: [batch, seq] ints; logits [batch,
        num_labels], or [rows, E, num_labels] for packed rows (see EncoderModel, also for
        first_tokens_only: the same logits, the last layer computing the first tokens only)."""
        cfg = self.config
        is_bert = cfg.family == "bert"
        encoder = EncoderModel(
            cfg, self.peft, self.dtype, add_pooler=is_bert, remat=self.remat, name=cfg.family
        )
        packed = dict(segment_ids=segment_ids, position_ids=position_ids, cls_index=cls_index)
        packed["first_tokens_only"] = first_tokens_only
        out = encoder(input_ids, attention_mask, token_type_ids, deterministic, **packed)
        if is_bert:
            pooled = block_dropout(self, out.pooler_output, cfg.head_dropout, deterministic)
            classifier = linear(
                self.num_labels,
                self.dtype,
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
            logits = head(out.last_hidden_state, head_index(cls_index, first_tokens_only))
        return out.replace(logits=logits.astype(jnp.float32))
