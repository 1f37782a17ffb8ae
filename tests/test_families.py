"""DistilBERT and ELECTRA: parity with transformers, round trips, trees, PEFT, bfloat16."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict
from transformers import AutoModel, AutoModelForSequenceClassification

import bertjax
import peft
from bertjax.models import families
from bertjax.models.families import build, head_modules
from tests.conftest import TINY_DISTILBERT, TINY_ELECTRA, run_config
from tests.test_parity import TOL, _batch, _max_diff_hidden, _torch

FAMILIES = ["tiny_distilbert_dir", "tiny_electra_dir"]
HF_CONFIGS = {
    "tiny_distilbert_dir": dict(TINY_DISTILBERT, model_type="distilbert"),
    "tiny_electra_dir": dict(TINY_ELECTRA, model_type="electra"),
}
# transformers' DistilBERT has no token_type_ids argument: pairs differ by [SEP] only.
TAKES_TYPES = {"tiny_distilbert_dir": False, "tiny_electra_dir": True}
LORA_TARGETS = {"tiny_distilbert_dir": ("q_lin", "v_lin"), "tiny_electra_dir": ("query", "value")}
H, I, V, P, N, E = 32, 64, 99, 40, 2, 16  # noqa: E741  the tiny sizes (conftest)


def _torch_types(fixture, types):
    return types if TAKES_TYPES[fixture] else None


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("fixture", FAMILIES)
def test_classifier_and_encoder_match_transformers(fixture, pair, request):
    folder = request.getfixturevalue(fixture)
    ids, mask, types = _batch(pad_id=0, pair=pair)
    model, params = bertjax.from_pretrained(folder, num_labels=3)
    got = model.apply({"params": params}, ids, mask, types)
    ref = AutoModelForSequenceClassification.from_pretrained(folder)
    want = _torch(ref, ids, mask, _torch_types(fixture, types))
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=TOL)

    encoder, encoder_params = bertjax.from_pretrained(folder)
    got = encoder.apply({"params": encoder_params}, ids, mask, types)
    want = _torch(AutoModel.from_pretrained(folder), ids, mask, _torch_types(fixture, types))
    assert _max_diff_hidden(got.last_hidden_state, want.last_hidden_state, mask) <= TOL
    assert got.pooler_output is None


@pytest.mark.parametrize(
    "family, pretraining_class",
    [("distilbert", "DistilBertForMaskedLM"), ("electra", "ElectraForPreTraining")],
)
def test_pretraining_checkpoint_drops_its_head(family, pretraining_class, tmp_path):
    """distilbert-base-uncased / electra-base-discriminator ship these classes: their
    pretraining heads are dropped, the encoder loads exactly and the task head is new."""
    import transformers

    torch_config = transformers.AutoConfig.for_model(**HF_CONFIGS[f"tiny_{family}_dir"])
    torch_model = getattr(transformers, pretraining_class)(torch_config).eval()
    torch_model.save_pretrained(tmp_path)
    ids, mask, types = _batch(pad_id=0, pair=True)
    types_arg = types if family == "electra" else None
    encoder, params = bertjax.from_pretrained(tmp_path)
    got = encoder.apply({"params": params}, ids, mask, types).last_hidden_state
    want = _torch(AutoModel.from_pretrained(tmp_path), ids, mask, types_arg).last_hidden_state
    assert _max_diff_hidden(got, want, mask) <= TOL
    model, params = bertjax.from_pretrained(tmp_path, num_labels=2)
    assert set(params) == {family, *head_modules(model)}


def test_distilbert_ignores_token_types(tiny_distilbert_dir):
    ids, mask, types = _batch(pad_id=0, pair=True)
    model, params = bertjax.from_pretrained(tiny_distilbert_dir, num_labels=3)
    with_types = model.apply({"params": params}, ids, mask, types).logits
    np.testing.assert_array_equal(with_types, model.apply({"params": params}, ids, mask).logits)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_round_trip_through_transformers(fixture, request, tmp_path):
    """Our randomly initialised model (every weight ours) -> save_pretrained -> transformers."""
    ids, mask, types = _batch(pad_id=0, pair=True)
    torch_types = _torch_types(fixture, types)
    model, params = bertjax.from_config(HF_CONFIGS[fixture], num_labels=2, seed=3)
    bertjax.save_pretrained(model, params, tmp_path / "cls", label_names=["neg", "pos"])
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert type(reloaded).__name__.endswith("ForSequenceClassification")
    assert reloaded.config.id2label == {0: "neg", 1: "pos"}
    ours = model.apply({"params": params}, ids, mask, types).logits
    np.testing.assert_allclose(ours, _torch(reloaded, ids, mask, torch_types).logits, atol=TOL)
    _, params_again = bertjax.from_pretrained(tmp_path / "cls", num_labels=2)
    for a, b in zip(
        jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params_again), strict=True
    ):
        np.testing.assert_array_equal(a, b)

    encoder, encoder_params = bertjax.from_config(HF_CONFIGS[fixture], seed=4)
    bertjax.save_pretrained(encoder, encoder_params, tmp_path / "bare")
    got = encoder.apply({"params": encoder_params}, ids, mask, types).last_hidden_state
    want = _torch(AutoModel.from_pretrained(tmp_path / "bare"), ids, mask, torch_types)
    assert _max_diff_hidden(got, want.last_hidden_state, mask) <= TOL


def _shapes(params) -> dict[str, tuple]:
    return {"/".join(k): tuple(v.shape) for k, v in flatten_dict(params).items()}


def _abstract(hf_config: dict, num_labels=None, peft_cfg=None):
    model = build(bertjax.model_config_from_hf(hf_config), num_labels, peft_cfg)
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]


def test_spec_tree_of_tiny_distilbert_classifier():
    layer = {
        **{f"attention/{n}/kernel": (H, H) for n in ("q_lin", "k_lin", "v_lin", "out_lin")},
        **{f"attention/{n}/bias": (H,) for n in ("q_lin", "k_lin", "v_lin", "out_lin")},
        "sa_layer_norm/scale": (H,),
        "sa_layer_norm/bias": (H,),
        "ffn/lin1/kernel": (H, I),
        "ffn/lin1/bias": (I,),
        "ffn/lin2/kernel": (I, H),
        "ffn/lin2/bias": (H,),
        "output_layer_norm/scale": (H,),
        "output_layer_norm/bias": (H,),
    }
    expected = {
        "distilbert/embeddings/word_embeddings/embedding": (V, H),
        "distilbert/embeddings/position_embeddings/embedding": (P, H),
        "distilbert/embeddings/LayerNorm/scale": (H,),
        "distilbert/embeddings/LayerNorm/bias": (H,),
        "pre_classifier/kernel": (H, H),
        "pre_classifier/bias": (H,),
        "classifier/kernel": (H, 3),
        "classifier/bias": (3,),
        **{f"distilbert/transformer/layer/{i}/{k}": v for i in range(N) for k, v in layer.items()},
    }
    assert _shapes(_abstract(HF_CONFIGS["tiny_distilbert_dir"], 3)) == expected


def test_spec_tree_of_tiny_electra_classifier():
    shapes = _shapes(_abstract(HF_CONFIGS["tiny_electra_dir"], 3))
    top = {k: v for k, v in shapes.items() if "/layer/" not in k}
    assert top == {
        "electra/embeddings/word_embeddings/embedding": (V, E),
        "electra/embeddings/position_embeddings/embedding": (P, E),
        "electra/embeddings/token_type_embeddings/embedding": (2, E),
        "electra/embeddings/LayerNorm/scale": (E,),
        "electra/embeddings/LayerNorm/bias": (E,),
        "electra/embeddings_project/kernel": (E, H),
        "electra/embeddings_project/bias": (H,),
        "classifier/dense/kernel": (H, H),
        "classifier/dense/bias": (H,),
        "classifier/out_proj/kernel": (H, 3),
        "classifier/out_proj/bias": (3,),
    }
    layer = {k.split("/layer/1/")[1]: v for k, v in shapes.items() if "/layer/1/" in k}
    assert layer["attention/self/query/kernel"] == (H, H) and len(layer) == 16  # BERT's layer
    # embeddings as wide as hidden: no projection, as transformers
    same_width = _abstract(dict(HF_CONFIGS["tiny_electra_dir"], embedding_size=H), 3)
    assert "embeddings_project" not in same_width["electra"]


def _torch_counts(folder) -> dict[str, int]:
    """full / head / bitfit trainable counts read off transformers' own parameters."""
    ref = AutoModelForSequenceClassification.from_pretrained(folder)
    named = dict(ref.named_parameters())
    head = {n for n in named if n.split(".")[0] in ("pre_classifier", "classifier")}
    return dict(
        full=sum(p.numel() for p in named.values()),
        head=sum(named[n].numel() for n in head),
        bitfit=sum(p.numel() for n, p in named.items() if n in head or n.endswith(".bias")),
    )


