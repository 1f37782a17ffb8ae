"""Mixed-precision matmuls: operands in a low-precision dtype (bfloat16), results in float32.

On CPUs with AVX512_BF16 (and on GPUs/TPUs) XLA's dot with bfloat16 operands and a float32
result runs at about twice the float32 rate, while a dot with a bfloat16 result, and bfloat16
elementwise work, is slower than float32 (/work/shared/notes/performance.md). So the model
keeps its activations, LayerNorm, softmax and loss in float32 and casts only the operands of
each matmul. Autodiff of such a dot would give bfloat16-result dots in the backward pass; the
custom VJPs below make the backward dots bfloat16 × bfloat16 → float32 as well, and keep the
bfloat16 operands (half the memory of float32 ones) as the residuals.
"""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

FLOAT32 = jnp.float32


def _is_dense(dimension_numbers, lhs_ndim: int) -> bool:
    """True for nn.Dense's dot: the last axis of lhs with the first of rhs, no batch axes."""
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = dimension_numbers
    as_tuples = ((tuple(lhs_contract), tuple(rhs_contract)), (tuple(lhs_batch), tuple(rhs_batch)))
    return as_tuples == (((lhs_ndim - 1,), (0,)), ((), ()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_dot(x: jax.Array, kernel: jax.Array, dtype) -> jax.Array:
    """x [..., in] @ kernel [in, out] -> [..., out] float32, operands cast to `dtype`."""
    return _dense_dot_fwd(x, kernel, dtype)[0]


def _dense_dot_fwd(x, kernel, dtype):
    x_low, kernel_low = x.astype(dtype), kernel.astype(dtype)
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    out = lax.dot_general(x_low, kernel_low, dims, preferred_element_type=FLOAT32)
    # Zero-size arrays carry the primal dtypes to the backward pass.
    dtypes = (jnp.zeros((0,), x.dtype), jnp.zeros((0,), kernel.dtype))
    return out, (x_low, kernel_low, dtypes)


def _dense_dot_bwd(dtype, residuals, grad):
    x_low, kernel_low, (x_dtype, kernel_dtype) = residuals
    grad_low = grad.astype(dtype)
    batch_axes = tuple(range(grad.ndim - 1))
    d_x = lax.dot_general(
        grad_low, kernel_low, (((grad.ndim - 1,), (1,)), ((), ())), preferred_element_type=FLOAT32
    )
    d_kernel = lax.dot_general(
        x_low, grad_low, ((batch_axes, batch_axes), ((), ())), preferred_element_type=FLOAT32
    )
    return d_x.astype(x_dtype.dtype), d_kernel.astype(kernel_dtype.dtype)


_dense_dot.defvjp(_dense_dot_fwd, _dense_dot_bwd)


def bfloat16_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """A `lax.dot_general` for `nn.Dense(dot_general=…)`: bfloat16 operands, float32 result
    (`precision` and `preferred_element_type` are ignored: the result is always float32)."""
    del precision, preferred_element_type
    if _is_dense(dimension_numbers, lhs.ndim):
        return _dense_dot(lhs, rhs, jnp.bfloat16)
    low = jnp.bfloat16
    return lax.dot_general(
        lhs.astype(low), rhs.astype(low), dimension_numbers, preferred_element_type=FLOAT32
    )


def keep_dtypes(inputs, kernel, bias, dtype=None):
    """`nn.Dense(promote_dtype=…)` that leaves inputs, kernel and bias as they are, so a
    bfloat16 kernel is not widened to float32 before the bfloat16 dot (it is cast once)."""
    del dtype
    return inputs, kernel, bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _einsum(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    return _einsum_fwd(spec, a, b, dtype)[0]


def _matmul_einsum(a_spec: str, b_spec: str, out_spec: str, a, b) -> jax.Array:
    """einsum of a and b as one batched matmul [B, M, K] x [B, K, N] -> [B, M, N] float32 on
    operands transposed (and reshaped) to that layout first. XLA's CPU runtime rejects some
    bfloat16 x bfloat16 -> float32 dots whose operands or result it leaves in another layout
    ("Unsupported element type for DotThunk::Execute", jax 0.10.2); this form always runs."""
    batch = [c for c in out_spec if c in a_spec and c in b_spec]
    contract = [c for c in a_spec if c in b_spec and c not in out_spec]
    a_free = [c for c in a_spec if c not in batch and c not in contract]
    b_free = [c for c in b_spec if c not in batch and c not in contract]
    size = dict(zip(a_spec, a.shape, strict=True)) | dict(zip(b_spec, b.shape, strict=True))

    def as_3d(x, spec: str, order: list[list[str]]) -> jax.Array:
        x = jnp.transpose(x, [spec.index(c) for group in order for c in group])
        return x.reshape([int(np.prod([size[c] for c in group])) for group in order])

    out = lax.dot_general(
        as_3d(a, a_spec, [batch, a_free, contract]),
        as_3d(b, b_spec, [batch, contract, b_free]),
        (((2,), (1,)), ((0,), (0,))),
        preferred_element_type=FLOAT32,
    )
    order = batch + a_free + b_free
    out = out.reshape([size[c] for c in order])
    return jnp.transpose(out, [order.index(c) for c in out_spec])


def _einsum_fwd(spec, a, b, dtype):
    a_low, b_low = a.astype(dtype), b.astype(dtype)
    (a_spec, b_spec), out_spec = spec.split("->")[0].split(","), spec.split("->")[1]
    out = _matmul_einsum(a_spec, b_spec, out_spec, a_low, b_low)
    dtypes = (jnp.zeros((0,), a.dtype), jnp.zeros((0,), b.dtype))
    return out, (a_low, b_low, dtypes)


def _einsum_bwd(spec, dtype, residuals, grad):
    a_low, b_low, (a_dtype, b_dtype) = residuals
    inputs, out = spec.split("->")
    a_spec, b_spec = inputs.split(",")
    grad_low = grad.astype(dtype)
    d_a = _matmul_einsum(out, b_spec, a_spec, grad_low, b_low)
    d_b = _matmul_einsum(a_spec, out, b_spec, a_low, grad_low)
    return d_a.astype(a_dtype.dtype), d_b.astype(b_dtype.dtype)


_einsum.defvjp(_einsum_fwd, _einsum_bwd)


def einsum(spec: str, a: jax.Array, b: jax.Array, dtype=FLOAT32) -> jax.Array:
    """jnp.einsum of two operands (explicit "ab,bc->ac" form, every index of an operand in
    the other one or in the output) with operands in `dtype` and a float32 result; float32
    is plain jnp.einsum."""
    if jnp.dtype(dtype) == jnp.dtype(FLOAT32):
        return jnp.einsum(spec, a, b)
    _check_spec(spec)
    return _einsum(spec, a, b, jnp.dtype(dtype))


def _check_spec(spec: str) -> None:
    inputs, out = spec.split("->")
    a_spec, b_spec = inputs.split(",")
    for own, other in ((a_spec, b_spec), (b_spec, a_spec)):
        if "." in own or not set(own) <= set(other) | set(out):
            raise ValueError(f"einsum {spec!r}: needs explicit indices, each in two operands")


@functools.partial(jax.jit, static_argnums=1)
def cast_kernels(tree, dtype):
    """`tree` with every leaf named "kernel" (the weight matrix of a Dense layer) cast to
    `dtype`; other leaves (biases, LayerNorm, embeddings) unchanged. For frozen weights in
    bfloat16: the matmuls cast them to bfloat16 anyway, so cast once and keep them (half the
    memory, no per-step convert) with bitwise the same results."""

    def cast(path, leaf):
        named_kernel = getattr(path[-1], "key", None) == "kernel" if path else False
        return leaf.astype(dtype) if named_kernel and leaf is not None else leaf

    return jax.tree_util.tree_map_with_path(cast, tree)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# CPU flags of native bfloat16 dot products (AVX512_BF16, AMX): there bfloat16 matmuls with
# float32 results run at about twice the float32 rate; without them they are emulated.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bfloat16(device=None, cpuinfo: str | None = None) -> str | None:
    """Why `device` (default: the first) has native bfloat16 matmuls, or None: a TPU, an
    NVIDIA GPU of compute capability ≥ 8.0 (Ampere), a CPU with one of BF16_CPU_FLAGS in
    `cpuinfo` (default: /proc/cpuinfo)."""
    device = device or jax.devices()[0]
    if device.platform == "tpu":
        return "TPU"
    if device.platform == "gpu":
        capability = getattr(device, "compute_capability", "0")
        major = int(str(capability).split(".")[0] or 0)
        return f"GPU sm{str(capability).replace('.', '')}" if major >= 8 else None
    if cpuinfo is None:
        proc = Path("/proc/cpuinfo")
        cpuinfo = proc.read_text() if proc.exists() else ""
    flags = set(cpuinfo.split())
    found = [flag for flag in BF16_CPU_FLAGS if flag in flags]
    return f"CPU {'+'.join(found)}" if found else None


@functools.cache
def compute_dtype(name: str) -> str:
    """config.dtype resolved: "auto" is bfloat16 where `native_bfloat16()`, else float32
    (a run logs its choice at start: `describe_dtype`)."""
    if name not in (*DTYPES, "auto"):
        raise ValueError(f"dtype {name!r} unknown; use auto, {' or '.join(DTYPES)}")
    if name != "auto":
        return name
    return "bfloat16" if native_bfloat16() else "float32"


def describe_dtype(name: str) -> str:
    """config.dtype as a run logs it at start: "float32", or "auto: bfloat16 (CPU
    avx512_bf16)" / "auto: float32 (no native bfloat16 matmuls)"."""
    if name != "auto":
        return compute_dtype(name)
    return f"auto: {compute_dtype(name)} ({native_bfloat16() or 'no native bfloat16 matmuls'})"
