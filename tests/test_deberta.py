"""DeBERTa-v2/v3 against transformers (PyTorch) on tiny random configs."""

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
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
)
from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

from bertjax.hub.convert import flax_to_hf, hf_to_flax
from bertjax.models import deberta
from bertjax.models.families import build as model_build
from peft.adapter import AdapterConfig
from peft.lora import LoraConfig

TOL = 2e-5  # max |diff| in float32 on non-pad positions
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    num_labels=3,
    initializer_range=0.2,  # weights large enough that attention is far from uniform
)
CONFIGS = {
    # deberta-v3-base's options: no absolute positions, no token types, shared keys,
    # log buckets (distances >= 4 of the 12 tokens land in log-spaced buckets).
    "v3": dict(
        type_vocab_size=0,
        position_biased_input=False,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=8,
        max_relative_positions=20,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
    ),
    # deberta-v2-xlarge's options at tiny size: conv beside layer 0, separate position
    # projections; no buckets but a span of 6 < 12 tokens so distances clip; an embedding
    # narrower than hidden (embed_proj) and token types.
    "v2": dict(
        type_vocab_size=2,
        position_biased_input=True,
        relative_attention=True,
        pos_att_type="p2c|c2p",
        max_relative_positions=6,
        norm_rel_ebd="layer_norm",
        share_att_key=False,
        conv_kernel_size=3,
        conv_act="gelu",
        embedding_size=24,
    ),
}
# microsoft/deberta-v3-base's config.json.
HUB_V3_BASE = dict(
    model_type="deberta-v2",
    attention_probs_dropout_prob=0.1,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    hidden_size=768,
    initializer_range=0.02,
    intermediate_size=3072,
    max_position_embeddings=512,
    relative_attention=True,
    position_buckets=256,
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    pos_att_type="p2c|c2p",
    layer_norm_eps=1e-7,
    max_relative_positions=-1,
    position_biased_input=False,
    num_attention_heads=12,
    num_hidden_layers=12,
    type_vocab_size=0,
    vocab_size=128100,
)


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random LayerNorm weights and biases (transformers inits them to 1 and 0), so a
    misplaced scale or bias cannot go unnoticed."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def hf_model(request) -> DebertaV2ForSequenceClassification:
    torch.manual_seed(0)
    config = DebertaV2Config(**TINY, **CONFIGS[request.param])
    return _perturbed(DebertaV2ForSequenceClassification(config))


