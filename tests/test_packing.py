"""Sequence packing: packed rows give the same logits, loss, gradients and metrics as one
example per row; layouts fit every batch, each example once.

All in deterministic mode: hashed dropout draws each mask element from its index in the
tensor, so packed and unpacked rows see different (equally distributed) dropout masks.
"""

import dataclasses

import datasets
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import peft
from bertjax.data import batching, packing
from bertjax.hub.pretrained import from_pretrained
from bertjax.models import families
from bertjax.models.families import build, model_config_from_hf
from bertjax.train import evaluate, steps
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import init_state
from tests.conftest import TINY

FIXTURES = ["tiny_bert_dir", "tiny_roberta_dir", "tiny_distilbert_dir", "tiny_electra_dir"]
PEFT = {
    "full": None,
    "lora": peft.LoraConfig(4, 8.0, 0.0, ".*/(query|value|q_lin|v_lin|query_proj|value_proj|Wqkv)"),
    "adapter": peft.AdapterConfig("houlsby", 4, "gelu"),
}
# Tiny random DeBERTa-v2/v3 and ModernBERT (transformers config fields), dropout off so the
# train step's loss compares with the unpacked one. Rows of up to 128 tokens hold examples of
# up to 30, so every position-dependent part must restart per example to match.
TINY_RELATIVE = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, initializer_range=0.2)
DEBERTA = dict(
    **TINY_RELATIVE,
    num_hidden_layers=2,
    intermediate_size=37,
    max_position_embeddings=128,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    relative_attention=True,
    norm_rel_ebd="layer_norm",
)
FAMILY_CONFIGS = {
    # deberta-v3-base's options: relative positions only, in log buckets past distance 4.
    "deberta_v3": dict(
        DEBERTA,
        type_vocab_size=0,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        position_buckets=8,
        max_relative_positions=20,
        share_att_key=True,
    ),
    # deberta-v2-xlarge's: absolute positions too, token types, the conv beside layer 0,
    # distances clipped at 6, embeddings narrower than hidden.
    "deberta_v2": dict(
        DEBERTA,
        type_vocab_size=2,
        position_biased_input=True,
        pos_att_type=["p2c", "c2p"],
        max_relative_positions=6,
        conv_kernel_size=3,
        conv_act="gelu",
        embedding_size=24,
    ),
    # ModernBERT-base's options: rotary, a local window of 2 each side, [CLS] pooling.
    "modernbert_cls": dict(
        TINY_RELATIVE,
        num_hidden_layers=3,
        intermediate_size=48,
        global_attn_every_n_layers=3,
        local_attention=4,
        global_rope_theta=1000.0,
        local_rope_theta=50.0,
        pad_token_id=0,
        classifier_pooling="cls",
    ),
    # mean pooling (over each example's own tokens), every bias on, global every 2 layers.
    "modernbert_mean": dict(
        TINY_RELATIVE,
        num_hidden_layers=3,
        intermediate_size=48,
        global_attn_every_n_layers=2,
        local_attention=4,
        pad_token_id=0,
        classifier_pooling="mean",
        norm_bias=True,
        attention_bias=True,
        mlp_bias=True,
        classifier_bias=True,
    ),
}


