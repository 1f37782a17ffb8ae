"""Model hyper-parameters read from a Hugging Face `config.json`."""

import dataclasses

# model_type -> (layout, transformers' class stem), the one list of BERT-layout types:
# RoBERTa's layout offsets positions past the padding id, has no pooler and its own head.
# Other families subclass ModelConfig or have their own (bertjax/models/families.py).
BERT_TYPES = {
    "bert": ("bert", "Bert"),
    "roberta": ("roberta", "Roberta"),
    "xlm-roberta": ("roberta", "XLMRoberta"),
    "camembert": ("roberta", "Camembert"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The fields of a BERT/RoBERTa `config.json` that define the computation."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0

    @property
    def family(self) -> str:
        return BERT_TYPES[self.model_type][0]

    @property
    def embedding_width(self) -> int:
        """Width of the token/position embeddings (ELECTRA's are narrower, then projected)."""
        return self.hidden_size

    @property
    def position_offset(self) -> int:
        """RoBERTa positions start at padding_idx + 1; BERT's at 0."""
        return self.pad_token_id + 1 if self.family == "roberta" else 0

    @property
    def head_dropout(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout


def check_fields(raw: dict, required: tuple[str, ...]) -> None:
    """One-line error for a config.json that lacks a field transformers has no default for."""
    missing = [name for name in required if name not in raw]
    if missing:
        raise ValueError(
            f"config.json ({raw.get('model_type')}) lacks {', '.join(map(repr, missing))}"
        )


def bert_config_from_hf(raw: dict) -> ModelConfig:
    """BERT/RoBERTa `config.json` fields -> ModelConfig."""
    position_type = raw.get("position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ValueError(f"unsupported position_embedding_type {position_type!r}; only 'absolute'")
    fields = dataclasses.fields(ModelConfig)
    check_fields(raw, tuple(f.name for f in fields if f.default is dataclasses.MISSING))
    names = {f.name for f in fields}
    return ModelConfig(**{k: v for k, v in raw.items() if k in names})


def bert_config_to_hf(config: ModelConfig) -> dict:
    """The model fields of a transformers `config.json` for a ModelConfig (and subclasses
    whose field names are transformers' too, as ELECTRA's)."""
    out = dataclasses.asdict(config)
    out["position_embedding_type"] = "absolute"
    if config.family == "roberta":
        out.update(bos_token_id=0, eos_token_id=2)
    return out