def _batch(seed: int = 0):
    """Padded pair batch [3, 12]: lengths 12, 7, 3, second segment from the middle."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 99, size=(3, 12))
    mask, types = np.zeros_like(ids), np.zeros_like(ids)
    for row, n in enumerate([12, 7, 3]):
        mask[row, :n] = 1
        ids[row, n:] = 0
        types[row, n // 2 : n] = 1
    return ids, mask, types


def _torch(model, ids, mask, types):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
        )


def _state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _load(module, state, ids, mask, types):
    """Params for `module` from an HF state dict; every key used, every leaf found."""
    target = jax.eval_shape(lambda: module.init(jax.random.key(0), ids, mask, types)["params"])
    params, missing, unused = hf_to_flax(state, target)
    assert missing == [] and unused == []
    return params


def _masked_max(ours, ref, mask) -> float:
    return float((np.abs(np.asarray(ours) - ref) * mask[..., None]).max())


@pytest.mark.parametrize(
    ("bucket_size", "max_position", "span"), [(256, 512, 1024), (8, 20, 64), (6, 40, 100)]
)
def test_log_buckets_match_transformers(bucket_size, max_position, span):
    relative = np.arange(-span, span + 1)
    want = make_log_bucket_position(torch.tensor(relative), bucket_size, max_position)
    got = deberta.log_bucket_position(relative, bucket_size, max_position)
    np.testing.assert_array_equal(got, want.long().numpy())


def test_classifier_and_encoder_parity(hf_model):
    ids, mask, types = _batch()
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    want = _torch(hf_model, ids, mask, types)

    classifier = model_build(cfg, num_labels=3)
    params = _load(classifier, _state(hf_model), ids, mask, types)
    assert set(params) == {deberta.PREFIX, *deberta.HEAD_NAMES}
    got = classifier.apply({"params": params}, ids, mask, types)
    np.testing.assert_allclose(got.logits, want.logits.numpy(), atol=TOL, rtol=0)

    encoder = model_build(cfg)
    encoder_params = _load(encoder, _state(hf_model.deberta), ids, mask, types)
    assert set(encoder_params) == {root.rstrip(".") for root in deberta.ENCODER_ROOTS}
    hidden = encoder.apply({"params": encoder_params}, ids, mask, types).last_hidden_state
    want_hidden = _torch(hf_model.deberta, ids, mask, types).last_hidden_state.numpy()
    assert _masked_max(hidden, want_hidden, mask) <= TOL


VARIANTS = {
    "absolute_only": dict(relative_attention=False, type_vocab_size=2),
    # transformers still counts pos_att_type in the score scale without relative attention
    "absolute_c2p_scale": dict(relative_attention=False, pos_att_type=["c2p"]),
    "c2p_own_key": dict(relative_attention=True, pos_att_type=["c2p"], position_buckets=8),
    "p2c_shared": dict(
        relative_attention=True, pos_att_type=["p2c"], share_att_key=True, position_buckets=6
    ),
    "grouped_conv": dict(
        relative_attention=True,
        pos_att_type=["c2p", "p2c"],
        conv_kernel_size=5,
        conv_groups=4,
        conv_act="tanh",
        pooler_hidden_act="tanh",
    ),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_option_variants_classifier_parity(variant):
    torch.manual_seed(0)
    hf_model = _perturbed(
        DebertaV2ForSequenceClassification(DebertaV2Config(**TINY, **VARIANTS[variant]))
    )
    ids, mask, types = _batch()
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    model = model_build(cfg, num_labels=3)
    params = _load(model, _state(hf_model), ids, mask, types)
    got = model.apply({"params": params}, ids, mask, types).logits
    want = _torch(hf_model, ids, mask, types).logits.numpy()
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_saved_folder_loads_strictly_into_transformers(hf_model, tmp_path):
    """A Flax-initialised classifier → config.json + model.safetensors → transformers'
    from_pretrained (no missing/unexpected keys, same config) → same logits."""
    ids, mask, types = _batch(seed=1)
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    model = model_build(cfg, num_labels=3)
    params = model.init(jax.random.key(1), ids, mask, types)["params"]
    config_json = {**deberta.hf_config_dict(cfg), "num_labels": 3}
    (tmp_path / "config.json").write_text(json.dumps(config_json))
    save_file(flax_to_hf(params), tmp_path / "model.safetensors")
    reloaded, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not any(info.values()), info
    assert deberta.config_from_hf(reloaded.config.to_dict()) == cfg
    ours = model.apply({"params": params}, ids, mask, types).logits
    want = _torch(reloaded.eval(), ids, mask, types).logits
    np.testing.assert_allclose(ours, want, atol=TOL, rtol=0)


def test_bfloat16_forward_is_close_to_float32(hf_model):
    ids, mask, types = _batch()
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    params = _load(model_build(cfg, 3), _state(hf_model), ids, mask, types)
    full = model_build(cfg, 3).apply({"params": params}, ids, mask, types)
    half = model_build(cfg, 3, dtype=jnp.bfloat16).apply({"params": params}, ids, mask, types)
    assert half.last_hidden_state.dtype == jnp.float32  # bfloat16 matmul operands only (issue #25)
    assert np.isfinite(np.asarray(half.last_hidden_state, np.float32)).all()
    assert float(jnp.abs(half.logits - full.logits).max()) < 5e-2


def test_lora_on_query_and_value_proj(hf_model):
    ids, mask, types = _batch()
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    base = _load(model_build(cfg, 3), _state(hf_model), ids, mask, types)
    lora = LoraConfig(rank=4, alpha=8, targets=("query_proj", "value_proj"))
    model = model_build(cfg, 3, peft=lora)
    params = model.init(jax.random.key(0), ids, mask, types)["params"]
    factors = {p: v for p, v in flatten_dict(params).items() if "lora" in p}
    # layers x {query_proj, value_proj} x rank x (in 32 + out 32) = 2 * 2 * 4 * 64;
    # Hugging Face peft 0.21.2 on the same transformers model: 1024 lora_ weights too.
    assert sum(v.size for v in factors.values()) == 1024
    assert {p[-3] for p in factors} == {"query_proj", "value_proj"}
    # b = 0 at init: the base model's logits, although v3 also projects rel_embeddings
    # through the (LoRA-wrapped) shared query_proj.
    merged = {**flatten_dict(base), **factors}
    got = model.apply({"params": unflatten_dict(merged)}, ids, mask, types).logits
    want = model_build(cfg, 3).apply({"params": base}, ids, mask, types).logits
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_houlsby_adapters_count():
    cfg = deberta.config_from_hf(DebertaV2Config(**TINY, **CONFIGS["v3"]).to_dict())
    ids, mask, types = _batch()
    model = model_build(cfg, 3, peft=AdapterConfig("houlsby", reduction_factor=16))
    params = model.init(jax.random.key(0), ids, mask, types)["params"]
    adapters = {p: v for p, v in flatten_dict(params).items() if "adapter" in p}
    # layers x {attention, ffn} x (down 32*2 + 2 + up 2*32 + 32) = 2 * 2 * 162
    assert sum(v.size for v in adapters.values()) == 648


def test_dropout_in_training_mode_changes_logits(hf_model):
    ids, mask, types = _batch()
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    model = model_build(cfg, 3)
    params = _load(model, _state(hf_model), ids, mask, types)
    rngs = {"dropout": jax.random.key(3)}
    train = model.apply({"params": params}, ids, mask, types, deterministic=False, rngs=rngs)
    evaluated = model.apply({"params": params}, ids, mask, types)
    assert np.isfinite(np.asarray(train.logits)).all()
    assert float(jnp.abs(train.logits - evaluated.logits).max()) > 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(model_type="deberta"), "model_type='deberta'"),
        (dict(pos_att_type=["c2p", "p2p"]), "pos_att_type=['p2p']"),
        (dict(conv_kernel_size=4), "conv_kernel_size=4"),
        (dict(norm_rel_ebd="batch_norm"), "norm_rel_ebd='batch_norm'"),
        (dict(hidden_act="mish"), "hidden_act='mish'"),
    ],
)
def test_unsupported_options_are_refused(change, message):
    raw = {**DebertaV2Config(**TINY, **CONFIGS["v3"]).to_dict(), **change}
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        deberta.config_from_hf(raw)


def test_hub_config_json_reads_as_transformers_does():
    """microsoft/deberta-v3-base's config.json ("p2c|c2p" string) as transformers reads it."""
    ours = deberta.config_from_hf(HUB_V3_BASE)
    assert ours == deberta.config_from_hf(DebertaV2Config(**HUB_V3_BASE).to_dict())
    assert ours.pos_att_type == ("p2c", "c2p") and ours.share_att_key
    assert (ours.attention_span, ours.max_relative, ours.position_biased_input) == (256, 512, False)
    assert ours.norm_rel_ebd == "layer_norm"


