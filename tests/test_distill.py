"""Knowledge distillation (issue #29): compact students, the distillation loss, teacher outputs."""

import json
from types import SimpleNamespace

import datasets
import jax
import numpy as np
import pytest
import torch

import bertjax
import peft
from bertjax.data.batching import SOFT_TARGETS
from bertjax.hub import pretrained
from bertjax.train import finish
from tests.conftest import TINY, TINY_DISTILBERT, TINY_ELECTRA

KEEP = (0, 2)  # of 4 layers: DistilBERT's "one layer out of two"
TOL = 1e-5


def _ours(folder, ids, mask, **kwargs):
    model, params = bertjax.from_pretrained(folder, announce_new=False, **kwargs)
    out = model.apply({"params": params}, ids, mask, np.zeros_like(ids), deterministic=True)
    return model, params, np.asarray(out.logits)


def _theirs(model, ids, mask) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()


def _batch(vocab: int = 99, seed: int = 0):
    """Padded batch [3, 10] of lengths 10, 6, 3 ([CLS]=1 … [SEP]=2)."""
    ids = np.random.default_rng(seed).integers(3, vocab, size=(3, 10))
    mask = (np.arange(10) < np.array([[10], [6], [3]])).astype(np.int64)
    ids[:, 0] = 1
    ids[mask == 0] = 0
    return ids, mask


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(**{**TINY, "num_hidden_layers": 4, "initializer_range": 0.2}, num_labels=3)
    return BertForSequenceClassification(config).eval(), lambda m: m.bert.encoder


def _tiny_distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(**{**TINY_DISTILBERT, "n_layers": 4}, num_labels=3)
    return DistilBertForSequenceClassification(config).eval(), lambda m: m.distilbert.transformer


def _tiny_modernbert():
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=4,  # global, local, local, global
        num_attention_heads=4,
        intermediate_size=48,
        local_attention=4,  # a 5-token window: local and global layers differ on 10 tokens
        global_attn_every_n_layers=3,
        pad_token_id=0,
        num_labels=3,
        initializer_range=0.2,
    )
    config._attn_implementation = "eager"
    return ModernBertForSequenceClassification(config).eval(), lambda m: m.model


def _tiny_electra():
    from transformers import ElectraConfig, ElectraForSequenceClassification

    torch.manual_seed(0)
    config = ElectraConfig(**{**TINY_ELECTRA, "num_hidden_layers": 4}, num_labels=3)
    return ElectraForSequenceClassification(config).eval(), lambda m: m.electra.encoder


def _tiny_deberta():
    """deberta-v3's options (relative positions in log buckets, shared keys)."""
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    torch.manual_seed(0)
    config = DebertaV2Config(
        **{**TINY, "num_hidden_layers": 4, "type_vocab_size": 0, "initializer_range": 0.2},
        num_labels=3,
        position_biased_input=False,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=8,
        max_relative_positions=20,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
    )
    return DebertaV2ForSequenceClassification(config).eval(), lambda m: m.deberta.encoder


def _pruned(model, stack, keep):
    """transformers' own model with only the `keep` layers: the reference."""
    import copy

    pruned = copy.deepcopy(model)
    holder = stack(pruned)
    name = "layers" if hasattr(holder, "layers") else "layer"
    setattr(holder, name, torch.nn.ModuleList([getattr(holder, name)[i] for i in keep]))
    return pruned


