"""The three Flax linear layers (Dense, DenseGeneral, Einsum) seen as kernel [*in, *out] maps."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LINEAR = (nn.Dense, nn.DenseGeneral, nn.Einsum)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a linear layer: kernel shape = in_shape + out_shape, and which axes of the
    input (`in_axes`) and of the output (`out_axes`) those kernel dims meet, in kernel order."""

    module: nn.Module
    einsum_str: str | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    in_axes: tuple[int, ...]
    out_axes: tuple[int, ...]

    def apply(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        """The layer's map without bias, with `kernel` in place of its own."""
        if self.einsum_str is not None:
            return jnp.einsum(self.einsum_str, x, kernel)
        axes = tuple(a % x.ndim for a in self.in_axes)
        dims = ((axes, tuple(range(len(axes)))), ((), ()))
        return jax.lax.dot_general(x, kernel, dims)

    def low_rank(self, x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
        """The map of kernel a·b (a [*in, r], b [r, *out]) without forming it (Dense, General)."""
        if self.einsum_str is not None:
            return self.apply(x, jnp.tensordot(a, b, 1))
        return jnp.tensordot(self.apply(x, a), b, 1)

    def along_input(self, vector: jax.Array, ndim: int) -> jax.Array:
        """`vector` [*in_shape] shaped to broadcast against the input."""
        return _along(vector, self.in_axes, ndim)

    def along_output(self, vector: jax.Array, ndim: int) -> jax.Array:
        """`vector` [*out_shape] shaped to broadcast against the output."""
        return _along(vector, self.out_axes, ndim)


def _along(vector: jax.Array, axes: tuple[int, ...], ndim: int) -> jax.Array:
    axes = tuple(a % ndim for a in axes)
    order = np.argsort(axes)
    shape = [1] * ndim
    for ax, size in zip(axes, vector.shape, strict=True):
        shape[ax] = size
    return jnp.transpose(vector, order).reshape(shape)


def describe(module: nn.Module, args: tuple, kwargs: dict) -> Call:
    """How the linear `module` maps its first argument; raises for layouts LoRA can't follow."""
    x = args[0] if args else kwargs["inputs"]
    where = "/".join(module.path)
    if isinstance(module, nn.Dense):
        return Call(module, None, (x.shape[-1],), (module.features,), (-1,), (-1,))
    if isinstance(module, nn.DenseGeneral):
        if module.batch_dims:
            raise ValueError(f"{where}: DenseGeneral with batch_dims is not supported by peft")
        axis = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
        features = (module.features,) if isinstance(module.features, int) else module.features
        out_axes = tuple(range(-len(features), 0))
        return Call(module, None, tuple(x.shape[a] for a in axis), tuple(features), axis, out_axes)
    einsum_str = args[1] if len(args) > 1 else kwargs.get("einsum_str") or module.einsum_str
    return _describe_einsum(module, x, einsum_str.replace(" ", ""), where)


def _describe_einsum(module: nn.Einsum, x, einsum_str: str, where: str) -> Call:
    inputs, rest = einsum_str.split(",")
    kernel, output = rest.split("->")
    contracted = [c for c in kernel if c in inputs and c not in output]
    produced = [c for c in kernel if c in output and c not in inputs]
    if "." in kernel or list(kernel) != contracted + produced:
        raise ValueError(
            f"{where}: einsum {einsum_str!r} needs a kernel of contracted axes then output "
            "axes (no batch axes) for peft"
        )
    shape = tuple(module.shape)
    return Call(
        module,
        einsum_str,
        shape[: len(contracted)],
        shape[len(contracted) :],
        tuple(_axis(inputs, c) for c in contracted),
        tuple(_axis(output, c) for c in produced),
    )


def _axis(spec: str, letter: str) -> int:
    """Axis of `letter` in an operand spec that may hold one '...'."""
    if "..." in spec:
        before, after = spec.split("...")
        return before.index(letter) if letter in before else after.index(letter) - len(after)
    return spec.index(letter)


def kernel_of(call: Call) -> jax.Array:
    return call.module.get_variable("params", "kernel")


def bias_of(call: Call) -> jax.Array | None:
    return call.module.get_variable("params", "bias") if call.module.use_bias else None
