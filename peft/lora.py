"""LoRA (and DoRA's direction half): low-rank updates W + (alpha/rank)·A·B beside a kernel."""

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from peft import targets as targets_lib
from peft.dropout import module_dropout
from peft.linear import Call


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which linear layers get LoRA factors and how large they are.

    targets: module names matched against the end of a layer's path ("query",
    "attention/output/dense", "intermediate.dense"), "all-linear", or one string taken as a
    regex that must match the whole '/'-joined path (as Hugging Face peft does).
    head: paths of the task head ("classifier"); its layers never get factors (it trains whole).
    use_dora: DoRA (Liu et al. 2024): a learned magnitude per output beside the factors, as
    Hugging Face peft's `LoraConfig(use_dora=True)`.
    """

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: Sequence[str] | str = ("query", "value")
    head: Sequence[str] = ("classifier",)
    use_dora: bool = False

    def __post_init__(self):
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.targets, str):
            object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "head", tuple(self.head))
        if not self.targets:
            raise ValueError("LoRA targets is empty")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @property
    def name(self) -> str:
        return "DoRA" if self.use_dora else "LoRA"


def is_target(config, path: Sequence[str]) -> bool:
    """True when the linear layer at `path` (tuple of module names) is one of config's targets."""
    return targets_lib.matches(config.targets, path, config.head)


def check_targets(config, layer_paths: Sequence[Sequence[str]]) -> None:
    """Raises when a target of `config` matches none of the linear layers at `layer_paths`."""
    kind = getattr(config, "name", type(config).__name__)
    targets_lib.check(kind, config.targets, [tuple(p) for p in layer_paths], config.head)


class LoRAFactors(nn.Module):
    """Parameters a [*in, rank] (Kaiming-uniform, as Hugging Face peft) and b [rank, *out] = 0;
    b starts at zero, so a freshly injected layer gives the base layer's output."""

    rank: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        fan_in_axes = tuple(range(len(self.in_shape)))
        a_init = nn.initializers.variance_scaling(
            1 / 3, "fan_in", "uniform", in_axis=fan_in_axes, out_axis=-1
        )
        a = self.param("a", a_init, (*self.in_shape, self.rank), jnp.float32)
        b = self.param("b", nn.initializers.zeros, (self.rank, *self.out_shape), jnp.float32)
        return a, b


def lora_dropout(module: nn.Module, x: jax.Array, rate: float, training: bool) -> jax.Array:
    """Dropout on the LoRA branch's input, under the layer's own "dropout" rng stream
    (hashed, `peft.dropout`)."""
    return module_dropout(module, x, rate, training)


def lora_layer(config: LoraConfig, call: Call, out: jax.Array, x: jax.Array, training: bool):
    """`out` (the layer's own output for input x) plus its scaled low-rank update."""
    a, b = LoRAFactors(
        config.rank, call.in_shape, call.out_shape, parent=call.module, name="lora"
    )()
    branch = lora_dropout(call.module, x, config.dropout, training).astype(out.dtype)
    return out + config.scaling * call.low_rank(branch, a.astype(out.dtype), b.astype(out.dtype))


def delta(lora: dict, scaling: float) -> jax.Array:
    """scaling · a·b: the kernel-shaped update of one layer's factors."""
    return jnp.tensordot(lora["a"], lora["b"], 1) * scaling


def as_dict(tree):
    if hasattr(tree, "items"):
        return {k: as_dict(v) for k, v in tree.items()}
    return tree