FAMILIES = {
    "bert": _tiny_bert,
    "deberta-v2": _tiny_deberta,
    "distilbert": _tiny_distilbert,
    "electra": _tiny_electra,
    "modernbert": _tiny_modernbert,
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_kept_layers_match_transformers_pruned_and_export_as_a_smaller_checkpoint(family, tmp_path):
    hf_model, stack = FAMILIES[family]()
    # ModernBERT: global, local, global (its own rule for 3 layers would say global, local, local)
    keep = (0, 1, 3) if family == "modernbert" else KEEP
    hf_model.save_pretrained(tmp_path / "full")
    ids, mask = _batch()
    want = _theirs(_pruned(hf_model, stack, keep), ids, mask)

    model, params, got = _ours(tmp_path / "full", ids, mask, num_labels=3, layers=keep)
    np.testing.assert_allclose(got, want, atol=TOL)
    _, _, full = _ours(tmp_path / "full", ids, mask, num_labels=3)
    assert np.abs(full - want).max() > 100 * TOL  # dropping layers changed the outputs

    from transformers import AutoModelForSequenceClassification

    bertjax.save_pretrained(model, params, tmp_path / "student")
    saved = json.loads((tmp_path / "student" / "config.json").read_text())
    count = saved["n_layers"] if family == "distilbert" else saved["num_hidden_layers"]
    assert count == len(keep)
    if family == "modernbert":  # each kept layer keeps its kind
        assert saved["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "student")
    loaded.config._attn_implementation = "eager"
    np.testing.assert_allclose(_theirs(loaded.eval(), ids, mask), got, atol=TOL)


@pytest.mark.parametrize(
    "layers, message",
    [
        ((), "layers=() is empty"),
        ((0, 4), "layers=(0, 4) is out of range: layers are 0..3 (the checkpoint has 4)"),
        ((-1, 2), "layers=(-1, 2) is out of range"),
        ((1, 1), "layers=(1, 1) repeats a layer"),
        ((2, 0), "layers=(2, 0) is not sorted"),
        ((0.5,), "layers=(0.5,) must hold integers"),
    ],
)
def test_bad_layers_fail_in_one_line_before_weights_load(layers, message, tmp_path, monkeypatch):
    hf_model, _ = _tiny_bert()
    hf_model.save_pretrained(tmp_path)

    def never(folder):
        raise AssertionError("weights read before the layers were checked")

    monkeypatch.setattr(pretrained, "read_state_dict", never)
    with pytest.raises(ValueError) as err:
        bertjax.from_pretrained(tmp_path, 3, layers=layers)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_modernbert_selection_must_keep_its_different_first_layer(tmp_path):
    hf_model, _ = _tiny_modernbert()
    hf_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"layers=\(1, 3\) must keep layer 0: modernbert's"):
        bertjax.from_pretrained(tmp_path, 3, layers=(1, 3))


@pytest.mark.slow
def test_three_layer_minilm_student_exports_to_transformers(minilm_path, tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModelForSequenceClassification

    ids, mask = _batch(vocab=30522, seed=1)
    model, params, got = _ours(minilm_path, ids, mask, num_labels=2, layers=(0, 2, 4))
    bertjax.save_pretrained(model, params, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["num_hidden_layers"] == 3
    # student layer 2 is MiniLM's layer 4, byte for byte
    student = load_file(tmp_path / "model.safetensors")
    original = pretrained.read_state_dict(minilm_path)
    key = "encoder.layer.{}.attention.self.query.weight"
    teacher_key = next(k for k in original if k.endswith(key.format(4)))
    np.testing.assert_array_equal(student[f"bert.{key.format(2)}"], original[teacher_key])
    assert not any(".layer.3." in k for k in student)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(_theirs(loaded, ids, mask), got, atol=TOL)
    assert jax.tree_util.tree_leaves(params)[0].dtype == np.float32


# ---- the distillation loss -------------------------------------------------------------

STUDENT = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3], [-3.0, 4.0, 1.0], [9.0, 9.0, 9.0]])
TEACHER = np.array([[1.0, 0.0, -1.0], [3.0, -2.0, 0.0], [0.5, 0.5, 2.0], [-50.0, 50.0, 0.0]])
LABELS = np.array([0, 2, 1, 0])
WEIGHTS = np.array([1.0, 1.0, 1.0, 0.0])  # the last example is padding: its huge KL must vanish


