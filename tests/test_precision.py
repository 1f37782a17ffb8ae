"""Mixed precision (issue #25): bfloat16 matmul operands with float32 results and gradients."""

from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest
import transformers

import bertjax
import peft
from bertjax.models import precision
from bertjax.models.families import build
from bertjax.train.build import compute_dtype, frozen_in_compute_dtype, native_bfloat16
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import init_state, make_train_step

OPTIM = ml_collections.ConfigDict(
    dict(
        lr=1e-2, weight_decay=0.01, warmup_ratio=0.0, schedule="linear", grad_clip=1.0, accumulate=1
    )
)

SIZES = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
BERT_LIKE = dict(SIZES, intermediate_size=64, max_position_embeddings=40, initializer_range=0.2)
# One tiny random config per family (initializer_range 0.2: logits O(1), attention far from
# uniform), the DeBERTa one with relative attention both ways.
HF_CONFIGS = {
    "bert": transformers.BertConfig(**BERT_LIKE),
    "roberta": transformers.RobertaConfig(**BERT_LIKE, pad_token_id=1),
    "electra": transformers.ElectraConfig(**BERT_LIKE, embedding_size=16),
    "distilbert": transformers.DistilBertConfig(
        vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=64, initializer_range=0.2
    ),
    "deberta-v2": transformers.DebertaV2Config(
        **BERT_LIKE,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=6,
        position_biased_input=False,
    ),
    "modernbert": transformers.ModernBertConfig(
        **SIZES, intermediate_size=48, initializer_range=0.2, pad_token_id=0
    ),
}
# bfloat16 keeps 8 significant bits: one rounding is a relative error up to 2**-9 ≈ 0.002;
# through two layers of O(1) logits a few hundredths absolute is that order.
LOGIT_ATOL = 5e-2


def _batch():
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(3, 99, (2, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[1, 9:].set(0)
    return ids, mask


def bf16(x) -> np.ndarray:
    """x rounded to bfloat16 (ml_dtypes, round to nearest even), as float64."""
    return np.asarray(np.asarray(x, np.float32).astype(ml_dtypes.bfloat16), np.float64)


@pytest.mark.parametrize("family", sorted(HF_CONFIGS))
def test_bfloat16_logits_within_bfloat16_tolerance_of_float32(family):
    model, params = bertjax.from_config(HF_CONFIGS[family].to_dict(), num_labels=3)
    model16 = build(model.config, 3, dtype=jnp.bfloat16)
    ids, mask = _batch()
    out32 = model.apply({"params": params}, ids, mask)
    out16 = model16.apply({"params": params}, ids, mask)
    assert out16.logits.dtype == jnp.float32 and out16.last_hidden_state.dtype == jnp.float32
    np.testing.assert_allclose(out16.logits, out32.logits, atol=LOGIT_ATOL)
    assert not np.array_equal(out16.logits, out32.logits)  # the bfloat16 path really ran


def test_dense_dot_and_its_gradients_are_bfloat16_products_summed_in_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 5, 48)).astype(np.float32)
    w = rng.standard_normal((48, 24)).astype(np.float32)
    g = rng.standard_normal((2, 5, 24)).astype(np.float32)
    dims = (((2,), (0,)), ((), ()))
    out, vjp = jax.vjp(lambda a, b: precision.bfloat16_dot_general(a, b, dims), x, w)
    d_x, d_w = vjp(jnp.asarray(g))
    # Reference in float64 from bfloat16-rounded operands: every product is exact in float32
    # (8 x 8 significant bits), so only float32 summation separates the two.
    np.testing.assert_allclose(out, bf16(x) @ bf16(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_x, bf16(g) @ bf16(w).T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        d_w, np.einsum("bti,bto->io", bf16(x), bf16(g)), rtol=1e-5, atol=1e-5
    )
    assert out.dtype == d_x.dtype == d_w.dtype == jnp.float32


def test_einsum_gradients_are_bfloat16_products_summed_in_float32():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((2, 6, 3, 8)).astype(np.float32)
    k = rng.standard_normal((2, 7, 3, 8)).astype(np.float32)
    g = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    spec = "bqhd,bkhd->bhqk"
    out, vjp = jax.vjp(lambda a, b: precision.einsum(spec, a, b, jnp.bfloat16), q, k)
    d_q, d_k = vjp(jnp.asarray(g))
    np.testing.assert_allclose(out, np.einsum(spec, bf16(q), bf16(k)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        d_q, np.einsum("bhqk,bkhd->bqhd", bf16(g), bf16(k)), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        d_k, np.einsum("bqhd,bhqk->bkhd", bf16(q), bf16(g)), rtol=1e-5, atol=1e-5
    )


def test_kernels_cast_once_give_bitwise_the_same_logits():
    model, params = bertjax.from_config(HF_CONFIGS["bert"].to_dict(), num_labels=3)
    model16 = build(model.config, 3, dtype=jnp.bfloat16)
    cast = precision.cast_kernels(params, jnp.bfloat16)
    kernels = [
        leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cast) if path[-1].key == "kernel"
    ]
    assert len(kernels) == 2 * 6 + 2  # 6 Dense per layer, the pooler and the classifier
    assert all(k.dtype == jnp.bfloat16 for k in kernels)
    embedding = cast["bert"]["embeddings"]["word_embeddings"]["embedding"]
    assert embedding.dtype == jnp.float32
    ids, mask = _batch()
    np.testing.assert_array_equal(
        model16.apply({"params": cast}, ids, mask).logits,
        model16.apply({"params": params}, ids, mask).logits,
    )


@pytest.mark.parametrize("method", ["lora", "bitfit"])
def test_trainable_stays_float32_and_frozen_bitwise_unchanged_after_steps(method):
    config = peft.LoraConfig(4, 8, targets=("query", "value")) if method == "lora" else None
    hf = HF_CONFIGS["bert"].to_dict()
    model, params = bertjax.from_config(hf, num_labels=2, peft=config, dtype=jnp.bfloat16)
    mask = peft.trainable_mask(params, config or method)
    params = frozen_in_compute_dtype(params, mask, jnp.bfloat16)
    optimizer = make_optimizer(OPTIM, 10)
    state = init_state(params, mask, optimizer)
    frozen_before = jax.tree_util.tree_map(np.asarray, state.frozen)
    trainable_before = jax.tree_util.tree_map(np.asarray, state.trainable)
    step = make_train_step(model, optimizer)
    ids, mask_ids = _batch()
    batch = dict(
        input_ids=ids,
        attention_mask=mask_ids,
        token_type_ids=jnp.zeros_like(ids),
        labels=jnp.array([0, 1]),
        weights=jnp.ones(2),
    )
    batch = jax.tree_util.tree_map(lambda x: x[None], batch)
    keys = jax.random.split(jax.random.key(0), 1)
    for _ in range(3):
        state, metrics = step(state, batch, keys)
    assert np.isfinite(metrics["loss"]).all()
    frozen_dtypes = {x.dtype for x in jax.tree_util.tree_leaves(state.frozen)}
    assert frozen_dtypes == {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)}  # kernels, rest
    frozen_after = jax.tree_util.tree_leaves(state.frozen)
    for before, after in zip(jax.tree_util.tree_leaves(frozen_before), frozen_after, strict=True):
        assert before.dtype == after.dtype
        np.testing.assert_array_equal(before, after)
    trained = jax.tree_util.tree_leaves(state.trainable)
    assert all(x.dtype == jnp.float32 for x in trained)
    assert all(
        x.dtype == jnp.float32
        for x in jax.tree_util.tree_leaves(state.opt_state)
        if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
    )
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(trainable_before), trained, strict=True)
    ]
    assert sum(changed) > len(changed) // 2