def _save_family(name: str, tmp_path_factory):
    """A tiny random DeBERTa or ModernBERT classifier (3 labels) saved by transformers."""
    import torch
    from transformers import AutoModelForSequenceClassification, DebertaV2Config, ModernBertConfig

    kind = DebertaV2Config if name.startswith("deberta") else ModernBertConfig
    torch.manual_seed(0)
    config = kind(**FAMILY_CONFIGS[name], num_labels=3)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    folder = tmp_path_factory.mktemp(name)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_deberta_v3_dir(tmp_path_factory):
    return _save_family("deberta_v3", tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_deberta_v2_dir(tmp_path_factory):
    return _save_family("deberta_v2", tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_modernbert_cls_dir(tmp_path_factory):
    return _save_family("modernbert_cls", tmp_path_factory)


@pytest.fixture(scope="module")
def tiny_modernbert_mean_dir(tmp_path_factory):
    return _save_family("modernbert_mean", tmp_path_factory)


RELATIVE = [f"tiny_{name}_dir" for name in FAMILY_CONFIGS]


def _dataset(num: int, pad_id: int, seed: int = 0, longest: int = 30) -> datasets.Dataset:
    """Random token ids (never pad_id), lengths 3..longest, pairs' second halves of type 1."""
    rng = np.random.default_rng(seed)
    ids, types = [], []
    for _ in range(num):
        length = int(rng.integers(3, longest + 1))
        tokens = rng.integers(3, 99, length)
        tokens[tokens == pad_id] = 5
        ids.append(tokens.tolist())
        split = int(rng.integers(1, length))
        types.append([0] * split + [1] * (length - split))
    labels = rng.integers(0, 2, num).tolist()
    return datasets.Dataset.from_dict({"input_ids": ids, "token_type_ids": types, "label": labels})


def _model(request, fixture: str, method: str):
    """A tiny model whose every weight is random (so LoRA B and adapters are not zero)."""
    folder = request.getfixturevalue(fixture)
    num_labels = 2 if fixture == "tiny_roberta_dir" else 3
    model, params = from_pretrained(folder, num_labels, peft=PEFT[method], announce_new=False)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return model, jax.tree_util.tree_unflatten(tree, noisy)


def _type_free(dataset: datasets.Dataset, fixture: str) -> datasets.Dataset:
    """RoBERTa's tiny config has one token type: all zeros."""
    if fixture != "tiny_roberta_dir":
        return dataset
    return dataset.map(lambda ex: {"token_type_ids": [0] * len(ex["input_ids"])})


def _pad_id(fixture: str) -> int:
    return 1 if fixture == "tiny_roberta_dir" else 0


def _unpacked(model, params, dataset, pad_id: int) -> np.ndarray:
    """Reference: the plain call (input_ids, attention_mask, token_type_ids) on one example
    per row, right-padded: [n, num_labels]."""
    cols = batching._columns(dataset)
    n = len(dataset)
    batch = batching.pad_batch(cols, np.arange(n), int(cols["lengths"].max()), n, pad_id)
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return np.asarray(model.apply({"params": params}, *args).logits)


# Every PEFT method on BERT and RoBERTa; LoRA on the other families (their own attention and
# heads; PEFT acts on tokens alike whatever the family).
CASES = [(f, m) for f in FIXTURES[:2] for m in PEFT] + [(f, "lora") for f in FIXTURES[2:]]
# DeBERTa and ModernBERT (issue #25): relative / rotary positions, windows, conv and pooling
# per example; full fine-tuning on each option set, LoRA and adapters on one of each family.
CASES += [(f, "full") for f in RELATIVE]
CASES += [
    (f, m) for f in ("tiny_deberta_v2_dir", "tiny_modernbert_cls_dir") for m in PEFT if m != "full"
]


@pytest.mark.parametrize(("fixture", "method"), CASES)
def test_packed_logits_equal_unpacked(request, fixture, method):
    model, params = _model(request, fixture, method)
    pad_id = _pad_id(fixture)
    dataset = _type_free(_dataset(24, pad_id), fixture)
    expected = _unpacked(model, params, dataset, pad_id)
    cols = batching._columns(dataset)
    got = np.full_like(expected, np.nan)
    batches = list(packing.eval_batches(cols, 8, pad_id, 40))
    assert len({b["input_ids"].shape for b in batches}) == 1
    assert max(int(b["segment_ids"].max()) for b in batches) > 1  # rows hold several examples
    for batch in batches:
        inputs = {k: jnp.asarray(batch[k]) for k in evaluate.MODEL_INPUTS}
        logits = np.asarray(steps._logits(model, params, inputs, deterministic=True))
        index = batch["index"].reshape(-1)
        got[index[index >= 0]] = logits[index >= 0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def _value_and_grads(logits_of, params, mask, inputs, batch):
    """The loss of logits_of(params, inputs) on batch's labels and weights, and its gradients
    with respect to the trainable leaves (mask), in one jitted program."""
    trainable, frozen = peft.partition(params, mask)
    labels, weights = jnp.asarray(batch["labels"]), jnp.asarray(batch["weights"])

    def objective(trainable, frozen, inputs):
        return steps.loss_fn(logits_of(peft.combine(frozen, trainable), inputs), labels, weights)

    return jax.jit(jax.value_and_grad(objective))(trainable, frozen, inputs)


def _loss_and_grads(model, params, mask, batch):
    inputs = {k: jnp.asarray(batch[k]) for k in evaluate.MODEL_INPUTS}
    return _value_and_grads(
        lambda p, x: steps._logits(model, p, x, True), params, mask, inputs, batch
    )


@pytest.mark.parametrize("method", list(PEFT))
@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_packed_loss_and_gradients_equal_unpacked(request, fixture, method):
    model, params = _model(request, fixture, method)
    mask = peft.trainable_mask(params, "full" if method == "full" else method)
    pad_id = _pad_id(fixture)
    dataset = _type_free(_dataset(40, pad_id, seed=3), fixture)
    cols = batching._columns(dataset)
    packed = next(packing.train_batches(cols, 16, seed=0, epoch=1, pad_id=pad_id))
    index = packed["index"][packed["weights"] > 0]
    assert len(index) == 16 and packed["segment_ids"].max() > 1
    plain = batching.pad_batch(cols, index, 32, 16, pad_id)
    loss, grads = _loss_and_grads(model, params, mask, packed)
    plain_loss, plain_grads = _loss_and_grads(model, params, mask, plain)
    assert abs(float(loss) - float(plain_loss)) < 1e-6
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)


def _plain_loss_and_grads(model, params, mask, batch):
    """Reference: the loss of the plain call (input_ids, attention_mask, token_type_ids, no
    packed inputs) on one example per row, and its gradients."""
    args = [jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
    return _value_and_grads(
        lambda p, x: model.apply({"params": p}, *x).logits, params, mask, args, batch
    )


@pytest.mark.parametrize("fixture", RELATIVE)
def test_packed_train_steps_of_relative_families(request, fixture):
    """DeBERTa and ModernBERT (no dropout): a packed batch's loss and gradients equal the
    plain unpacked call's, and the real train step (make_train_step) runs on packed rows:
    step 0's loss is that same loss and three steps on the batch lower it."""
    model, params = _model(request, fixture, "full")
    mask = peft.trainable_mask(params, "full")
    dataset = _dataset(40, 0, seed=3)
    cols = batching._columns(dataset)
    packed = next(packing.train_batches(cols, 16, seed=0, epoch=1, pad_id=0))
    index = packed["index"][packed["weights"] > 0]
    assert len(index) == 16 and packed["segment_ids"].max() > 1
    plain = batching.pad_batch(cols, index, 32, 16, 0)
    loss, grads = _loss_and_grads(model, params, mask, packed)
    plain_loss, plain_grads = _plain_loss_and_grads(model, params, mask, plain)
    assert abs(float(loss) - float(plain_loss)) < 1e-6
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)

    optim = dict(lr=1e-3, weight_decay=0.0, warmup_ratio=0.0, schedule="constant")
    optimizer = make_optimizer(
        ml_collections.ConfigDict(dict(optim, grad_clip=1.0, accumulate=1)), 3
    )
    state = init_state(params, mask, optimizer)
    step = steps.make_train_step(model, optimizer)
    one_run = {k: jnp.asarray(v)[None] for k, v in packed.items()}  # a group of K = 1
    losses = []
    for _ in range(3):
        state, metrics = step(state, one_run, jax.random.key(0)[None])
        losses.append(float(metrics["loss"][0]))
    assert abs(losses[0] - float(plain_loss)) < 1e-5
    assert losses[2] < losses[1] < losses[0], losses


def test_eval_metrics_identical(request):
    model, params = _model(request, "tiny_bert_dir", "lora")
    trainable, frozen = peft.partition(params, peft.trainable_mask(params, "lora"))
    dataset = _dataset(50, 0, seed=5)
    step = steps.make_eval_step(model)
    buckets = batching.bucket_lengths(32)
    results = [
        evaluate.evaluate(step, trainable, frozen, dataset, 16, buckets, 0, 3, packing=packing_)
        for packing_ in (False, True)
    ]
    (plain, plain_logits), (packed, packed_logits) = results
    np.testing.assert_allclose(packed_logits, plain_logits, atol=1e-5, rtol=0)
    assert abs(plain.pop("loss") - packed.pop("loss")) < 1e-6
    assert plain == packed


def test_train_layout_fits_every_epoch_each_example_once():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(1 / 12, 1003) + 2, 64)
    dataset = datasets.Dataset.from_dict(
        {"input_ids": [[7] * int(n) for n in lengths], "label": [0] * len(lengths)}
    )
    cols = batching._columns(dataset)
    layout = packing.train_layout(lengths, 32, 64)
    # the bound: every stratum's example fits the longest any epoch can put there
    assert (np.asarray(layout.row_of) < layout.rows).all()
    for epoch in range(3):
        plan = packing.train_plan(lengths, 32, seed=4, epoch=epoch)
        assert plan.shape == (1003 // 32, 32) and len(np.unique(plan)) == plan.size
        # stratified: slot j of every batch holds the j-th length quantile
        assert (np.diff(lengths[plan].mean(axis=0)) >= 0).all()
        shapes, seen = set(), []
        for batch in packing.train_batches(cols, 32, seed=4, epoch=epoch, pad_id=0, max_length=64):
            shapes.add(batch["input_ids"].shape)
            seen.append(batch["index"][batch["weights"] > 0])
            assert (batch["attention_mask"].sum() == lengths[seen[-1]].sum()).all()
        assert len(shapes) == 1 and sorted(np.concatenate(seen)) == sorted(plan.ravel())


def test_packed_rows_by_hand():
    """Three examples of 3, 2 and 4 tokens in rows of 8: positions restart, types kept."""
    dataset = datasets.Dataset.from_dict(
        {
            "input_ids": [[10, 11, 12], [20, 21], [30, 31, 32, 33]],
            "token_type_ids": [[0, 0, 1], [0, 1], [0, 0, 1, 1]],
            "label": [1, 0, 2],
        }
    )
    cols = batching._columns(dataset)
    layout = packing.Layout(length=8, rows=2, per_row=2)
    batch = packing.pack(cols, np.array([2, 0, 1]), np.array([0, 0, 1]), layout, pad_id=9)
    np.testing.assert_array_equal(
        batch["input_ids"], [[30, 31, 32, 33, 10, 11, 12, 9], [20, 21, 9, 9, 9, 9, 9, 9]]
    )
    np.testing.assert_array_equal(batch["segment_ids"][0], [1, 1, 1, 1, 2, 2, 2, 0])
    np.testing.assert_array_equal(batch["position_ids"][0], [0, 1, 2, 3, 0, 1, 2, 0])
    np.testing.assert_array_equal(batch["token_type_ids"][0], [0, 0, 1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(batch["cls_index"], [[0, 4], [0, 0]])
    np.testing.assert_array_equal(batch["labels"], [[2, 1], [0, 0]])
    np.testing.assert_array_equal(batch["weights"], [[1, 1], [1, 0]])
    np.testing.assert_array_equal(batch["index"], [[2, 0], [1, -1]])


def test_family_without_packing_refused(monkeypatch):
    """Packing is a fact of the family (Family.packing), for the bare model and its wrapper."""
    config = model_config_from_hf(dict(TINY, model_type="bert"))
    lora = build(config, 2, peft.LoraConfig(2, 4.0))
    assert packing.enabled(True, lora) is True
    bert = families.FAMILIES["bert"]
    monkeypatch.setitem(families.FAMILIES, "bert", dataclasses.replace(bert, packing=False))
    assert packing.enabled(False, lora) is False
    with pytest.raises(ValueError, match="bert cannot pack sequences.*data.packing=False"):
        packing.enabled(True, lora)
    with pytest.raises(ValueError, match="data.packing=False"):
        packing.enabled(True, build(config, 2))
