"""Parity with transformers (PyTorch): random tiny BERT/RoBERTa and the real MiniLM-L6."""

import jax
import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

import bertjax

TOL = 2e-5  # max |diff| in float32 on non-pad positions


def _batch(pad_id: int, pair: bool = False, seed: int = 0, vocab: int = 99):
    """Padded batch [3, 12] with ragged lengths and (optionally) two segments."""
    rng = np.random.default_rng(seed)
    lengths = [12, 7, 3]
    ids = rng.integers(3, vocab, size=(3, 12)).astype(np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = pad_id
        if pair:
            types[row, n // 2 : n] = 1
    return ids, mask, types


def _torch(model, ids, mask, types=None):
    inputs = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    if types is not None:
        inputs["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        return model.eval()(**inputs)


def _max_diff_hidden(ours, ref, mask):
    diff = np.abs(np.asarray(ours) - ref.numpy())
    return float((diff * mask[..., None]).max())


@pytest.mark.parametrize("pair", [False, True])
def test_tiny_bert_classifier_and_encoder(tiny_bert_dir, pair):
    ids, mask, types = _batch(pad_id=0, pair=pair)
    ref = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    model, params = bertjax.from_pretrained(tiny_bert_dir, num_labels=3)
    out = model.apply({"params": params}, ids, attention_mask=mask, token_type_ids=types)
    np.testing.assert_allclose(out.logits, _torch(ref, ids, mask, types).logits.numpy(), atol=TOL)

    encoder_ref = AutoModel.from_pretrained(tiny_bert_dir)
    encoder, encoder_params = bertjax.from_pretrained(tiny_bert_dir)
    got = encoder.apply({"params": encoder_params}, ids, mask, types)
    want = _torch(encoder_ref, ids, mask, types)
    assert _max_diff_hidden(got.last_hidden_state, want.last_hidden_state, mask) <= TOL
    np.testing.assert_allclose(got.pooler_output, want.pooler_output.numpy(), atol=TOL)


def test_tiny_roberta_with_padding(tiny_roberta_dir):
    ids, mask, _ = _batch(pad_id=1)
    ref = AutoModelForSequenceClassification.from_pretrained(tiny_roberta_dir)
    model, params = bertjax.from_pretrained(tiny_roberta_dir, num_labels=2)
    out = model.apply({"params": params}, ids, attention_mask=mask)
    want = _torch(ref, ids, mask)
    np.testing.assert_allclose(out.logits, want.logits.numpy(), atol=TOL)
    assert "pooler" not in params["roberta"]

    encoder, encoder_params = bertjax.from_pretrained(tiny_roberta_dir)
    got = encoder.apply({"params": encoder_params}, ids, mask)
    want = _torch(AutoModel.from_pretrained(tiny_roberta_dir, add_pooling_layer=False), ids, mask)
    assert _max_diff_hidden(got.last_hidden_state, want.last_hidden_state, mask) <= TOL


@pytest.mark.slow
def test_minilm_real_checkpoint_hidden_states(minilm_path):
    tokenizer = bertjax.load_tokenizer(minilm_path)
    texts = ["A gripping, beautifully shot film.", "dull", ""]
    pairs = ["Is it any good?", "no", "What about the ending, then?"]
    enc = tokenizer(texts, pairs, padding=True, return_tensors="np")
    model, params = bertjax.from_pretrained(minilm_path)
    got = model.apply(
        {"params": params}, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    )
    want = _torch(
        AutoModel.from_pretrained(minilm_path),
        enc["input_ids"],
        enc["attention_mask"],
        enc["token_type_ids"],
    )
    assert (
        _max_diff_hidden(got.last_hidden_state, want.last_hidden_state, enc["attention_mask"])
        <= TOL
    )
    np.testing.assert_allclose(got.pooler_output, want.pooler_output.numpy(), atol=TOL)


@pytest.mark.slow
def test_minilm_fresh_head_copied_both_ways(minilm_path, tmp_path):
    tokenizer = bertjax.load_tokenizer(minilm_path)
    enc = tokenizer(["the best film of the year", "awful"], padding=True, return_tensors="np")
    inputs = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])

    # ours -> transformers: our freshly initialised head travels through save_pretrained.
    model, params = bertjax.from_pretrained(minilm_path, num_labels=2, seed=3)
    ours = model.apply({"params": params}, *inputs).logits
    bertjax.save_pretrained(model, params, tmp_path / "ours")
    ref = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ours")
    np.testing.assert_allclose(ours, _torch(ref, *inputs).logits.numpy(), atol=TOL)

    # transformers -> ours: a head initialised by torch is loaded, not re-initialised.
    torch.manual_seed(7)
    torch_model = AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=2)
    torch_model.save_pretrained(tmp_path / "theirs")
    model, params = bertjax.from_pretrained(tmp_path / "theirs", num_labels=2)
    got = model.apply({"params": params}, *inputs).logits
    np.testing.assert_allclose(got, _torch(torch_model, *inputs).logits.numpy(), atol=TOL)
    assert np.abs(np.asarray(got) - np.asarray(ours)).max() > 1e-3  # a different head


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_roberta_dir"])
def test_round_trip_through_transformers(fixture, request, tmp_path):
    folder = request.getfixturevalue(fixture)
    is_roberta = "roberta" in fixture
    num_labels, pad = (2, 1) if is_roberta else (3, 0)
    ids, mask, _ = _batch(pad_id=pad)
    model, params = bertjax.from_pretrained(folder, num_labels=num_labels)
    bertjax.save_pretrained(model, params, tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    ours = model.apply({"params": params}, ids, mask).logits
    np.testing.assert_allclose(ours, _torch(reloaded, ids, mask).logits.numpy(), atol=TOL)
    _, params_again = bertjax.from_pretrained(tmp_path, num_labels=num_labels)
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params_again), strict=True
    ):
        np.testing.assert_array_equal(a, b)
