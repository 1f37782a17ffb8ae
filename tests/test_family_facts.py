"""Per-family facts read from the Family table: the norms adapter methods train, remat,
packing; counts worked by hand for tiny models."""

import jax
import jax.numpy as jnp
import pytest
from flax.traverse_util import flatten_dict
from transformers import ModernBertConfig

import peft
from bertjax.models import families
from bertjax.models.families import build, model_config_from_hf, norm_modules
from tests.conftest import TINY

# ModernBERT-base's layout at tiny sizes: hidden 32, 3 layers, no biases (norm_bias False).
MODERN = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    global_attn_every_n_layers=3,
    classifier_pooling="cls",
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
)


def _init(model):
    ids = jnp.ones((1, 6), jnp.int32)
    return model.init(jax.random.key(0), ids, jnp.ones_like(ids))["params"]


def _trained(params, mask) -> set[tuple[str, ...]]:
    flat_mask = flatten_dict(mask)
    return {path for path, on in flat_mask.items() if on}


def test_modernbert_adapter_run_trains_its_norms():
    """Houlsby et al. (2019) train every layer norm beside the adapters; ModernBERT's are
    `norm`, `attn_norm`, `mlp_norm` and `final_norm`, none named LayerNorm."""
    config = model_config_from_hf(ModernBertConfig(**MODERN).to_dict())
    model = build(config, 3, peft.AdapterConfig("houlsby", reduction_factor=16))
    params = _init(model)
    mask = peft.trainable_mask(params, model.peft, norms=norm_modules(model))
    # adapters: 3 layers x {attn, mlp} x (down 32·2 + 2 + up 2·32 + 32) = 972
    # norms (scale only, 32 each): embeddings/norm, attn_norm of layers 1 and 2 (layer 0 has
    # none), mlp_norm of layers 0-2, final_norm: 7 x 32 = 224
    # classifier 32·3 + 3 = 99; the prediction head (head/dense, head/norm) stays as loaded
    assert peft.count(params, mask) == 972 + 224 + 99
    norms = {path for path in _trained(params, mask) if "adapter" not in path}
    assert norms == {
        ("model", "embeddings", "norm", "scale"),
        ("model", "layers", "1", "attn_norm", "scale"),
        ("model", "layers", "2", "attn_norm", "scale"),
        ("model", "layers", "0", "mlp_norm", "scale"),
        ("model", "layers", "1", "mlp_norm", "scale"),
        ("model", "layers", "2", "mlp_norm", "scale"),
        ("model", "final_norm", "scale"),
        ("classifier", "kernel"),
        ("classifier", "bias"),
    }
    # peft's generic default ("layernorm" in a module name) finds none of them
    assert peft.count(params, peft.trainable_mask(params, model.peft)) == 972 + 99


def test_distilbert_adapter_norms_by_family_and_by_default_rule_agree():
    config = model_config_from_hf(
        dict(
            vocab_size=99,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=40,
            model_type="distilbert",
        )
    )
    model = build(config, 2, peft.AdapterConfig("houlsby", reduction_factor=16))
    params = _init(model)
    head = families.head_modules(model)
    mask = peft.trainable_mask(params, model.peft, head=head, norms=norm_modules(model))
    # adapters 2 layers x 2 x 162 = 648; norms (scale + bias, 64 each): embeddings/LayerNorm
    # and per layer sa_layer_norm, output_layer_norm = 5 x 64 = 320; pre_classifier
    # 32·32 + 32 = 1056; classifier 32·2 + 2 = 66
    assert peft.count(params, mask) == 648 + 320 + 1056 + 66
    assert mask == peft.trainable_mask(params, model.peft, head=head)


def test_norm_that_matches_nothing_is_an_error():
    model = build(model_config_from_hf(dict(TINY, model_type="bert")), 2, peft.AdapterConfig())
    with pytest.raises(ValueError, match="norm 'attn_norm' matches no module"):
        peft.trainable_mask(_init(model), model.peft, norms=("LayerNorm", "attn_norm"))


@pytest.mark.parametrize("model_type", ["bert", "roberta", "xlm-roberta", "camembert"])
def test_every_bert_type_is_one_family_entry_with_remat_and_packing(model_type):
    family = families.family_of(model_type)
    assert (family.remat, family.packing, family.memory_estimate) == (True, True, True)
    assert family.prefix == ("bert" if model_type == "bert" else "roberta")


def test_remat_refused_for_a_family_without_it():
    config = model_config_from_hf(dict(TINY, model_type="electra", embedding_size=16))
    with pytest.raises(ValueError, match="not electra; use --config.train.remat=False"):
        build(config, 2, remat=True)
    build(model_config_from_hf(dict(TINY, model_type="bert")), 2, remat=True)  # accepted


def test_adapter_run_config_trains_modernbert_norms(tmp_path):
    """The run's trainable mask (bertjax.train.build) passes the family's norms to peft."""
    import types

    import torch
    from transformers import ModernBertForSequenceClassification

    from bertjax.train.build import build_model
    from tests.conftest import run_config

    torch.manual_seed(0)
    hf = ModernBertForSequenceClassification(ModernBertConfig(**MODERN, num_labels=3))
    hf.save_pretrained(tmp_path / "modernbert")
    config = run_config(tmp_path / "run", tmp_path / "modernbert", tmp_path / "data")
    config.peft.method = "adapter"
    setup = build_model(config, ["a", "b", "c"], types.SimpleNamespace(pad_token_id=0))
    assert peft.count(setup.params, setup.mask) == 972 + 224 + 99  # as counted above
