"""Hashed dropout: keep rate, independence across elements and keys, determinism, scaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertjax.models.dropout import dropout, keep_mask

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
