"""ModernBERT against transformers (PyTorch) on tiny random configs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import save_file
from transformers import (
    AutoModelForSequenceClassification,
    ModernBertConfig,
    ModernBertForSequenceClassification,
)

from bertjax.hub.convert import flax_to_hf, hf_to_flax
from bertjax.models import modernbert
from bertjax.models.families import build as model_build
from peft.adapter import AdapterConfig
from peft.lora import LoraConfig

TOL = 2e-5  # max |diff| in float32 on non-pad positions
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    local_attention=4,  # keys within 2 positions of the query, in a 12-token batch
    global_rope_theta=1000.0,
    local_rope_theta=50.0,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
    num_labels=3,
    initializer_range=0.2,  # weights large enough that attention is far from uniform
)
CONFIGS = {
    # ModernBERT-base's options: no biases, layers global/local/local, [CLS] pooling.
    "base": dict(global_attn_every_n_layers=3, classifier_pooling="cls"),
    # every bias switched on, layers global/local/global, mean pooling.
    "biased": dict(
        global_attn_every_n_layers=2,
        classifier_pooling="mean",
        norm_bias=True,
        attention_bias=True,
        mlp_bias=True,
        classifier_bias=True,
    ),
}
# answerdotai/ModernBERT-base's config.json (transformers 4.47 keys), computation fields.
HUB_BASE = dict(
    model_type="modernbert",
    vocab_size=50368,
    hidden_size=768,
    intermediate_size=1152,
    num_hidden_layers=22,
    num_attention_heads=12,
    hidden_activation="gelu",
    global_attn_every_n_layers=3,
    global_rope_theta=160000.0,
    local_rope_theta=10000.0,
    local_attention=128,
    norm_eps=1e-05,
    norm_bias=False,
    attention_bias=False,
    mlp_bias=False,
    classifier_pooling="mean",
    classifier_bias=False,
    classifier_activation="gelu",
    pad_token_id=50283,
    position_embedding_type="absolute",
)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random norm weights and biases (transformers inits them to 1 and 0)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _hf(name: str, attn: str = "eager") -> ModernBertForSequenceClassification:
    torch.manual_seed(0)
    config = ModernBertConfig(**TINY, **CONFIGS[name])
    config._attn_implementation = attn
    return _perturbed(ModernBertForSequenceClassification(config))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_model(request) -> ModernBertForSequenceClassification:
    return _hf(request.param)


def _batch(seed: int = 0):
    """Padded pair batch [3, 12]: [CLS] a [SEP] b [SEP], lengths 12, 7, 3."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, size=(3, 12))
    mask = np.zeros_like(ids)
    for row, n in enumerate([12, 7, 3]):
        ids[row, [0, n // 2, n - 1]] = [1, 2, 2]
        mask[row, :n] = 1
        ids[row, n:] = 0
    return ids, mask


def _torch(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _load(module, state, ids, mask):
    """Params for `module` from an HF state dict; every key used, every leaf found."""
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), ids, mask)["params"])
    params, missing, unused = hf_to_flax(state, target)
    assert missing == [] and unused == []
    return params


def test_layer_types_mix_global_and_local(hf_model):
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())
    assert set(cfg.layer_types) == {modernbert.GLOBAL, modernbert.LOCAL}
    assert cfg.sliding_window == 2 < 12


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_classifier_and_encoder_parity(name, attn):
    hf_model = _hf(name, attn)
    ids, mask = _batch()
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())

    classifier = model_build(cfg, num_labels=3)
    params = _load(classifier, _state(hf_model), ids, mask)
    assert set(params) == {modernbert.PREFIX, *modernbert.HEAD_NAMES}
    got = classifier.apply({"params": params}, ids, mask)
    want = _torch(hf_model, ids, mask).logits.numpy()
    np.testing.assert_allclose(got.logits, want, atol=TOL, rtol=0)

    encoder = model_build(cfg)
    encoder_params = _load(encoder, _state(hf_model.model), ids, mask)
    assert set(encoder_params) == {root.rstrip(".") for root in modernbert.ENCODER_ROOTS}
    hidden = encoder.apply({"params": encoder_params}, ids, mask).last_hidden_state
    want_hidden = _torch(hf_model.model, ids, mask).last_hidden_state.numpy()
    assert float((np.abs(np.asarray(hidden) - want_hidden) * mask[..., None]).max()) <= TOL


def test_local_window_changes_the_output(hf_model):
    """The sliding window is live: all-global layers give other logits on 12 tokens."""
    ids, mask = _batch()
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())
    params = _load(model_build(cfg, 3), _state(hf_model), ids, mask)
    all_global = dataclasses.replace(cfg, layer_types=(modernbert.GLOBAL,) * 3)
    windowed = model_build(cfg, 3).apply({"params": params}, ids, mask).logits
    unwindowed = model_build(all_global, 3).apply({"params": params}, ids, mask).logits
    assert float(jnp.abs(windowed - unwindowed).max()) > 1e-3


def test_saved_folder_loads_strictly_into_transformers(hf_model, tmp_path):
    """A Flax-initialised classifier → config.json + model.safetensors → transformers'
    from_pretrained (no missing/unexpected keys, same config) → same logits."""
    ids, mask = _batch(seed=1)
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())
    model = model_build(cfg, num_labels=3)
    params = model.init(jax.random.key(1), ids, mask)["params"]
    config_json = {**modernbert.hf_config_dict(cfg), "num_labels": 3}
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    save_file(flax_to_hf(params), tmp_path / "model.safetensors")
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not any(info.values()), info
    assert modernbert.config_from_hf(reloaded.config.to_dict()) == cfg
    ours = model.apply({"params": params}, ids, mask).logits
    want = _torch(reloaded.eval(), ids, mask).logits
    np.testing.assert_allclose(ours, want, atol=TOL, rtol=0)


