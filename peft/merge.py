"""Folding trained LoRA/DoRA factors into their kernels: the plain tree, no `lora` leaves."""

from peft.dora import merged_kernel
from peft.lora import LoraConfig, as_dict, delta


def _merge(tree, config: LoraConfig):
    if not isinstance(tree, dict):
        return tree
    if "lora" in tree and "kernel" in tree:
        merged = {k: v for k, v in tree.items() if k != "lora"}
        kernel = tree["kernel"]
        if "magnitude" in tree["lora"]:
            merged["kernel"] = merged_kernel(kernel, tree["lora"], config.scaling)
        else:
            merged["kernel"] = kernel + delta(tree["lora"], config.scaling).astype(kernel.dtype)
        return merged
    return {k: _merge(v, config) for k, v in tree.items()}


def merge_lora(params, lora: LoraConfig | float):
    """Returns `params` with every `lora/{a,b}` (and DoRA's `lora/magnitude`) folded into its
    kernel: W + (alpha/r)·A·B, or DoRA's m·(W + (alpha/r)·A·B)/‖·‖.

    The result has the plain tree, so the model without `with_lora` gives the same outputs.
    `lora` is the LoraConfig the factors were trained with (alpha is not in the tree), or the
    scaling alpha/rank as a number.
    """
    config = lora if isinstance(lora, LoraConfig) else LoraConfig(1, float(lora))
    return _merge(as_dict(params), config)
