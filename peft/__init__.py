"""peft: parameter-efficient fine-tuning for any Flax model (BitFit, LoRA, adapters).

Not Hugging Face's PyTorch `peft`: install in a separate virtual environment.
"""

from peft.adapter import Adapter, AdapterConfig
from peft.lora import LoraConfig, LoRADense, merge_lora
from peft.masks import bitfit_mask, check_mask, combine, count, partition, split, trainable_mask
from peft.optim import freeze, labels

__all__ = [
    "Adapter",
    "AdapterConfig",
    "LoRADense",
    "LoraConfig",
    "bitfit_mask",
    "check_mask",
    "combine",
    "count",
    "freeze",
    "labels",
    "merge_lora",
    "partition",
    "split",
    "trainable_mask",
]