def _our_count(folder, method) -> int:
    """method: "full", "head", "bitfit" or a LoraConfig / AdapterConfig."""
    peft_cfg = None if isinstance(method, str) else method
    model, params = bertjax.from_pretrained(folder, num_labels=3, peft=peft_cfg)
    mask = peft.trainable_mask(params, method, head=head_modules(model))
    return peft.count(params, mask)


# Hand-derived (H 32, I 64, N 2 layers, 3 labels; LoRA rank 8; Houlsby adapters, H/4 = 8):
DISTILBERT_HEAD = (H * H + H) + (H * 3 + 3)  # pre_classifier + classifier
ELECTRA_HEAD = (H * H + H) + (H * 3 + 3)  # classifier.dense + classifier.out_proj
ADAPTERS = N * 2 * ((H * 8 + 8) + (8 * H + H))  # two per layer: down + up
EXPECTED = {
    "tiny_distilbert_dir": dict(
        lora=N * 2 * 8 * (H + H) + DISTILBERT_HEAD,  # q_lin, v_lin: a [H, 8] + b [8, H]
        adapter=ADAPTERS + 2 * H + N * 2 * 2 * H + DISTILBERT_HEAD,  # + every LayerNorm
    ),
    "tiny_electra_dir": dict(
        lora=N * 2 * 8 * (H + H) + ELECTRA_HEAD,  # query, value
        adapter=ADAPTERS + 2 * E + N * 2 * 2 * H + ELECTRA_HEAD,  # embedding LayerNorm is E
    ),
}


