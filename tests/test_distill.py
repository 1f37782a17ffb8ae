"""Knowledge distillation (issue #29): compact students, the distillation loss, teacher outputs."""

import json

import jax
import numpy as np
import pytest
import torch

import bertjax
from bertjax.hub import pretrained
from tests.conftest import TINY, TINY_DISTILBERT

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


def _pruned(model, stack, keep):
    """transformers' own model with only the `keep` layers: the reference."""
    import copy

    pruned = copy.deepcopy(model)
    holder = stack(pruned)
    name = "layers" if hasattr(holder, "layers") else "layer"
    setattr(holder, name, torch.nn.ModuleList([getattr(holder, name)[i] for i in keep]))
    return pruned


FAMILIES = {"bert": _tiny_bert, "distilbert": _tiny_distilbert, "modernbert": _tiny_modernbert}


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
