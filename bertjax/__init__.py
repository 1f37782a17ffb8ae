"""bertjax: fine-tune BERT-family encoders in JAX (full, BitFit, LoRA, adapters)."""

from bertjax.hub.pretrained import from_config, from_pretrained, load_tokenizer, save_pretrained
from bertjax.models.bert import EncoderModel, SequenceClassifier
from bertjax.models.config import ModelConfig
from bertjax.models.families import model_config_from_hf
from bertjax.models.layers import ModelOutput

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
