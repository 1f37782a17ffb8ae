"""LoRA: low-rank updates W + (alpha/rank)·A·B beside any Flax `nn.Dense`."""

import dataclasses
import re
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which Dense layers get LoRA factors and how large they are.

    targets: module names matched against the end of a layer's path ("query",
    "attention/output/dense", "intermediate.dense"), or one string taken as a regex
    that must match the whole '/'-joined path (as Hugging Face peft does).
    """

    rank: int
    alpha: float
    dropout: float = 0.0
    targets: Sequence[str] | str = ("query", "value")

    def __post_init__(self):
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"LoRA rank must be an integer >= 1, got {self.rank!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.targets, str):
            object.__setattr__(self, "targets", tuple(self.targets))
        if not self.targets:
            raise ValueError("LoRA targets is empty")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def _split_path(path: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(path, str):
        return tuple(p for p in re.split(r"[/.]", path) if p)
    return tuple(path)


def target_matches(target: str, path: Sequence[str]) -> bool:
    """True when one suffix-style target names the layer at `path`."""
    wanted = _split_path(target)
    return tuple(path[-len(wanted) :]) == wanted


def is_target(config: LoraConfig, path: Sequence[str]) -> bool:
    """True when the Dense layer at `path` (tuple of module names) gets LoRA factors."""
    if isinstance(config.targets, str):
        return re.fullmatch(config.targets, "/".join(path)) is not None
    return any(target_matches(t, path) for t in config.targets)


def check_targets(config: LoraConfig, dense_paths: Sequence[Sequence[str]]) -> None:
    """Raises when a target matches none of the candidate Dense layers."""
    regex = isinstance(config.targets, str)
    for target in [config.targets] if regex else config.targets:
        single = dataclasses.replace(config, targets=target if regex else (target,))
        if not any(is_target(single, p) for p in dense_paths):
            names = sorted({"/".join(p[-2:]) if p[-1] == "dense" else p[-1] for p in dense_paths})
            raise ValueError(
                f"LoRA target {target!r} matches no layer; available: {', '.join(names)}"
            )


class LoRADense(nn.Module):
    """Wraps `base` (an nn.Dense) in place: `…/kernel`, `…/bias` stay where they were and
    `…/lora/a` [in, rank], `…/lora/b` [rank, out] are added beside them.

    b starts at zero, so the wrapped layer's output is unchanged at initialisation.
    Dropout applies to the LoRA branch's input only.
    """

    base: nn.Dense
    rank: int
    alpha: float
    dropout: float = 0.0
    deterministic: bool = True

    def setup(self):
        nn.share_scope(self, self.base)

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        out = self.base(inputs)
        factors = LoRAFactors(self.rank, self.base.features, name="lora")
        branch = nn.Dropout(self.dropout)(inputs, deterministic=self.deterministic)
        update = factors(branch.astype(out.dtype))
        return out + (self.alpha / self.rank) * update


class LoRAFactors(nn.Module):
    """x @ a @ b with a ~ Kaiming-uniform (as Hugging Face peft) and b = 0."""

    rank: int
    features: int

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        fan_in = inputs.shape[-1]
        a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=0)
        a = self.param("a", a_init, (fan_in, self.rank), jnp.float32)
        b = self.param("b", nn.initializers.zeros, (self.rank, self.features), jnp.float32)
        dtype = inputs.dtype
        return (inputs @ a.astype(dtype)) @ b.astype(dtype)


def _merge(tree, scaling: float):
    if not isinstance(tree, dict):
        return tree
    if "lora" in tree and "kernel" in tree:
        lora = tree["lora"]
        merged = dict((k, v) for k, v in tree.items() if k != "lora")
        delta = (lora["a"] @ lora["b"]) * scaling
        merged["kernel"] = tree["kernel"] + delta.astype(tree["kernel"].dtype)
        return merged
    return {k: _merge(v, scaling) for k, v in tree.items()}


def merge_lora(params, lora: LoraConfig | float):
    """Returns `params` with every `lora/{a,b}` folded into its kernel: W + (alpha/r)·A·B.

    The result has the plain Dense tree, so the model built without LoRA gives the same
    outputs. `lora` is the LoraConfig the factors were trained with (alpha is not in the
    tree), or the scaling alpha/rank as a number.
    """
    scaling = lora.scaling if isinstance(lora, LoraConfig) else float(lora)
    return _merge(_unfreeze(params), scaling)


def _unfreeze(tree):
    if hasattr(tree, "items"):
        return {k: _unfreeze(v) for k, v in tree.items()}
    return tree