class _Device:
    def __init__(self, platform, compute_capability=None):
        self.platform, self.compute_capability = platform, compute_capability


def test_auto_dtype_follows_the_hardware():
    cpu = _Device("cpu")
    assert (
        native_bfloat16(cpu, "flags : fpu sse2 avx512f avx512_bf16 amx_tile") == "CPU avx512_bf16"
    )
    assert native_bfloat16(cpu, "flags : fpu sse2 avx512f amx_bf16") == "CPU amx_bf16"
    assert native_bfloat16(cpu, "flags : fpu sse2 avx2 avx512f") is None
    assert native_bfloat16(_Device("gpu", "8.0")) == "GPU sm80"
    assert native_bfloat16(_Device("gpu", "9.0")) == "GPU sm90"
    assert native_bfloat16(_Device("gpu", "7.5")) is None
    assert native_bfloat16(_Device("tpu")) == "TPU"
    assert compute_dtype("float32") == "float32" and compute_dtype("bfloat16") == "bfloat16"
    if jax.devices()[0].platform == "cpu":  # this machine's own flags, read here
        proc = Path("/proc/cpuinfo")
        flags = set(proc.read_text().split()) if proc.exists() else set()
        native = bool(flags & {"avx512_bf16", "amx_bf16"})
        assert compute_dtype("auto") == ("bfloat16" if native else "float32")
    with pytest.raises(ValueError, match="dtype 'float16' unknown"):
        compute_dtype("float16")
    assert precision.describe_dtype("float32") == "float32"
    auto = precision.describe_dtype("auto")  # what a run logs at start
    reason = native_bfloat16() or "no native bfloat16 matmuls"
    assert auto == f"auto: {compute_dtype('auto')} ({reason})"


def test_auto_is_the_default_and_runs_saved_before_keep_float32(tmp_path, monkeypatch):
    """ "auto" is the default; a run folder written before (no dtype in config.json) trained
    in float32 and still reads as float32; a saved "float32" and the "auto" default count as
    the same config exactly where auto resolves to float32."""
    import json

    from bertjax import runs
    from bertjax.train import defaults

    assert defaults.get_config().dtype == "auto"
    old = runs.config_dict(defaults.get_config())
    del old["dtype"]
    (tmp_path / runs.CONFIG_FILE).write_text(json.dumps(old))
    saved = runs.saved_config(tmp_path)
    assert saved["dtype"] == "float32"
    now = runs.config_dict(defaults.get_config())
    for here, expected in (("float32", []), ("bfloat16", ["dtype: 'float32' -> 'auto'"])):
        resolved = {"auto": here, "float32": "float32", "bfloat16": "bfloat16"}
        monkeypatch.setattr(precision, "compute_dtype", resolved.__getitem__)
        assert runs.differences(saved, now) == expected
    assert runs.differences({"dtype": "float32"}, {"dtype": "bfloat16"}) == [
        "dtype: 'float32' -> 'bfloat16'"
    ]


def test_the_host_evaluation_loss_is_the_train_steps_loss():
    """evaluate.mean_loss (NumPy, no compile) is steps.loss_fn at unit weights."""
    from bertjax.train.evaluate import mean_loss
    from bertjax.train.steps import loss_fn

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(7, 3)).astype(np.float32) * 4, rng.integers(0, 3, 7)
    ones = np.ones(7, np.float32)
    assert mean_loss(logits, labels) == pytest.approx(float(loss_fn(logits, labels, ones)), 1e-6)
    scores, targets = rng.normal(size=(7, 1)).astype(np.float32), rng.normal(size=7)
    expected = float(loss_fn(scores, targets.astype(np.float32), ones))
    assert mean_loss(scores, targets) == pytest.approx(expected, 1e-5)
