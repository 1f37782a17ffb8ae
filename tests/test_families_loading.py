"""DeBERTa-v2/v3 and ModernBERT through bertjax's own loaders: from_pretrained on folders
transformers saved (classifier and bare encoder), save_pretrained back, and the trainable
counts of Hugging Face peft's LoRA recipe."""

import numpy as np
import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    DebertaV2Config,
    ModernBertConfig,
)

import bertjax
import peft
from bertjax.models.families import head_modules

TINY = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, num_labels=3)
CONFIGS = {
    "deberta-v3": DebertaV2Config(
        **TINY,
        num_hidden_layers=2,
        intermediate_size=37,
        max_position_embeddings=40,
        type_vocab_size=0,
        position_biased_input=False,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=8,
        max_relative_positions=20,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        initializer_range=0.2,
    ),
    "modernbert": ModernBertConfig(
        **TINY,
        num_hidden_layers=3,
        intermediate_size=48,
        max_position_embeddings=64,
        global_attn_every_n_layers=3,
        local_attention=4,
        pad_token_id=0,
        initializer_range=0.2,
    ),
}
# LoRA r4 on the attention input projections (2 layers x 2 x 4 x (32 + 32) for DeBERTa,
# 3 layers x 4 x (32 + 96) for ModernBERT's fused Wqkv) + the 3-label classifier 32·3 + 3;
# Hugging Face peft 0.21.2 trains the same 1,123 / 1,635 (its modules_to_save: classifier).
LORA = {
    "deberta-v3": (("query_proj", "value_proj"), 2 * 2 * 4 * 64 + 99),
    "modernbert": (("Wqkv",), 3 * 4 * 128 + 99),
}


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 99, size=(3, 12))
    mask = (np.arange(12) < np.array([[12], [7], [3]])).astype(np.int64)
    return ids * mask, mask


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def saved(request, tmp_path_factory):
    """(name, transformers classifier, its folder)."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(
        CONFIGS[request.param], attn_implementation="eager"
    ).eval()
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, folder


def _logits(model, params, ids, mask):
    return np.asarray(model.apply({"params": params}, ids, mask).logits)


def test_from_pretrained_and_save_pretrained_round_trip(saved, tmp_path):
    name, hf, folder = saved
    ids, mask = _batch()
    model, params = bertjax.from_pretrained(folder, num_labels=3)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    np.testing.assert_allclose(_logits(model, params, ids, mask), want, atol=2e-5, rtol=0)
    bertjax.save_pretrained(model, params, tmp_path)
    again, info = AutoModelForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert not any(info.values()), info
    with torch.no_grad():
        back = again.eval()(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    np.testing.assert_allclose(back.logits.numpy(), want, atol=2e-5, rtol=0)


def test_a_bare_encoder_checkpoint_gets_a_new_head(saved, tmp_path):
    name, hf, _ = saved
    AutoModel.from_config(CONFIGS[name]).save_pretrained(tmp_path)
    model, params = bertjax.from_pretrained(tmp_path, num_labels=2)
    assert params["classifier"]["kernel"].shape == (32, 2)
    encoder, encoder_params = bertjax.from_pretrained(tmp_path)  # the bare encoder
    ids, mask = _batch()
    hidden = encoder.apply({"params": encoder_params}, ids, mask).last_hidden_state
    assert hidden.shape == (3, 12, 32)


def test_lora_trains_what_hugging_face_peft_trains(saved):
    name, _, folder = saved
    targets, count = LORA[name]
    lora = peft.LoraConfig(rank=4, alpha=8, targets=targets)
    model, params = bertjax.from_pretrained(folder, num_labels=3, peft=lora)
    mask = peft.trainable_mask(params, lora, head=head_modules(model))
    assert peft.count(params, mask) == count
