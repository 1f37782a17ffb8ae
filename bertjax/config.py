"""Model hyper-parameters read from a Hugging Face `config.json`."""

import dataclasses
from typing import Any

# model_type -> architecture family. The family decides the embeddings (RoBERTa position
# offset), the state-dict prefix and the classification head.
FAMILIES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "camembert": "roberta",
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
        return FAMILIES[self.model_type]

    @property
    def position_offset(self) -> int:
        """RoBERTa positions start at padding_idx + 1; BERT's at 0."""
        return self.pad_token_id + 1 if self.family == "roberta" else 0

    @property
    def head_dropout(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout


def model_config_from_hf(hf_config: Any) -> ModelConfig:
    """Builds a ModelConfig from a `transformers` config object or its dict."""
    raw = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    position_type = raw.get("position_embedding_type", "absolute")
    if position_type not in (None, "absolute"):
        raise ValueError(f"unsupported position_embedding_type {position_type!r}; only 'absolute'")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in raw.items() if k in names})
