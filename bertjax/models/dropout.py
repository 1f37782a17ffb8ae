"""Inverted dropout whose mask is a counter-based hash of each element's index.

`nn.Dropout` draws its mask from threefry bits: 20 rounds per pair of words at every
dropout site, and every site inlines its own threefry code. On CPU (MiniLM, batch 32 x 128)
that made the full fine-tuning step 3.39 s and its compile 7.6 s; with this hash they are
2.55 s and 5.3 s (bench/RESULTS.md). Here each site still takes its own key
from Flax's "dropout" stream (`make_rng`), but the per-element bits are one multiply-xorshift
hash (lowbias32, C. Wellons) of the element's flat index mixed with that key's words.

The mask depends only on the key and the element's global index (`lax.iota` is split with
the array under a sharded jit), so it is the same on 1 or N devices.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

_GOLDEN = 0x9E3779B9


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 bits of `shape`, a function of (key, flat element index) only."""
    words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
    bits = lax.iota(jnp.uint32, math.prod(shape)).reshape(shape)
    bits = (bits * jnp.uint32(_GOLDEN) + words[0]) ^ words[1]
    bits = (bits ^ (bits >> 16)) * jnp.uint32(0x7FEB352D)
    bits = (bits ^ (bits >> 15)) * jnp.uint32(0x846CA68B)
    return bits ^ (bits >> 16)


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
