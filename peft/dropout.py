"""Inverted dropout whose mask is a counter-based hash of each element's index, and per-site
keys from a Flax rng stream without threefry.

`nn.Dropout` draws its mask from threefry bits, and `module.make_rng` derives each site's key
with a threefry `fold_in`; on CPU, JAX lowers every threefry call to a rolled while loop (5
trips of small kernels and copies), inlined at every site. Here the per-element bits are one
multiply-xorshift hash (lowbias32, C. Wellons) of the element's flat index mixed with the
site's key words, and `make_key` derives those words from the stream's key and the site's
static path with the same hash (bench/RESULTS.md: the LoRA step and its compile).

The mask depends only on the key and the element's global index (`lax.iota` is split with
the array under a sharded jit), so it is the same on 1 or N devices.
"""

import hashlib
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.core.scope import LazyRng
from jax import lax

_GOLDEN = 0x9E3779B9


def _lowbias32(x: jax.Array) -> jax.Array:
    """lowbias32 of uint32 x, elementwise (lax ops: traced at every site of every step)."""
    for shift, factor in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        mixed = lax.bitwise_xor(x, lax.shift_right_logical(x, np.uint32(shift)))
        x = lax.mul(mixed, np.uint32(factor))
    return lax.bitwise_xor(x, lax.shift_right_logical(x, np.uint32(16)))


def key_words(key: jax.Array) -> jax.Array:
    """uint32 words of a typed key or a legacy uint32 key array, flattened."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key.reshape(-1).astype(jnp.uint32)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of `shape`, a function of (key, flat element index) only."""
    words = key_words(key)
    index = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    return _lowbias32((index * jnp.uint32(_GOLDEN) + words[0]) ^ words[1])


def keep_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """bool mask, True with probability 1 - rate (resolution 2**-32)."""
    threshold = min(round(rate * 2**32), 2**32 - 1)
    return hash_bits(key, shape) >= jnp.uint32(threshold)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Zeroes each element with probability `rate` and scales the rest by 1/(1-rate),
    as `torch.nn.Dropout` in train mode. key=None or rate=0 returns x."""
    if key is None or rate == 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = keep_mask(key, x.shape, rate)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros_like(x))


def _static_salt(suffix: tuple) -> tuple[int, int]:
    """Two uint32 words of a SHA-1 of a site's static path and call count."""
    digest = hashlib.sha1(repr(suffix).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big"), int.from_bytes(digest[4:8], "big")


def fold_in_static(key: jax.Array, suffix: tuple) -> jax.Array:
    """A legacy uint32[2] key: `key`'s first two words, each xor-ed with 32 bits of a SHA-1
    of the static `suffix` (strings and ints) and hashed by lowbias32, where
    `jax.random.fold_in` would run threefry."""
    salt = np.array(_static_salt(suffix), np.uint32)
    return _lowbias32(lax.bitwise_xor(key_words(key)[:2], salt))


def make_key(module: nn.Module, stream: str = "dropout") -> jax.Array:
    """A new key of `module`'s rng `stream` for one dropout site: like `module.make_rng`,
    distinct per module path and per call, the same in every trace, but folded with
    `fold_in_static` instead of threefry. Falls back to `make_rng` where the stream is
    missing (Flax then uses "params") or is not held as Flax's LazyRng."""
    scope = module.scope
    lazy = scope.rngs.get(stream) if scope is not None else None
    if not isinstance(lazy, LazyRng):
        return module.make_rng(stream)
    scope.rng_counters[stream] += 1
    return fold_in_static(lazy.rng, (*lazy.suffix, scope.rng_counters[stream]))


def module_dropout(module: nn.Module, x: jax.Array, rate: float, training: bool) -> jax.Array:
    """Hashed dropout at a site of `module` under its "dropout" stream; draws no key when
    not training or at rate 0."""
    if not training or rate == 0:
        return x
    return dropout(x, rate, make_key(module))
