"""Hashed dropout (moved to `peft/dropout.py`, which LoRA's dropout uses too; kept here).

Each site's mask is a counter-based hash of the element's index under a per-site key derived
from Flax's "dropout" stream without threefry (`peft.dropout.make_key`).
"""

from peft.dropout import dropout, hash_bits, keep_mask, make_key

__all__ = ["dropout", "hash_bits", "keep_mask", "make_key"]