@pytest.mark.parametrize("fixture", FAMILIES)
def test_trainable_counts_per_method(fixture, request):
    folder = request.getfixturevalue(fixture)
    reference = _torch_counts(folder)
    assert {m: _our_count(folder, m) for m in reference} == reference
    lora = peft.LoraConfig(8, 16.0, 0.1, LORA_TARGETS[fixture])
    adapter = peft.AdapterConfig("houlsby", 4)
    ours = dict(lora=_our_count(folder, lora), adapter=_our_count(folder, adapter))
    assert ours == EXPECTED[fixture]


@pytest.mark.parametrize("fixture", FAMILIES)
def test_lora_merged_export_matches_transformers(fixture, request, tmp_path):
    """LoRA sits on the named layers: with non-zero factors, the merged export that
    transformers loads gives our LoRA model's logits."""
    folder = request.getfixturevalue(fixture)
    ids, mask, types = _batch(pad_id=0, pair=True)
    lora = peft.LoraConfig(4, 8.0, 0.0, LORA_TARGETS[fixture])
    model, params = bertjax.from_pretrained(folder, num_labels=3, peft=lora)
    flat = flatten_dict(params)
    factors = [p for p in flat if p[-2:] == ("lora", "b")]
    assert len(factors) == N * 2 and {p[-3] for p in factors} == set(LORA_TARGETS[fixture])
    rng = np.random.default_rng(0)
    for path in factors:
        flat[path] = jnp.asarray(rng.normal(0, 0.2, flat[path].shape), jnp.float32)
    params = unflatten_dict(flat)
    ours = model.apply({"params": params}, ids, mask, types).logits
    plain_model, plain = bertjax.from_pretrained(folder, num_labels=3)
    before = plain_model.apply({"params": plain}, ids, mask, types).logits
    assert np.abs(np.asarray(ours) - np.asarray(before)).max() > 1e-3
    bertjax.save_pretrained(model, params, tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    want = _torch(reloaded, ids, mask, _torch_types(fixture, types)).logits
    np.testing.assert_allclose(ours, want, atol=TOL)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_adapters_start_as_identity_and_get_gradients(fixture, request):
    folder = request.getfixturevalue(fixture)
    ids, mask, types = _batch(pad_id=0)
    adapter = peft.AdapterConfig("houlsby", 4)
    model, params = bertjax.from_pretrained(folder, num_labels=3, peft=adapter)
    plain_model, plain = bertjax.from_pretrained(folder, num_labels=3)
    logits = model.apply({"params": params}, ids, mask, types).logits
    np.testing.assert_allclose(
        logits, plain_model.apply({"params": plain}, ids, mask, types).logits, atol=1e-6
    )
    grads = jax.grad(lambda p: model.apply({"params": p}, ids, mask, types).logits.sum())(params)
    ups = {k: v for k, v in flatten_dict(grads).items() if k[-3:-1] == ("adapter", "up")}
    assert len(ups) == N * 2 * 2 and all(np.abs(g).max() > 0 for g in ups.values())


def test_distilbert_default_lora_targets_name_the_available_layers(tiny_distilbert_dir):
    with pytest.raises(ValueError) as err:
        bertjax.from_pretrained(tiny_distilbert_dir, num_labels=3, peft=peft.LoraConfig(8, 16))
    message = str(err.value)
    assert "\n" not in message and "'query'" in message
    assert "k_lin, lin1, lin2, out_lin, q_lin, v_lin" in message


@pytest.mark.parametrize(
    "hf_config, fault",
    [
        (dict(TINY_ELECTRA, model_type="electra", is_decoder=True), "is_decoder"),
        (dict(TINY_ELECTRA, model_type="electra", position_embedding_type="relative_key"), "rel"),
        (dict(TINY_DISTILBERT, model_type="distilbert", activation="swiglu"), "swiglu"),
        (dict(TINY_DISTILBERT, model_type="distilbert", n_heads=5), "n_heads 5"),
        ({"model_type": "electra"}, "lacks 'vocab_size'"),
    ],
)
def test_unsupported_options_are_one_line_errors(hf_config, fault):
    with pytest.raises(ValueError) as err:
        bertjax.from_config(hf_config, num_labels=2)
    assert "\n" not in str(err.value) and fault in str(err.value)


def test_distilbert_sinusoidal_positions_equal_transformers(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    config = dict(TINY_DISTILBERT, sinusoidal_pos_embds=True)
    ref = DistilBertModel(DistilBertConfig(**config))
    _, params = bertjax.from_config(dict(config, model_type="distilbert"))
    np.testing.assert_allclose(
        params["embeddings"]["position_embeddings"]["embedding"],
        ref.embeddings.position_embeddings.weight.detach().numpy(),
        atol=1e-6,
    )


@pytest.mark.parametrize("fixture", FAMILIES)
def test_bfloat16_is_finite_and_close(fixture, request):
    ids, mask, types = _batch(pad_id=0, pair=True)
    model, params = bertjax.from_pretrained(request.getfixturevalue(fixture), num_labels=3)
    model16 = build(model.config, 3, dtype=jnp.bfloat16)
    out16 = model16.apply({"params": params}, ids, mask, types)
    out32 = model.apply({"params": params}, ids, mask, types)
    # bfloat16 is the matmuls' operand dtype; activations stay float32 (issue #25).
    assert out16.last_hidden_state.dtype == jnp.float32 and out16.logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(out16.last_hidden_state, np.float32)).all()
    np.testing.assert_allclose(out16.logits, out32.logits, atol=5e-2)
    diff = np.abs(np.asarray(out16.last_hidden_state, np.float32) - out32.last_hidden_state)
    assert (diff * mask[..., None]).max() < 0.1  # LayerNorm outputs are O(1)


@pytest.mark.parametrize(
    "name, fixture", [("sst2_distilbert_lora", "distilbert"), ("sst2_electra_lora", "electra")]
)
def test_family_configs_target_real_layers(name, fixture):
    import importlib

    from bertjax.train.build import peft_config

    config = importlib.import_module(f"configs.{name}").get_config()
    assert fixture in config.model
    tiny = HF_CONFIGS[f"tiny_{fixture}_dir"]
    _, params = bertjax.from_config(tiny, num_labels=2, peft=peft_config(config))
    assert sum(p[-1] == "a" for p in flatten_dict(params)) == N * 2


def test_memory_estimate_for_distilbert(tiny_distilbert_dir, monkeypatch):
    from bertjax.train import memory
    from configs import tiny

    config = tiny.get_config()
    config.model = str(tiny_distilbert_dir)
    config.peft.lora.targets = ("q_lin", "v_lin")
    config.dtype = "float32"  # the counts below are float32's
    rows = {r["method"]: r for r in memory.measure(config, 4, 16, ("lora",))}
    # LoRA rank 2 on q_lin, v_lin of 2 layers, plus pre_classifier and a 2-label classifier.
    assert rows["lora"]["trainable"] == N * 2 * 2 * (H + H) + (H * H + H) + (H * 2 + 2)
    # The docstring's count at B 4, L 16, A 4, p 4, with q_lin and v_lin found as the 2 targets:
    # per layer 22·BLH + 4·BLF + 9·BAL², plus LoRA's x and, per target, (1 + p)·BLH + p·BL·rank;
    # the last layer computes the first tokens only (B of them): there Q, the LayerNorm
    # inputs, masks, GELU input and q_lin's LoRA terms count B rows, K and V all BL.
    tokens, rows_ = 4 * 16, 4
    per_layer = 22 * tokens * H + 4 * tokens * I + 9 * 4 * 4 * 16 * 16
    lora_extra = 4 * tokens * H + 2 * (5 * tokens * H + 4 * tokens * 2)
    last = 8 * tokens * H + 14 * rows_ * H + 4 * rows_ * I + 9 * 4 * 4 * 1 * 16
    last_lora = 4 * tokens * H + (5 * tokens * H + 4 * tokens * 2) + (5 * rows_ * H + 4 * rows_ * 2)
    expected = (N - 1) * (per_layer + lora_extra) + last + last_lora
    assert rows["lora"]["estimate"]["activations"] == expected
    distilbert = families.FAMILIES["distilbert"]  # as for a family without the estimate:
    monkeypatch.setitem(
        families.FAMILIES, "distilbert", dataclasses.replace(distilbert, memory_estimate=False)
    )
    with pytest.raises(ValueError) as err:
        memory.measure(config, 4, 16, ("lora",))
    assert "\n" not in str(err.value) and "no memory estimate for model_type 'distilbert'" in str(
        err.value
    )


@pytest.mark.slow
def test_lora_training_run_on_distilbert(tmp_path, tiny_distilbert_vocab_dir, shared_data):
    from bertjax.train import inference
    from bertjax.train import loop as training

    config = run_config(
        tmp_path / "distilbert_lora",
        tiny_distilbert_vocab_dir,
        shared_data / "sst2",
        **{"peft.method": "lora", "peft.lora.targets": ("q_lin", "v_lin")},
    )
    summary = training.train(config)
    # LoRA rank 8 on q_lin and v_lin of 2 layers; pre_classifier and a 2-label classifier.
    assert summary["trainable_params"] == N * 2 * 8 * (H + H) + (H * H + H) + (H * 2 + 2)
    again = inference.evaluate_run(tmp_path / "distilbert_lora", "validation")
    again.pop("loss")
    assert again == summary["validation"]
