"""bertjax: fine-tune BERT-family encoders in JAX (full, BitFit, LoRA, adapters)."""

from bertjax.config import ModelConfig, model_config_from_hf
from bertjax.model import EncoderModel, ModelOutput, SequenceClassifier
from bertjax.pretrained import from_config, from_pretrained, load_tokenizer, save_pretrained

__all__ = [
    "EncoderModel",
    "ModelConfig",
    "ModelOutput",
    "SequenceClassifier",
    "from_config",
    "from_pretrained",
    "load_tokenizer",
    "model_config_from_hf",
    "save_pretrained",
]
