"""peft: parameter-efficient fine-tuning for any Flax model (BitFit, LoRA, DoRA, IA3, adapters).

Not Hugging Face's PyTorch `peft`: install that one in a separate environment or path.
"""

from peft.adapter import Adapter, AdapterConfig
from peft.dora import reset_magnitudes
from peft.ia3 import IA3Config, merge_ia3
from peft.inject import Peft, with_ia3, with_lora
from peft.lora import LoraConfig
from peft.masks import (
    BitFitConfig,
    bitfit_mask,
    check_mask,
    combine,
    count,
    partition,
    split,
    trainable_mask,
)
from peft.merge import merge_lora
from peft.optim import freeze, labels

__all__ = [
    "Adapter",
    "AdapterConfig",
    "BitFitConfig",
    "IA3Config",
    "LoraConfig",
    "Peft",
    "bitfit_mask",
    "check_mask",
    "combine",
    "count",
    "freeze",
    "labels",
    "merge_ia3",
    "merge_lora",
    "partition",
    "reset_magnitudes",
    "split",
    "trainable_mask",
    "with_ia3",
    "with_lora",
]
