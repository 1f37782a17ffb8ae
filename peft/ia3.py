"""(IA)³ (Liu et al. 2022): learned vectors that rescale chosen layers' outputs or inputs."""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from peft import targets as targets_lib
from peft.linear import Call
from peft.lora import as_dict

# Hugging Face peft's defaults for BERT/RoBERTa (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
# and …_FEEDFORWARD_MODULES_MAPPING). "output.dense" also names attention/output/dense.
BERT_TARGETS = ("key", "value", "output.dense")
BERT_FEEDFORWARD = ("output.dense",)


@dataclasses.dataclass(frozen=True)
class IA3Config:
    """targets: layers whose output is scaled, one learned factor per output unit; those also
    in `feedforward` scale their input instead, one factor per input unit (as HF peft).
    Both take suffixes, "all-linear" or a regex, like LoraConfig.targets."""

    targets: Sequence[str] | str = BERT_TARGETS
    feedforward: Sequence[str] | str = BERT_FEEDFORWARD
    head: Sequence[str] = ("classifier",)

    def __post_init__(self):
        for name in ("targets", "feedforward"):
            if not isinstance(getattr(self, name), str):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "head", tuple(self.head))
        if not self.targets:
            raise ValueError("IA3 targets is empty")

    name = "IA3"

    def is_feedforward(self, path: Sequence[str]) -> bool:
        return targets_lib.matches(self.feedforward, path, self.head)


class IA3Scale(nn.Module):
    """One parameter `scale` [*shape], all ones: a fresh (IA)³ layer is the identity."""

    shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("scale", nn.initializers.ones, self.shape, jnp.float32)


def ia3_layer(config: IA3Config, call: Call, next_fun, args: tuple, kwargs: dict):
    """The layer's call with its input (feedforward) or its output scaled."""
    feedforward = config.is_feedforward(call.module.path)
    shape = call.in_shape if feedforward else call.out_shape
    scale = IA3Scale(shape, parent=call.module, name="ia3")()
    if feedforward:
        x = args[0]
        scaled = (x * call.along_input(scale.astype(x.dtype), x.ndim)).astype(x.dtype)
        return next_fun(scaled, *args[1:], **kwargs)
    out = next_fun(*args, **kwargs)
    return out * call.along_output(scale.astype(out.dtype), out.ndim)


def _merge(tree, config: IA3Config, path=()):
    if not isinstance(tree, dict):
        return tree
    if "ia3" in tree and "kernel" in tree:
        scale, kernel = tree["ia3"]["scale"], tree["kernel"]
        merged = {k: v for k, v in tree.items() if k != "ia3"}
        if config.is_feedforward(path):  # scale [*in] over the kernel's leading axes
            trailing = (1,) * (kernel.ndim - scale.ndim)
            merged["kernel"] = kernel * scale.reshape(scale.shape + trailing)
        else:  # scale [*out] over the trailing axes, and the bias with it
            merged["kernel"] = kernel * scale.reshape(
                (1,) * (kernel.ndim - scale.ndim) + scale.shape
            )
            if "bias" in tree:
                merged["bias"] = tree["bias"] * scale
        return merged
    return {k: _merge(v, config, (*path, k)) for k, v in tree.items()}


def merge_ia3(params, config: IA3Config):
    """`params` with every `ia3/scale` folded into its layer's kernel (and bias): the plain
    tree, giving the same outputs without `with_ia3`."""
    return _merge(as_dict(params), config)
