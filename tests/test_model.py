"""Model structure: spec tree, exact parameter counts, dropout, dtype, bad input."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import bertjax
from bertjax.models.families import build
from tests.conftest import TINY

BERT_TINY = dict(
    model_type="bert",
    vocab_size=30522,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=512,
    max_position_embeddings=512,
    type_vocab_size=2,
)
BERT_BASE = dict(
    model_type="bert",
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)
ROBERTA_BASE = dict(
    BERT_BASE,
    model_type="roberta",
    vocab_size=50265,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    layer_norm_eps=1e-5,
)


def abstract_params(hf_config: dict, num_labels=None, peft=None):
    model = build(bertjax.model_config_from_hf(hf_config), num_labels, peft)
    tokens = jnp.zeros((1, 8), jnp.int32)
    return jax.eval_shape(model.init, jax.random.key(0), tokens)["params"]


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize(
    "hf_config, expected",
    [(BERT_TINY, 4_386_178), (BERT_BASE, 109_483_778), (ROBERTA_BASE, 124_647_170)],
    ids=["bert-tiny", "bert-base", "roberta-base"],
)
def test_exact_parameter_counts_with_two_labels(hf_config, expected):
    assert count(abstract_params(hf_config, num_labels=2)) == expected


def test_spec_tree_of_tiny_bert_classifier():
    shapes = {
        "/".join(k): v.shape
        for k, v in flatten_dict(
            abstract_params(dict(TINY, model_type="bert"), num_labels=3)
        ).items()
    }
    H, I, V, P = 32, 64, 99, 40  # noqa: E741
    layer = {
        "attention/self/query/kernel": (H, H),
        "attention/self/query/bias": (H,),
        "attention/self/key/kernel": (H, H),
        "attention/self/key/bias": (H,),
        "attention/self/value/kernel": (H, H),
        "attention/self/value/bias": (H,),
        "attention/output/dense/kernel": (H, H),
        "attention/output/dense/bias": (H,),
        "attention/output/LayerNorm/scale": (H,),
        "attention/output/LayerNorm/bias": (H,),
        "intermediate/dense/kernel": (H, I),
        "intermediate/dense/bias": (I,),
        "output/dense/kernel": (I, H),
        "output/dense/bias": (H,),
        "output/LayerNorm/scale": (H,),
        "output/LayerNorm/bias": (H,),
    }
    expected = {
        "bert/embeddings/word_embeddings/embedding": (V, H),
        "bert/embeddings/position_embeddings/embedding": (P, H),
        "bert/embeddings/token_type_embeddings/embedding": (2, H),
        "bert/embeddings/LayerNorm/scale": (H,),
        "bert/embeddings/LayerNorm/bias": (H,),
        "bert/pooler/dense/kernel": (H, H),
        "bert/pooler/dense/bias": (H,),
        "classifier/kernel": (H, 3),
        "classifier/bias": (3,),
        **{f"bert/encoder/layer/{i}/{k}": v for i in range(2) for k, v in layer.items()},
    }
    assert shapes == expected


def test_roberta_head_and_bare_encoder_trees():
    roberta = abstract_params(dict(TINY, model_type="roberta", pad_token_id=1), num_labels=2)
    assert set(roberta) == {"roberta", "classifier"}
    assert set(roberta["classifier"]) == {"dense", "out_proj"}
    assert "pooler" not in roberta["roberta"]
    bare = abstract_params(dict(TINY, model_type="bert"))
    assert set(bare) == {"embeddings", "encoder", "pooler"}


def test_dropout_only_when_not_deterministic():
    model, params = bertjax.from_config(dict(TINY, model_type="bert"), num_labels=2)
    ids = jnp.arange(1, 17).reshape(2, 8)
    apply = lambda **kw: model.apply({"params": params}, ids, **kw).logits  # noqa: E731
    np.testing.assert_array_equal(apply(), apply(deterministic=True))
    a = apply(deterministic=False, rngs={"dropout": jax.random.key(1)})
    b = apply(deterministic=False, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(a, b) and not np.allclose(a, apply())


def test_bfloat16_computation_keeps_float32_params():
    model, params = bertjax.from_config(dict(TINY, model_type="bert"), num_labels=2)
    model16 = build(model.config, 2, dtype=jnp.bfloat16)
    ids = jnp.arange(1, 17).reshape(2, 8)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    out16 = model16.apply({"params": params}, ids)
    # bfloat16 is the matmuls' operand dtype; activations stay float32 (issue #25).
    assert out16.last_hidden_state.dtype == jnp.float32 and out16.logits.dtype == jnp.float32
    np.testing.assert_allclose(out16.logits, model.apply({"params": params}, ids).logits, atol=5e-2)


def test_roberta_positions_skip_pads():
    cfg = bertjax.model_config_from_hf(dict(TINY, model_type="roberta", pad_token_id=1))
    ids = jnp.array([[0, 5, 6, 2, 1, 1], [0, 7, 1, 8, 2, 1]])
    np.testing.assert_array_equal(
        bertjax.models.bert.position_ids(ids, cfg), [[2, 3, 4, 5, 1, 1], [2, 3, 1, 4, 5, 1]]
    )


# ---- bad input: each a clear one-line error ----


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        bertjax.from_pretrained(tmp_path / "nope")
    assert "nope" in _one_line(err)


def test_folder_without_weights(tmp_path, tiny_bert_dir):
    (tmp_path / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError) as err:
        bertjax.from_pretrained(tmp_path)
    assert "model.safetensors" in _one_line(err) and str(tmp_path) in _one_line(err)


def test_unsupported_model_type():
    with pytest.raises(ValueError) as err:
        bertjax.from_config(dict(TINY, model_type="gpt2"))
    assert "'gpt2'" in _one_line(err) and "distilbert, electra" in str(err.value)


def test_key_with_wrong_shape(tmp_path, tiny_bert_dir):
    with pytest.raises(ValueError) as err:
        bertjax.from_pretrained(tiny_bert_dir, num_labels=5)
    message = _one_line(err)
    assert "'classifier.bias' has shape (3,)" in message and "expects (5,)" in message


def test_input_longer_than_max_positions():
    model, params = bertjax.from_config(dict(TINY, model_type="bert"), num_labels=2)
    with pytest.raises(ValueError) as err:
        model.apply({"params": params}, jnp.ones((1, 41), jnp.int32))
    assert "41" in _one_line(err) and "40" in str(err.value)


def _bin_checkpoint(tmp_path, tiny_bert_dir, payload):
    import shutil

    folder = tmp_path / "bin"
    folder.mkdir()
    shutil.copy(tiny_bert_dir / "config.json", folder)
    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(payload, f)
    return folder


def test_pytorch_bin_loads_and_matches_safetensors(tmp_path, tiny_bert_dir):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    state = load_file(tiny_bert_dir / "model.safetensors")
    # legacy names: LayerNorm gamma/beta, plus a position_ids buffer
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in state.items()
    }
    legacy["bert.embeddings.position_ids"] = torch.arange(40)[None]
    torch.save(legacy, folder / "pytorch_model.bin")
    _, from_bin = bertjax.from_pretrained(folder, num_labels=3)
    _, from_st = bertjax.from_pretrained(tiny_bert_dir, num_labels=3)
    for a, b in zip(
        jax.tree_util.tree_leaves(from_bin), jax.tree_util.tree_leaves(from_st), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_pytorch_bin_without_torch(tmp_path, tiny_bert_dir, monkeypatch):
    import sys

    folder = _bin_checkpoint(tmp_path, tiny_bert_dir, {})
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError) as err:
        bertjax.from_pretrained(folder)
    assert "torch" in _one_line(err) and "pytorch_model.bin" in str(err.value)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading!",))


def test_pytorch_bin_with_code_is_refused(tmp_path, tiny_bert_dir, capsys):
    folder = _bin_checkpoint(tmp_path, tiny_bert_dir, {"w": _Evil()})
    with pytest.raises(ValueError) as err:
        bertjax.from_pretrained(folder)
    assert "refused" in _one_line(err)
    assert "code ran" not in capsys.readouterr().out


def test_unused_and_missing_keys_are_errors(tmp_path, tiny_bert_dir):
    from safetensors.numpy import load_file, save_file

    state = load_file(tiny_bert_dir / "model.safetensors")
    (tmp_path / "config.json").write_text((tiny_bert_dir / "config.json").read_text())
    save_file(
        {**state, "bert.extra.weight": np.zeros(2, np.float32)}, tmp_path / "model.safetensors"
    )
    with pytest.raises(ValueError, match="bert.extra.weight"):
        bertjax.from_pretrained(tmp_path, num_labels=3)
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="bert/encoder/layer/1/output/dense/kernel"):
        bertjax.from_pretrained(tmp_path, num_labels=3)


def test_hub_id_offline_names_the_id(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        bertjax.from_pretrained("some-org/some-bert")
    assert "'some-org/some-bert'" in _one_line(err)


def test_new_head_and_lora_weights_are_a_seeded_init_and_the_rest_is_loaded(tmp_path):
    """Only the leaves a checkpoint lacks are initialised (the rest of the init is dead code
    to XLA), with the values a full seeded init of the same model gives them."""
    import peft
    from bertjax.hub import pretrained

    encoder, base_params = bertjax.from_config(dict(TINY, model_type="bert"), seed=1)  # bare
    bertjax.save_pretrained(encoder, base_params, tmp_path)
    lora = peft.LoraConfig(rank=2, alpha=4, targets=("query", "value"))
    model, params = bertjax.from_pretrained(tmp_path, num_labels=3, peft=lora, seed=7)
    full = flatten_dict(pretrained._init_params(model, 7))
    flat, saved = flatten_dict(params), flatten_dict(base_params)
    new = [p for p in flat if p[0] == "classifier" or "lora" in p]
    assert len(new) == 2 + 2 * 2 * TINY["num_hidden_layers"]  # head kernel/bias, a/b per target
    for path in new:
        np.testing.assert_array_equal(np.asarray(flat[path]), np.asarray(full[path]))
    for path, value in flat.items():
        if path not in new:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(saved[path[1:]]))