def _numpy_kl(student, teacher, weights, temperature) -> float:
    """T² · weighted mean of Σ p_t (log p_t − log p_s), p = softmax(logits / T), in float64."""

    def softmax(x):
        e = np.exp(x / temperature - np.max(x / temperature, axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p_t, p_s = softmax(teacher), softmax(student)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1)
    return temperature**2 * np.sum(kl * weights) / np.sum(weights)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_loss_is_the_hand_computed_kl(temperature):
    from bertjax.train.distill import soft_loss

    args = [np.float32(a) for a in (STUDENT, TEACHER, WEIGHTS)]
    got = float(soft_loss(*args, temperature))
    np.testing.assert_allclose(
        got, _numpy_kl(STUDENT[:3], TEACHER[:3], np.ones(3), temperature), 1e-6
    )
    # packed rows [rows=2, E=2, labels] are the same examples
    packed = [a.reshape(2, 2, *a.shape[1:]) for a in args]
    assert float(soft_loss(*packed, temperature)) == got


def test_soft_loss_values_on_simple_cases():
    from bertjax.train.distill import soft_loss

    same = np.float32([[1.0, 2.0], [0.0, 0.0]])
    ones = np.ones(2, np.float32)
    assert float(soft_loss(same, same, ones, 2.0)) == 0.0  # a student equal to its teacher
    # two classes, T = 1: teacher (0.5, 0.5), student softmax (e/(1+e), 1/(1+e)) on example 1
    student, teacher = np.float32([[1.0, 0.0]]), np.float32([[0.0, 0.0]])
    p = np.e / (1 + np.e)
    want = 0.5 * np.log(0.5 / p) + 0.5 * np.log(0.5 / (1 - p))
    np.testing.assert_allclose(float(soft_loss(student, teacher, ones[:1], 1.0)), want, 1e-6)
    # regression: squared error to the teacher, padding ignored, T unused
    got = soft_loss(
        np.float32([[1.0], [3.0], [7.0]]),
        np.float32([[0.5], [1.0], [0.0]]),
        np.float32([1, 1, 0]),
        3.0,
    )
    np.testing.assert_allclose(float(got), (0.25 + 4.0) / 2, 1e-7)


def test_alpha_mixes_hard_and_soft_and_alpha_one_is_loss_fn_bitwise():
    from bertjax.train.distill import distill_loss
    from bertjax.train.steps import loss_fn

    student, teacher, weights = (np.float32(a) for a in (STUDENT, TEACHER, WEIGHTS))
    labels = LABELS.astype(np.int32)

    def mixed(logits, alpha):
        hard = loss_fn(logits, labels, weights)
        return distill_loss(hard, logits, teacher, weights, alpha=alpha, temperature=2.0)

    def hard(logits):
        return loss_fn(logits, labels, weights)

    def one(logits):
        return mixed(logits, 1.0)

    for fn in (lambda f: f, jax.grad):  # the loss, and its gradient to the student's logits
        got, want = jax.jit(fn(one))(student), jax.jit(fn(hard))(student)
        assert np.asarray(got).tobytes() == np.asarray(want).tobytes()
        assert np.abs(np.asarray(want)).max() > 0

    # α = 0.25: a quarter of the hand-computed cross-entropy, three quarters of T²·KL
    log_p = STUDENT[:3] - np.log(np.exp(STUDENT[:3]).sum(1, keepdims=True))
    cross_entropy = -np.mean(log_p[np.arange(3), LABELS[:3]])
    want = 0.25 * cross_entropy + 0.75 * _numpy_kl(STUDENT[:3], TEACHER[:3], np.ones(3), 2.0)
    np.testing.assert_allclose(float(mixed(student, 0.25)), want, 1e-6)


# ---- teacher outputs ---------------------------------------------------------------------

TEXTS = [
    ("a gripping, funny and moving film",),
    ("dull and far too long",),
    ("it is a movie",),
    ("the best thing about it is the popcorn , and even that is stale",),
    ("an utterly charming , often hilarious comedy",),
]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, minilm_path):
    """A random tiny BERT classifier (classes negative/positive) with the real vocabulary."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    config = BertConfig(
        **{**TINY, "vocab_size": 30522, "max_position_embeddings": 128},
        initializer_range=0.2,  # logits O(1), so 1e-5 is a relative tolerance too
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    folder = tmp_path_factory.mktemp("teacher")
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


def _transformers_logits(folder, texts) -> np.ndarray:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    encoded = tokenizer([t[0] for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**encoded).logits.numpy()


def test_cached_teacher_logits_equal_a_fresh_forward_and_a_new_text_list_misses(
    teacher_dir, tmp_path, monkeypatch
):
    from bertjax.train import teacher as teacher_

    teacher = teacher_.load_teacher(teacher_dir)
    assert teacher.label_names == ["negative", "positive"]
    calls = []
    real_forward = teacher_.forward
    monkeypatch.setattr(
        teacher_, "forward", lambda *a, **k: calls.append(len(a[1])) or real_forward(*a, **k)
    )
    first = teacher_.teacher_logits(teacher, TEXTS, tmp_path, max_length=64, batch_size=4)
    again = teacher_.teacher_logits(teacher, TEXTS, tmp_path, max_length=64, batch_size=4)
    assert calls == [5]  # the second call read the cache
    assert again.shape == (5, 2) and again.tobytes() == first.tobytes()
    np.testing.assert_allclose(again, _transformers_logits(teacher_dir, TEXTS), atol=TOL)
    assert len(list(tmp_path.glob("teacher_logits-*.npy"))) == 1

    changed = TEXTS[:4] + [("a different last sentence",)]
    other = teacher_.teacher_logits(teacher, changed, tmp_path, max_length=64, batch_size=4)
    assert calls == [5, 5] and len(list(tmp_path.glob("teacher_logits-*.npy"))) == 2

    # $BERTJAX_TEACHER_CACHE: runs with other folders (a study's students) share the logits
    monkeypatch.setenv(teacher_.SHARED_CACHE, str(tmp_path / "shared"))
    for run in ("student_1", "student_2"):
        shared = teacher_.teacher_logits(teacher, TEXTS, tmp_path / run, 64, batch_size=4)
        assert shared.tobytes() == first.tobytes()
        assert len(list((tmp_path / run).glob("teacher_logits-*.npy"))) == 1  # its own copy
    assert calls == [5, 5, 5]  # computed once for both runs
    assert len(list((tmp_path / "shared").glob("teacher_logits-*.npy"))) == 1
    np.testing.assert_allclose(other[:4], first[:4], atol=TOL)  # rows packed otherwise
    # a shorter truncation changes what the teacher reads: another key too
    key = teacher_.cache_key(teacher, TEXTS, 64)
    assert teacher_.cache_key(teacher, TEXTS, 8)["key"] != key["key"]
    assert teacher_.cache_key(teacher, TEXTS, 8)["weights"] == key["weights"]


def test_teacher_with_other_classes_fails_in_one_line_naming_both(teacher_dir):
    from bertjax.train import teacher as teacher_

    names = teacher_.label_names_of(teacher_dir)
    assert names == ["negative", "positive"]
    teacher_.check_teacher_labels(teacher_dir, names, ["negative", "positive"])
    for data_names in (["positive", "negative"], ["negative", "neutral", "positive"]):
        with pytest.raises(ValueError) as err:
            teacher_.check_teacher_labels(teacher_dir, names, data_names)
        message = str(err.value)
        assert "\n" not in message and str(data_names) in message
        assert f"={teacher_dir} predicts 2 classes ['negative', 'positive']" in message
    # transformers' default names carry no meaning: only the count is checked
    generic = ["LABEL_0", "LABEL_1"]
    teacher_.check_teacher_labels("t", generic, ["0", "1"])
    with pytest.raises(ValueError, match="predicts 2 classes"):
        teacher_.check_teacher_labels("t", generic, ["a", "b", "c"])


def test_unfinished_run_and_headless_model_are_refused_in_one_line(tmp_path, teacher_dir):
    from bertjax import runs
    from bertjax.train import teacher as teacher_

    run = tmp_path / "run"
    run.mkdir()
    (run / runs.CONFIG_FILE).write_text("{}")
    (run / runs.LABELS_FILE).write_text('["negative", "positive"]')
    with pytest.raises(ValueError, match=r"the run did not finish \(no summary.json\)"):
        teacher_.load_teacher(run)

    bare = tmp_path / "bare"
    bertjax.save_pretrained(*bertjax.from_pretrained(teacher_dir), bare)  # a bare encoder
    with pytest.raises(ValueError, match=r"no classification head \(architectures \['BertModel'"):
        teacher_.load_teacher(bare)


def test_transfer_texts_from_a_file_or_a_data_folder_and_empty_ones_refused(tmp_path):
    from bertjax.train.teacher import read_transfer

    file = tmp_path / "transfer.txt"
    file.write_text("first sentence\n\nsecond one\n")
    assert read_transfer(file, ("sentence",)) == [("first sentence",), ("second one",)]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\nfine film\t1\nbad film\t0\n")
    assert read_transfer(folder, ("sentence",)) == [("fine film",), ("bad film",)]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(ValueError) as err:
        read_transfer(empty, ("sentence",))
    assert str(err.value).startswith(f"distill.transfer={empty}: ") and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="no text field"):
        read_transfer(folder, ("premise", "hypothesis"))


def test_a_finished_run_teaches_with_its_best_checkpoint(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    from bertjax.train import inference
    from bertjax.train import loop as training
    from bertjax.train import teacher as teacher_
    from tests.conftest import run_config

    run = tmp_path / "run"
    training.train(
        run_config(run, tiny_bert_vocab_dir, shared_data / "sst2", **{"train.max_steps": 2})
    )
    teacher = teacher_.load_teacher(run)
    assert teacher.label_names == json.loads((run / "labels.json").read_text())
    got = teacher_.teacher_logits(teacher, TEXTS, tmp_path / "cache", max_length=64)
    _, setup, trainable = inference.load_run(run, with_data=False)
    bertjax.save_pretrained(
        setup.model,
        peft.combine(setup.params, trainable),
        tmp_path / "merged",
        tokenizer=tiny_bert_vocab_dir,
    )
    np.testing.assert_allclose(got, _transformers_logits(tmp_path / "merged", TEXTS), atol=TOL)


# ---- config ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"distill.temperature": 0.0}, "distill.temperature=0.0 must be a number > 0"),
        ({"distill.temperature": float("nan")}, "distill.temperature=nan must be a number > 0"),
        ({"distill.alpha": 1.5}, "distill.alpha=1.5 must be in [0, 1]"),
        ({"distill.alpha": -0.1}, "distill.alpha=-0.1 must be in [0, 1]"),
        ({"distill.transfer": "t.txt"}, "distill.transfer='t.txt' needs a teacher"),
        (
            {"distill.teacher": "runs/t", "distill.transfer": "t.txt"},
            "distill.alpha=0.5, but distill.transfer texts have no labels",
        ),
        ({"model_layers": (2, 0)}, "model_layers=(2, 0) is not sorted"),
        ({"model_layers": (0, 0)}, "model_layers=(0, 0) repeats a layer"),
        ({"model_layers": ()}, "model_layers=() is empty"),
        ({"model_layers": (-1, 0)}, "model_layers=(-1, 0) is out of range: layers are >= 0"),
    ],
)
def test_distill_and_model_layers_fields_are_checked_in_one_line(overrides, message):
    from bertjax.train.checks import check_config
    from configs import base

    config = base.get_config()
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError) as err:
        check_config(config)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_default_and_valid_distill_configs_pass():
    from bertjax.train.checks import check_config
    from configs import base

    config = base.get_config()
    assert config.distill.teacher is None and config.model_layers is None  # off by default
    assert (config.distill.temperature, config.distill.alpha) == (2.0, 0.5)
    check_config(config)
    config.update_from_flattened_dict(
        {"distill.teacher": "runs/t", "distill.alpha": 0, "model_layers": (0, 2, 4)}
    )
    check_config(config)


# ---- soft targets through batching and the train step ---------------------------------------


def _soft_dataset(num_labels: int = 3):
    import datasets

    rng = np.random.default_rng(0)
    lengths = [5, 9, 3, 7, 4, 6, 8, 5]
    return datasets.Dataset.from_dict(
        {
            "input_ids": [[1, *rng.integers(3, 99, n - 2).tolist(), 2] for n in lengths],
            "label": rng.integers(0, num_labels, len(lengths)).tolist(),
            "teacher_logits": rng.normal(size=(len(lengths), num_labels)).tolist(),
        }
    )


@pytest.mark.parametrize("packed", [False, True])
def test_teacher_logits_travel_in_batches_like_labels(packed):
    from bertjax.data import batching

    dataset = _soft_dataset()
    want = np.float32(dataset["teacher_logits"])
    labels = np.asarray(dataset["label"])
    train = list(batching.train_batches(dataset, 4, (8, 16), 0, 0, pad_id=0, packing=packed))
    batches = train + list(batching.eval_batches(dataset, 4, (8, 16), pad_id=0, packing=packed))
    for batch in batches:
        real = batch["weights"] > 0
        index = batch["index"][real]
        assert batch["teacher_logits"].shape == (*batch["labels"].shape, 3)
        np.testing.assert_array_equal(batch["teacher_logits"][real], want[index])
        np.testing.assert_array_equal(batch["labels"][real], labels[index])
        assert not batch["teacher_logits"][~real].any()  # padding slots hold zeros
    longest = batching.longest_batch(dataset, 4, (8, 16), 3, packing=packed)
    widest = max(train, key=lambda b: b["input_ids"].size)
    assert longest["teacher_logits"].shape == widest["teacher_logits"].shape


def _one_step(distill, batch, params):
    import optax

    from bertjax.train.steps import init_state, make_train_step

    model = _one_step.model
    optimizer = optax.adamw(1e-2)
    mask = jax.tree_util.tree_map(lambda _: True, params)
    state = init_state(params, mask, optimizer)
    step = make_train_step(model, optimizer, distill=distill)
    stacked = {k: v[None] for k, v in batch.items() if k != "index"}
    state, metrics = step(state, stacked, jax.random.key(0)[None])
    return jax.device_get(state.trainable), jax.device_get(metrics)


def test_distillation_step_alpha_one_is_the_plain_step_bitwise():
    from bertjax.data import batching
    from bertjax.train.distill import Distill

    model, params = bertjax.from_config(dict(model_type="bert", **TINY), num_labels=3)
    _one_step.model = model
    dataset = _soft_dataset()
    # packed rows: teacher_logits [rows, E, num_labels] (plain batches: the zero-gradient test)
    batch = next(batching.train_batches(dataset, 8, (16,), 0, 0, pad_id=0, packing=True))
    plain = {k: v for k, v in batch.items() if k != "teacher_logits"}
    want, want_metrics = _one_step(None, plain, params)
    got, metrics = _one_step(Distill(alpha=1.0, temperature=2.0), batch, params)
    same = jax.tree_util.tree_map(lambda a, b: a.tobytes() == b.tobytes(), got, want)
    assert all(jax.tree_util.tree_leaves(same))
    assert metrics["loss"].tobytes() == want_metrics["loss"].tobytes()


def test_distilling_a_student_towards_its_own_outputs_gives_zero_loss_and_gradient():
    from bertjax.data import batching
    from bertjax.train.distill import Distill
    from bertjax.train.steps import make_eval_step

    no_dropout = dict(TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model, params = bertjax.from_config(dict(model_type="bert", **no_dropout), num_labels=3)
    _one_step.model = model
    batch = next(batching.train_batches(_soft_dataset(), 8, (16,), 0, 0, pad_id=0))
    inputs = {k: v for k, v in batch.items() if k not in ("index", "teacher_logits")}
    batch["teacher_logits"] = np.asarray(make_eval_step(model)(params, {}, inputs))
    _, metrics = _one_step(Distill(alpha=0.0, temperature=3.0), batch, params)
    # the labels' cross-entropy would be about log 3 here: the step used the soft targets only
    assert abs(float(metrics["loss"][0])) < 1e-6 and float(metrics["grad_norm"][0]) < 1e-5


def _sentiment_folder(folder, names=("negative", "positive")):
    folder.mkdir()
    rows = [f"{t[0]}\t{names[i % 2]}" for i, t in enumerate(TEXTS)]
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return folder


def _distill_config(data_path, teacher, **distill):
    from configs import base

    config = base.get_config()
    config.data.path = str(data_path)
    config.data.splits.validation, config.data.splits.test = "dev", ""
    config.data.max_length = 64
    config.distill.teacher = str(teacher)
    config.distill.update(distill)
    return config


def test_soft_train_set_holds_the_teachers_logits_of_train_or_transfer_texts(teacher_dir, tmp_path):
    from bertjax import data
    from bertjax.train.teacher import soft_train_set

    config = _distill_config(_sentiment_folder(tmp_path / "data"), teacher_dir)
    tokenizer = bertjax.load_tokenizer(teacher_dir)
    splits, names = data.prepare(config.data, tokenizer, 0)
    out = soft_train_set(config, splits["train"], names, tokenizer, tmp_path / "cache")
    assert out["input_ids"] == splits["train"]["input_ids"]
    want = _transformers_logits(teacher_dir, TEXTS)
    np.testing.assert_allclose(np.float32(out["teacher_logits"]), want, atol=TOL)

    transfer = tmp_path / "transfer.txt"
    transfer.write_text("\n".join(t[0] for t in TEXTS[1:4]) + "\n")
    config = _distill_config(tmp_path / "data", teacher_dir, transfer=str(transfer), alpha=0.0)
    out = soft_train_set(config, splits["train"], names, tokenizer, tmp_path / "cache")
    assert len(out) == 3 and out["label"] == [0, 0, 0]
    np.testing.assert_allclose(np.float32(out["teacher_logits"]), want[1:4], atol=TOL)


def test_a_teacher_of_other_classes_is_refused_before_it_loads(teacher_dir, tmp_path, monkeypatch):
    from bertjax import data
    from bertjax.train import teacher as teacher_

    folder = _sentiment_folder(tmp_path / "data", names=("bad", "good"))
    config = _distill_config(folder, teacher_dir)
    tokenizer = bertjax.load_tokenizer(teacher_dir)
    splits, names = data.prepare(config.data, tokenizer, 0)
    monkeypatch.setattr(teacher_, "load_teacher", lambda source: pytest.fail("teacher loaded"))
    with pytest.raises(ValueError, match=r"'positive'\], but the data has 2: \['bad'"):
        teacher_.soft_train_set(config, splits["train"], names, tokenizer, tmp_path / "cache")


def test_the_majority_class_of_transfer_texts_is_the_teachers_most_frequent_prediction():
    """distill.transfer texts carry placeholder labels (0): the did-not-learn baseline's
    majority class is the teacher's most frequent prediction on them instead."""
    train = datasets.Dataset.from_dict(
        {"label": [0, 0, 0], SOFT_TARGETS: [[0.0, 2.0], [1.0, 3.0], [4.0, 0.0]]}
    )
    validation = datasets.Dataset.from_dict({"label": [1, 1, 0]})
    setup = SimpleNamespace(
        splits={"train": train, "validation": validation}, model=SimpleNamespace(num_labels=2)
    )
    assert finish.baselines(setup, transfer=True)["validation"]["accuracy"] == pytest.approx(2 / 3)
    assert finish.baselines(setup)["validation"]["accuracy"] == pytest.approx(1 / 3)


def test_the_teacher_cache_key_covers_every_tokenizer_file(tmp_path):
    """A DeBERTa-v3 hub folder's tokenizer is spm.model alone: editing it must change the
    key of cached teacher logits, as editing tokenizer.json or vocab.txt does."""
    from bertjax.train import teacher

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "spm.model").write_bytes(b"pieces v1")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    before = teacher.tokenizer_hash(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"other weights")  # not a tokenizer file
    assert teacher.tokenizer_hash(tmp_path) == before
    (tmp_path / "spm.model").write_bytes(b"pieces v2")
    assert teacher.tokenizer_hash(tmp_path) != before
