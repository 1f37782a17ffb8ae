"""peft: parameter-efficient fine-tuning for any Flax model (BitFit, LoRA, adapters).

Not Hugging Face's PyTorch `peft`: install in a separate virtual environment.
"""

from peft.adapter import Adapter, AdapterConfig
from peft.lora import LoraConfig, LoRADense, merge_lora

__all__ = ["Adapter", "AdapterConfig", "LoRADense", "LoraConfig", "merge_lora"]