def test_input_longer_than_position_table_is_refused(hf_model):
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    ids = np.ones((1, 41), np.int64)  # max_position_embeddings is 40
    model = model_build(cfg, 3)
    if cfg.position_biased_input:
        with pytest.raises(ValueError, match="input length 41 exceeds .* 40 tokens"):
            jax.eval_shape(model.init, jax.random.key(0), ids)
    else:  # v3: relative positions only, any length runs (as in transformers)
        out = jax.eval_shape(lambda: model.apply(model.init(jax.random.key(0), ids), ids))
        assert out.logits.shape == (1, 3)


def _vocab() -> list[tuple[str, float]]:
    """A tiny unigram vocabulary: specials, then pieces with falling scores (ids < 99)."""
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    words = ["▁the", "▁film", "▁was", "▁good", "▁bad", "▁is", "▁it", "?", ".", ","]
    letters = [f"▁{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("abcdefghijklmnopqrstuvwxyz")
    pieces = words + letters
    return [(s, 0.0) for s in specials] + [(p, -1.0 - i) for i, p in enumerate(pieces)]


TEXTS = (["the film was good.", "bad", "is it?"], ["is it good?", "it was", "good, good"])


def test_tokenized_pairs_through_the_classifier(hf_model, tmp_path):
    """DebertaV2Tokenizer (tokenizers backend, no sentencepiece) saved and reloaded with
    AutoTokenizer; its pair encoding (token_type_ids 0/1, padding) → same logits."""
    from transformers import AutoTokenizer, DebertaV2Tokenizer

    DebertaV2Tokenizer(vocab=_vocab(), unk_id=3).save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    enc = tokenizer(*TEXTS, padding=True, return_tensors="np")
    ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    assert types.max() == 1 and mask.min() == 0 and ids[0, 0] == tokenizer.cls_token_id
    cfg = deberta.config_from_hf(hf_model.config.to_dict())
    model = model_build(cfg, 3)
    params = _load(model, _state(hf_model), ids, mask, types)
    got = model.apply({"params": params}, ids, mask, types).logits
    want = _torch(hf_model, ids, mask, types).logits.numpy()
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_spm_model_only_folder_tokenizes_like_tokenizer_json(tmp_path):
    """Hub DeBERTa-v3 folders ship spm.model only; transformers converts it with the
    `sentencepiece` package (without it: an error about tiktoken)."""
    pytest.importorskip("sentencepiece")
    from transformers import AutoTokenizer, DebertaV2Tokenizer
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()  # the proto class transformers itself reads with
    for piece, score in _vocab():
        entry = proto.pieces.add(piece=piece, score=score)
        entry.type = 3 if piece.startswith("[") else 1  # CONTROL or NORMAL
    proto.pieces[3].type = 2  # UNKNOWN
    proto.trainer_spec.model_type = 1  # unigram
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 3, -1, -1
    proto.normalizer_spec.add_dummy_prefix = True
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "spm.model").write_bytes(proto.SerializeToString())
    (tmp_path / "spm" / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "DebertaV2Tokenizer", "do_lower_case": false}'
    )
    from_spm = AutoTokenizer.from_pretrained(tmp_path / "spm")
    from_vocab = DebertaV2Tokenizer(vocab=_vocab(), unk_id=3)
    assert from_spm(*TEXTS, padding=True).data == from_vocab(*TEXTS, padding=True).data


def test_full_size_parameter_count_matches_transformers():
    """deberta-v3-base at full size (128k vocabulary, 256 buckets): the same number of
    weights as transformers' classifier (built on the meta device, no memory)."""
    with torch.device("meta"):
        hf_model = DebertaV2ForSequenceClassification(DebertaV2Config(**HUB_V3_BASE))
    model = model_build(deberta.config_from_hf(HUB_V3_BASE), num_labels=2)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 8), np.int32))
    got = sum(leaf.size for leaf in jax.tree.leaves(shapes))
    assert got == sum(p.numel() for p in hf_model.parameters())