def test_bfloat16_forward_is_close_to_float32(hf_model):
    ids, mask = _batch()
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())
    params = _load(model_build(cfg, 3), _state(hf_model), ids, mask)
    full = model_build(cfg, 3).apply({"params": params}, ids, mask)
    half = model_build(cfg, 3, dtype=jnp.bfloat16).apply({"params": params}, ids, mask)
    assert half.last_hidden_state.dtype == jnp.float32  # bfloat16 matmul operands only (issue #25)
    assert np.isfinite(np.asarray(half.last_hidden_state, np.float32)).all()
    assert float(jnp.abs(half.logits - full.logits).max()) < 5e-2


def test_lora_on_wqkv(hf_model):
    ids, mask = _batch()
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())
    base = _load(model_build(cfg, 3), _state(hf_model), ids, mask)
    model = model_build(cfg, 3, peft=LoraConfig(rank=4, alpha=8, targets=("Wqkv",)))
    params = model.init(jax.random.key(0), ids, mask)["params"]
    factors = {p: v for p, v in flatten_dict(params).items() if "lora" in p}
    # layers x rank x (in 32 + out 3 * 32) = 3 * 4 * 128 (Hugging Face peft 0.21.2: 1536)
    assert sum(v.size for v in factors.values()) == 1536
    assert {p[-3] for p in factors} == {"Wqkv"}
    merged = unflatten_dict({**flatten_dict(base), **factors})
    got = model.apply({"params": merged}, ids, mask).logits
    want = model_build(cfg, 3).apply({"params": base}, ids, mask).logits
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_houlsby_adapters_count():
    cfg = modernbert.config_from_hf(ModernBertConfig(**TINY, **CONFIGS["base"]).to_dict())
    ids, mask = _batch()
    model = model_build(cfg, 3, peft=AdapterConfig("houlsby", reduction_factor=16))
    params = model.init(jax.random.key(0), ids, mask)["params"]
    adapters = {p: v for p, v in flatten_dict(params).items() if "adapter" in p}
    # layers x {attn, mlp} x (down 32*2 + 2 + up 2*32 + 32) = 3 * 2 * 162
    assert sum(v.size for v in adapters.values()) == 972
    assert {p[3] for p in adapters} == {"attn", "mlp"}  # model/layers/i/attn/adapter/…


def test_dropout_in_training_mode_changes_logits(hf_model):
    ids, mask = _batch()
    cfg = modernbert.config_from_hf(hf_model.config.to_dict())
    params = _load(model_build(cfg, 3), _state(hf_model), ids, mask)
    noisy = dataclasses.replace(cfg, embedding_dropout=0.1, mlp_dropout=0.1, attention_dropout=0.1)
    model = model_build(noisy, 3)
    rngs = {"dropout": jax.random.key(3)}
    train = model.apply({"params": params}, ids, mask, deterministic=False, rngs=rngs)
    evaluated = model.apply({"params": params}, ids, mask)
    assert np.isfinite(np.asarray(train.logits)).all()
    assert float(jnp.abs(train.logits - evaluated.logits).max()) > 1e-4


def test_hub_config_json_reads_as_transformers_does():
    """The hub's older keys (global_attn_every_n_layers, *_rope_theta) give what
    transformers makes of them."""
    ours = modernbert.config_from_hf(HUB_BASE)
    theirs = modernbert.config_from_hf(ModernBertConfig(**HUB_BASE).to_dict())
    assert ours == theirs
    assert ours.layer_types[:4] == (modernbert.GLOBAL, modernbert.LOCAL, modernbert.LOCAL) + (
        modernbert.GLOBAL,
    )
    assert (ours.global_rope_theta, ours.local_rope_theta, ours.sliding_window) == (
        160000.0,
        10000.0,
        64,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(model_type="bert"), "model_type='bert'"),
        (dict(classifier_pooling="max"), "classifier_pooling='max'"),
        (dict(hidden_activation="mish"), "hidden_activation='mish'"),
        (dict(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_scaling="),
        (dict(layer_types=["full_attention"]), "layer_types="),
    ],
)
def test_unsupported_options_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        modernbert.config_from_hf({**HUB_BASE, **change})


def test_full_size_parameter_count_matches_transformers():
    """ModernBERT-base at full size: the same number of weights as transformers'
    classifier (built on the meta device, no memory)."""
    with torch.device("meta"):
        hf_model = ModernBertForSequenceClassification(ModernBertConfig(**HUB_BASE))
    model = model_build(modernbert.config_from_hf(HUB_BASE), num_labels=2)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8), np.int32))
    got = sum(leaf.size for leaf in jax.tree.leaves(shapes))
    assert got == sum(p.numel() for p in hf_model.parameters())


def test_lora_on_every_linear_layer_count():
    """targets Wqkv, Wo, Wi as users write them for Hugging Face peft ("Wo" names both the
    attention and the MLP output): 4800 LoRA weights there too (peft 0.21.2, measured)."""
    cfg = modernbert.config_from_hf(ModernBertConfig(**TINY, **CONFIGS["base"]).to_dict())
    ids, mask = _batch()
    lora = LoraConfig(rank=4, alpha=8, targets=("Wqkv", "Wo", "Wi"))
    params = model_build(cfg, 3, peft=lora).init(jax.random.key(0), ids, mask)["params"]
    factors = [v for p, v in flatten_dict(params).items() if "lora" in p]
    # per layer, rank 4 x (in + out): Wqkv 32+96, attn Wo 32+32, Wi 32+96, mlp Wo 48+32
    assert sum(v.size for v in factors) == 3 * 4 * (128 + 64 + 128 + 80)
