"""DoRA (Liu et al. 2024): W' = m · (W + s·A·B) / ‖W + s·A·B‖, as Hugging Face peft computes it."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from peft.linear import Call, bias_of, kernel_of
from peft.lora import LoraConfig, LoRAFactors, as_dict, delta, lora_dropout


def column_norm(kernel: jax.Array, n_in: int) -> jax.Array:
    """‖kernel[..., j]‖ over the n_in input axes: one norm per output unit, [*out]."""
    return jnp.sqrt(jnp.sum(jnp.square(kernel), axis=tuple(range(n_in))))


class DoRAFactors(LoRAFactors):
    """LoRA's a, b plus `magnitude` [*out], initialised to the column norms of the kernel."""

    @nn.compact
    def __call__(self, kernel: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        a, b = super().__call__()
        n_in = len(self.in_shape)
        magnitude = self.param(
            "magnitude", lambda _, k: column_norm(k, n_in).astype(jnp.float32), kernel
        )
        return a, b, magnitude


def dora_layer(config: LoraConfig, call: Call, out: jax.Array, x: jax.Array, training: bool):
    """The layer's output `out` (for input x) rescaled and redirected as HF peft's DoRA forward.

    The column norm is detached (no gradient), as the DoRA paper's section 4.3 and HF peft do.
    With dropout active the base term is recomputed on the dropped-out input, as HF peft does.
    """
    kernel = kernel_of(call)
    a, b, magnitude = DoRAFactors(
        config.rank, call.in_shape, call.out_shape, parent=call.module, name="lora"
    )(kernel)
    dtype = out.dtype
    weight = kernel.astype(dtype) + config.scaling * jnp.tensordot(a, b, 1).astype(dtype)
    norm = jax.lax.stop_gradient(column_norm(weight, len(call.in_shape)))
    scale = call.along_output(magnitude.astype(dtype) / norm, out.ndim)
    dropped = lora_dropout(call.module, x, config.dropout, training).astype(dtype)
    update = call.low_rank(dropped, a.astype(dtype), b.astype(dtype))
    if (training and config.dropout > 0) or call.einsum_str is not None:
        base = call.apply(dropped, kernel.astype(dtype))
    else:
        bias = bias_of(call)
        base = out if bias is None else out - call.along_output(bias.astype(dtype), out.ndim)
    return out + (scale - 1) * base + scale * config.scaling * update


def merged_kernel(kernel: jax.Array, lora: dict, scaling: float) -> jax.Array:
    """m · (W + s·A·B) / ‖W + s·A·B‖ per output unit: the plain kernel DoRA amounts to."""
    weight = kernel + delta(lora, scaling).astype(kernel.dtype)
    n_in = lora["a"].ndim - 1
    scale = lora["magnitude"] / column_norm(weight, n_in)
    return scale.reshape((1,) * n_in + scale.shape).astype(kernel.dtype) * weight


def _reset(tree, scaling: float):
    if not isinstance(tree, dict):
        return tree
    if "kernel" in tree and "magnitude" in tree.get("lora", {}):
        lora = dict(tree["lora"])
        weight = tree["kernel"] + delta(lora, scaling).astype(tree["kernel"].dtype)
        lora["magnitude"] = column_norm(weight, lora["a"].ndim - 1).astype(jnp.float32)
        return {**tree, "lora": lora}
    return {k: _reset(v, scaling) for k, v in tree.items()}


def reset_magnitudes(params, config: LoraConfig):
    """Every DoRA magnitude set to ‖W + s·A·B‖ of its (e.g. just loaded) kernel, so the
    model's outputs equal the base model's: do this after replacing kernels."""
    return _reset(as_dict(params), config.scaling)
