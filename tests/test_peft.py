"""peft: masks and counts, LoRA/adapter invariants, real freezing, merge, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import bertjax
import peft
from bertjax.train.optim import count_moments, make_optimizer
from bertjax.train.steps import init_state, make_train_step, run_state
from tests.conftest import TINY
from tests.test_model import BERT_BASE, BERT_TINY, ROBERTA_BASE, abstract_params

TINY_BERT = dict(TINY, model_type="bert")
TINY_ROBERTA = dict(TINY, model_type="roberta", pad_token_id=1, max_position_embeddings=42)


def test_bitfit_counts_bert_tiny():
    params = abstract_params(BERT_TINY, num_labels=2)
    assert peft.count(params, peft.bitfit_mask(params, train_head=False)) == 3_074
    assert peft.count(params, peft.bitfit_mask(params, train_head=True)) == 3_330
    only = peft.bitfit_mask(params, train_head=False, only="query|intermediate")
    assert peft.count(params, only) == 2 * (128 + 512)


def test_bitfit_mask_on_a_plain_mlp():
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(8, name="hidden")(x))
            return nn.Dense(2, name="out")(x)

    params = MLP().init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    mask = peft.bitfit_mask(params, head=("out",))
    assert mask == {
        "hidden": {"kernel": False, "bias": True},
        "out": {"kernel": True, "bias": True},
    }
    assert peft.count(params, peft.bitfit_mask(params, train_head=False)) == 8 + 2


@pytest.mark.parametrize("rank, expected", [(1, 19_970), (4, 75_266), (16, 296_450)])
def test_lora_query_counts_bert_base(rank, expected):
    config = peft.LoraConfig(rank=rank, alpha=rank, targets=("query",))
    params = abstract_params(BERT_BASE, num_labels=2, peft=config)
    assert peft.count(params, peft.trainable_mask(params, config)) == expected


def test_lora_counts_roberta_base():
    config = peft.LoraConfig(rank=32, alpha=32, targets=("query", "value"))
    params = abstract_params(ROBERTA_BASE, num_labels=2, peft=config)
    assert peft.count(params, peft.trainable_mask(params, config)) == 1_771_778


def test_houlsby_adapter_counts_bert_base():
    config = peft.AdapterConfig("houlsby", reduction_factor=16)
    params = abstract_params(BERT_BASE, num_labels=2, peft=config)
    L, H, m = 12, 768, 768 // 16  # noqa: N806
    adapters = 2 * L * (2 * H * m + m + H)
    layer_norms = (2 * L + 1) * 2 * H  # every LayerNorm (scale + bias), embeddings' included
    head = H * 2 + 2
    assert adapters == 1_789_056
    mask = peft.trainable_mask(params, config)
    assert peft.count(params, mask) == adapters + layer_norms + head == 1_828_994
    pfeiffer = abstract_params(BERT_BASE, 2, peft.AdapterConfig("pfeiffer"))
    assert peft.count(pfeiffer) - peft.count(abstract_params(BERT_BASE, 2)) == adapters // 2


def test_lora_targets_by_name_and_regex():
    lora = peft.LoraConfig(2, 4, targets=("attention/output/dense", "intermediate.dense"))
    params = abstract_params(TINY_BERT, 2, lora)
    layer = params["bert"]["encoder"]["layer"]["0"]
    assert (
        "lora" in layer["attention"]["output"]["dense"] and "lora" in layer["intermediate"]["dense"]
    )
    assert (
        "lora" not in layer["output"]["dense"] and "lora" not in layer["attention"]["self"]["query"]
    )
    regex = peft.LoraConfig(2, 4, targets=r".*layer/1/attention/self/(key|value)")
    params = abstract_params(TINY_BERT, 2, regex)
    assert peft.count(params, peft.trainable_mask(params, "lora")) == 2 * (32 * 2 + 2 * 32) + (
        32 * 2 + 2
    )


@pytest.mark.parametrize(
    "method",
    [
        peft.LoraConfig(4, 8, targets=("query", "value", "intermediate.dense")),
        peft.AdapterConfig("houlsby", 8),
        peft.AdapterConfig("pfeiffer", 4, "relu"),
    ],
)
def test_peft_model_at_init_equals_base(method, tiny_bert_dir):
    ids = jnp.array([[2, 5, 7, 9, 3, 0], [2, 8, 3, 0, 0, 0]])
    mask = (ids > 0).astype(jnp.int32)
    base, base_params = bertjax.from_pretrained(tiny_bert_dir, num_labels=3)
    model, params = bertjax.from_pretrained(tiny_bert_dir, num_labels=3, peft=method)
    want = base.apply({"params": base_params}, ids, mask).logits
    np.testing.assert_array_equal(model.apply({"params": params}, ids, mask).logits, want)


def _optim_cfg(lr=1e-2):
    return ml_collections.ConfigDict(
        dict(
            lr=lr,
            weight_decay=0.01,
            warmup_ratio=0.0,
            schedule="constant",
            grad_clip=1.0,
            accumulate=1,
        )
    )


def _train(model, params, mask, steps=3):
    optimizer = make_optimizer(_optim_cfg(), total_steps=steps)
    state = init_state(params, mask, optimizer)
    step = make_train_step(model, optimizer)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        ids = rng.integers(3, 99, size=(4, 10)).astype(np.int32)
        batch = dict(
            input_ids=ids,
            attention_mask=np.ones_like(ids),
            token_type_ids=np.zeros_like(ids),
            labels=rng.integers(0, 2, size=4).astype(np.int32),
            weights=np.ones(4, np.float32),
        )
        one_run = {key: value[None] for key, value in batch.items()}  # a group of K = 1
        state, metrics = step(state, one_run, jax.random.key(0)[None])
    assert np.isfinite(metrics["loss"]).all()
    return run_state(state, 0)


@pytest.mark.parametrize("hf_config", [TINY_BERT, TINY_ROBERTA], ids=["bert", "roberta"])
@pytest.mark.parametrize(
    "method",
    [
        "full",
        "head",
        "bitfit",
        peft.LoraConfig(2, 4, 0.1),
        peft.LoraConfig(2, 4, 0.1, targets=("value", "output.dense"), use_dora=True),
        peft.IA3Config(),
        peft.AdapterConfig("houlsby", 8),
    ],
    ids=["full", "head", "bitfit", "lora", "dora", "ia3", "adapter"],
)
def test_frozen_bitwise_trainable_changed_state_only_for_trainable(hf_config, method):
    peft_config = method if not isinstance(method, str) else None
    model, params = bertjax.from_config(hf_config, num_labels=2, peft=peft_config)
    start = jax.tree_util.tree_map(np.array, params)
    mask = peft.trainable_mask(params, method)
    state = _train(model, params, mask)
    final = jax.device_get(state.params)
    changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b), start, final)
    assert changed == mask  # frozen leaves bitwise equal, every trainable leaf moved
    assert count_moments(state.opt_state) == 2 * peft.count(params, mask)
    if method == "head" and hf_config is TINY_ROBERTA:
        assert peft.count(params, mask) == 32 * 32 + 32 + 32 * 2 + 2


def test_freeze_optimizer_gives_zero_updates_and_no_state():
    model, params = bertjax.from_config(TINY_BERT, num_labels=2)
    mask = peft.bitfit_mask(params)
    tx = peft.freeze(make_optimizer(_optim_cfg(), 10), mask)
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    nonzero = jax.tree_util.tree_map(lambda u: bool(jnp.any(u != 0)), updates)
    assert nonzero == mask
    assert count_moments(state) == 2 * peft.count(params, mask)


def test_merge_lora_after_training_matches_unmerged():
    lora = peft.LoraConfig(4, 16, targets=("query", "value", "output.dense"))
    model, params = bertjax.from_config(TINY_BERT, num_labels=2, peft=lora)
    state = _train(model, params, peft.trainable_mask(params, lora), steps=4)
    trained = state.params
    merged = peft.merge_lora(trained, lora)
    plain, _ = bertjax.from_config(TINY_BERT, num_labels=2)
    ids = jnp.array([[2, 5, 7, 9, 3], [2, 8, 3, 4, 4]])
    want = model.apply({"params": trained}, ids).logits
    got = plain.apply({"params": merged}, ids).logits
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (
        np.abs(np.asarray(want) - np.asarray(model.apply({"params": params}, ids).logits)).max()
        > 1e-4
    )


def test_split_and_combine_round_trip():
    model, params = bertjax.from_config(TINY_BERT, num_labels=2)
    mask = peft.bitfit_mask(params)
    small = peft.split(params, mask)
    assert peft.count(small) == peft.count(params, mask)
    assert all(
        p[-1] == "bias" or p[0] == "classifier"
        for p in jax.tree_util.tree_flatten_with_path(small)[0]
        for p in [tuple(k.key for k in p[0])]
    )
    rebuilt = peft.combine(params, small)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, rebuilt, params))
    trainable, frozen = peft.partition(params, mask)
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(np.array_equal, peft.combine(frozen, trainable), params)
    )


# ---- bad input ----


def test_lora_target_matching_nothing_lists_names():
    with pytest.raises(ValueError) as err:
        bertjax.from_config(TINY_BERT, 2, peft=peft.LoraConfig(2, 4, targets=("qkv",)))
    message = str(err.value)
    assert "'qkv'" in message and "query" in message and "intermediate/dense" in message


@pytest.mark.parametrize("rank", [0, -1, 1.5])
def test_lora_rank_must_be_positive_integer(rank):
    with pytest.raises(ValueError, match="rank"):
        peft.LoraConfig(rank=rank, alpha=8)


def test_reduction_factor_must_divide_hidden():
    with pytest.raises(ValueError, match="reduction_factor 5 does not divide hidden size 32"):
        bertjax.from_config(TINY_BERT, 2, peft=peft.AdapterConfig(reduction_factor=5))


def test_mask_not_matching_params():
    _, params = bertjax.from_config(TINY_BERT, num_labels=2)
    mask = peft.bitfit_mask(params)
    del mask["classifier"]
    with pytest.raises(ValueError, match="mask does not match params.*classifier"):
        peft.split(params, mask)
    with pytest.raises(ValueError, match="unknown method"):
        peft.trainable_mask(params, "prefix")


# ---- masks say what they select ----


def test_lora_mask_selects_exactly_its_targets():
    both = peft.LoraConfig(2, 4, targets=("query", "value"))
    params = abstract_params(TINY_BERT, 2, both)
    only_query = peft.LoraConfig(2, 4, targets=("query",))
    selected = peft.split(params, peft.trainable_mask(params, only_query))
    names = {
        "/".join(k.key for k in p) for p, _ in jax.tree_util.tree_flatten_with_path(selected)[0]
    }
    layer = "bert/encoder/layer/{}/attention/self/query/lora/{}"
    want = {layer.format(i, f) for i in "01" for f in "ab"} | {
        "classifier/kernel",
        "classifier/bias",
    }
    assert names == want
    # TINY: hidden 32, rank 2 -> a [32,2] + b [2,32] per layer, 2 layers, head 32*2+2
    assert peft.count(params, peft.trainable_mask(params, only_query)) == 2 * 128 + 66
    assert peft.count(params, peft.trainable_mask(params, both)) == 4 * 128 + 66


@pytest.mark.parametrize(
    "head, expected",
    [
        (("classifier",), 4 * 128 + 66),
        (("classifier/bias",), 4 * 128 + 2),
        ((), 4 * 128),
    ],
)
def test_head_given_as_paths(head, expected):
    lora = peft.LoraConfig(2, 4, targets=("query", "value"))
    params = abstract_params(TINY_BERT, 2, lora)
    assert peft.count(params, peft.trainable_mask(params, lora, head=head)) == expected


@pytest.mark.parametrize("head, expected", [("all", 3_330), ("bias", 3_074)])
def test_bitfit_head_option_bert_tiny(head, expected):
    # BERT-tiny: hidden 128, intermediate 512, 2 layers, 2 labels. Biases:
    #   embeddings LayerNorm 128
    #   per layer: query/key/value/attention-output 4*128 + attention LayerNorm 128
    #              + intermediate 512 + output 128 + output LayerNorm 128 = 1,408; x2 = 2,816
    #   pooler 128, classifier 2  -> 128 + 2,816 + 128 + 2 = 3,074 ("bias": the head's bias only)
    #   "all" adds the classifier kernel 128*2 = 256 -> 3,330
    params = abstract_params(BERT_TINY, num_labels=2)
    assert peft.count(params, peft.trainable_mask(params, peft.BitFitConfig(head))) == expected
    with pytest.raises(ValueError, match="BitFit head must be 'all' or 'bias', got 'kernel'"):
        peft.BitFitConfig("kernel")
