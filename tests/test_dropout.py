"""Hashed dropout: keep rate, independence across elements and keys, determinism, scaling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bertjax
import peft
from bertjax.models.dropout import dropout, keep_mask, make_key
from bertjax.models.families import build
from tests.test_peft import TINY_BERT

X_SMALL = jnp.zeros((2, 3))
SHAPE = (64, 128, 128)  # 1M elements: the standard error of a keep rate is ~3e-4


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_and_pairwise_independence(rate):
    keep = np.asarray(keep_mask(jax.random.key(0), SHAPE, rate))
    assert abs(keep.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / keep.size)
    dropped = ~keep.reshape(-1)
    for lag in (1, 128, 128 * 128):  # neighbours along each axis of the flat index
        both = (dropped[:-lag] & dropped[lag:]).mean()
        assert abs(both - rate**2) < 5 * np.sqrt(rate**2 * (1 - rate**2) / dropped.size), lag


def test_masks_are_a_function_of_the_key():
    a = keep_mask(jax.random.key(1), SHAPE, 0.1)
    np.testing.assert_array_equal(a, keep_mask(jax.random.key(1), SHAPE, 0.1))
    b = keep_mask(jax.random.key(2), SHAPE, 0.1)
    both_dropped = float(jnp.mean(~a & ~b))  # independent keys: 0.1 * 0.1
    assert abs(both_dropped - 0.01) < 5 * np.sqrt(0.01 * 0.99 / a.size)
    raw = jax.random.PRNGKey(1)  # legacy uint32[2] keys, as Hugging Face Flax code passes them
    np.testing.assert_array_equal(
        keep_mask(raw, SHAPE, 0.1), keep_mask(jax.random.wrap_key_data(raw), SHAPE, 0.1)
    )
    folded = [keep_mask(jax.random.fold_in(jax.random.key(1), i), (4096,), 0.5) for i in range(4)]
    assert len({np.asarray(m).tobytes() for m in folded}) == 4


def test_scaling_keeps_the_expectation_and_edge_rates():
    x = jnp.ones(SHAPE, jnp.float32)
    out = dropout(x, 0.1, jax.random.key(3))
    assert set(np.unique(np.asarray(out)).tolist()) == {0.0, np.float32(1 / 0.9)}
    assert abs(float(out.mean()) - 1.0) < 5 * np.sqrt(0.1 / 0.9 / x.size)
    assert dropout(x, 0.0, jax.random.key(3)) is x and dropout(x, 0.1, None) is x
    assert not dropout(x[:8], 1.0, jax.random.key(3)).any()
    bf16 = dropout(x.astype(jnp.bfloat16), 0.1, jax.random.key(3))
    assert bf16.dtype == jnp.bfloat16


class _TwoSites(nn.Module):
    """Two dropout sites in one module and one in a child: three distinct keys per call."""

    @nn.compact
    def __call__(self, x):
        child = _OneSite(name="child")
        return jnp.stack([make_key(self), make_key(self), child(x)])


class _OneSite(nn.Module):
    @nn.compact
    def __call__(self, x):
        return make_key(self)


def test_site_keys_are_distinct_per_site_and_call_and_a_function_of_the_stream_key():
    model = _TwoSites()
    keys = model.apply({}, X_SMALL, rngs={"dropout": jax.random.key(0)})
    assert keys.shape == (3, 2) and keys.dtype == jnp.uint32
    assert len({tuple(np.asarray(k).tolist()) for k in keys}) == 3
    first, second = (~keep_mask(k, SHAPE, 0.1) for k in keys[:2])  # sites' masks independent
    assert abs(float(jnp.mean(first & second)) - 0.01) < 5 * np.sqrt(0.01 * 0.99 / first.size)
    again = model.apply({}, X_SMALL, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_array_equal(keys, again)
    other = model.apply({}, X_SMALL, rngs={"dropout": jax.random.key(1)})
    assert not (np.asarray(other) == np.asarray(keys)).all(axis=1).any()
    # under jit and vmap over stream keys: the same function of the key
    batched = jax.jit(jax.vmap(lambda k: model.apply({}, X_SMALL, rngs={"dropout": k})))
    stacked = batched(jnp.stack([jax.random.key(0), jax.random.key(1)]))
    np.testing.assert_array_equal(stacked[0], keys)
    np.testing.assert_array_equal(stacked[1], other)
    # without a "dropout" stream it is Flax's make_rng (which falls back to "params")
    rngs = {"params": jax.random.key(0)}
    fallback = _OneSite().apply({}, X_SMALL, rngs=rngs)
    flax_key = _FlaxSite().apply({}, X_SMALL, rngs=rngs)
    np.testing.assert_array_equal(jax.random.key_data(fallback), jax.random.key_data(flax_key))


class _FlaxSite(nn.Module):
    @nn.compact
    def __call__(self, x):
        return self.make_rng("dropout")


def test_dropout_sites_compile_without_threefry_loops():
    """Every hashed site (the model's and LoRA's) keys without threefry: on CPU each threefry
    call would lower to a rolled while loop (bench/RESULTS.md, session 14)."""
    lora = peft.LoraConfig(2, 4, dropout=0.1, targets=("query", "value"))
    model = build(bertjax.model_config_from_hf(TINY_BERT), 2, lora)
    ids = jnp.ones((2, 8), jnp.int32)
    params = model.init(jax.random.key(0), ids)["params"]

    def forward(params, key):
        out = model.apply({"params": params}, ids, deterministic=False, rngs={"dropout": key})
        return out.logits

    hlo = jax.jit(forward).lower(params, jax.random.key(1)).as_text()
    assert "while" not in hlo and "threefry" not in hlo
    out = jax.jit(forward)(params, jax.random.key(1))
    assert not np.array_equal(out, jax.jit(forward)(params, jax.random.key(2)))
