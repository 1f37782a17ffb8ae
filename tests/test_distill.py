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
