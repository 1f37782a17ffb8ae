"""Parity with Hugging Face peft (PyTorch): trainable counts, and adapters written by either
side loaded by the other with the same logits. HF peft runs in a subprocess from .hf-peft/
(its `peft` clashes with ours by name)."""

import json

import jax
import numpy as np
import pytest

import bertjax
import peft
from bertjax.hub import hf_peft
from tests.hf_reference import reference, require_hf_peft
from tests.test_model import BERT_BASE, ROBERTA_BASE, abstract_params
from tests.test_with_lora import _randomise

IDS = [[0, 5, 7, 9, 3, 11, 2], [0, 8, 3, 2, 1, 1, 1]]
MASK = [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0]]

require_hf_peft(module_level=True)


LORA_QV = dict(rank=8, alpha=16, targets=("query", "value"))
METHODS = {
    "lora": (
        peft.LoraConfig(**LORA_QV),
        dict(kind="lora", r=8, lora_alpha=16, target_modules=["query", "value"]),
    ),
    "dora": (
        peft.LoraConfig(**LORA_QV, use_dora=True),
        dict(kind="lora", r=8, lora_alpha=16, target_modules=["query", "value"], use_dora=True),
    ),
    "ia3": (peft.IA3Config(), dict(kind="ia3")),
}


def test_trainable_counts_equal_hf_peft_on_base_shapes():
    # Independent derivation, bert-base (L=12, H=768, FFN 3072, 2 labels; head 768*2+2 = 1,538)
    #   LoRA r=8 on query, value: 12 * 2 * (768*8 + 8*768) = 294,912 -> + head 296,450
    #   DoRA adds a magnitude per output unit: 12 * 2 * 768 = 18,432   -> 314,882
    #   IA3: key 768 + value 768 (outputs) + attention/output/dense 768 + output/dense 3072
    #        (inputs) = 5,376 per layer -> 64,512 -> + head 66,050
    # roberta-base: same layers; head classifier.dense 768*768+768 + out_proj 768*2+2 = 592,130
    want = {
        ("bert", "lora"): 296_450,
        ("bert", "dora"): 314_882,
        ("bert", "ia3"): 66_050,
        ("roberta", "lora"): 294_912 + 592_130,
        ("roberta", "dora"): 294_912 + 18_432 + 592_130,
        ("roberta", "ia3"): 64_512 + 592_130,
    }
    jobs = [dict(job="count", family=f, method=METHODS[m][1]) for f, m in want]
    hf = dict(zip(want, reference(jobs), strict=True))
    for (family, name), expected in want.items():
        method = METHODS[name][0]
        params = abstract_params(BERT_BASE if family == "bert" else ROBERTA_BASE, 2, method)
        ours = peft.count(params, peft.trainable_mask(params, method))
        assert (ours, hf[family, name]["trainable"]) == (expected, expected), (family, name)
        # HF peft keeps the original head beside its trainable copy (modules_to_save)
        head = peft.count(params["classifier"])
        assert peft.count(params) + head == hf[family, name]["total"], (family, name)


def _our_logits(model, params):
    ids, mask = np.asarray(IDS), np.asarray(MASK)
    return np.asarray(model.apply({"params": params}, ids, mask).logits)


TINY_METHODS = {
    "lora": peft.LoraConfig(2, 4, targets=("query", "value", "intermediate.dense")),
    "dora": peft.LoraConfig(2, 4, targets=("query", "value", "output.dense"), use_dora=True),
    "ia3": peft.IA3Config(),
}


@pytest.fixture(scope="module")
def exported(tiny_bert_dir, tiny_roberta_dir, tmp_path_factory):
    """Our adapters (trained-looking factors and head) written in HF peft's format."""
    cases = {}
    for family, base in (("bert", tiny_bert_dir), ("roberta", tiny_roberta_dir)):
        for name, method in TINY_METHODS.items():
            model, params = bertjax.from_pretrained(base, 3 if family == "bert" else 2, method)
            params = _randomise(params, kinds=("lora", "ia3", "classifier"))
            out = tmp_path_factory.mktemp(f"{family}_{name}")
            hf_peft.save_adapter(method, jax.device_get(params), out, base=str(base))
            cases[family, name] = (out, _our_logits(model, params), model, params)
    return cases


def test_our_adapters_load_in_hf_peft_with_our_logits(exported):
    jobs = [
        dict(job="logits", adapter=str(out), ids=IDS, mask=MASK) for out, *_ in exported.values()
    ]
    for (case, (_, ours, *_)), hf in zip(exported.items(), reference(jobs), strict=True):
        np.testing.assert_allclose(hf["logits"], ours, atol=1e-4, err_msg=str(case))
        assert np.abs(ours).max() > 1e-2


def test_our_adapters_load_back(exported):
    for out, ours, *_ in exported.values():
        model, params = bertjax.from_pretrained(out)
        np.testing.assert_allclose(_our_logits(model, params), ours, atol=1e-6)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_adapters_made_by_hf_peft_load_with_its_logits(family, request, tmp_path):
    base = request.getfixturevalue(f"tiny_{family}_dir")
    methods = {
        "lora": dict(kind="lora", r=2, lora_alpha=4, target_modules=["query", "value", "dense"]),
        "dora": dict(
            kind="lora", r=2, lora_alpha=8, target_modules=["key", "output.dense"], use_dora=True
        ),
        "ia3": dict(kind="ia3"),
    }
    jobs = [
        dict(job="make", base=str(base), out=str(tmp_path / n), method=m, ids=IDS, mask=MASK)
        for n, m in methods.items()
    ]
    for name, hf in zip(methods, reference(jobs), strict=True):
        model, params = bertjax.from_pretrained(tmp_path / name)
        np.testing.assert_allclose(
            _our_logits(model, params), hf["logits"], atol=1e-4, err_msg=name
        )
        plain, base_params = bertjax.from_pretrained(base)
        del plain, base_params


def test_adapter_dir_with_another_base_and_mismatched_config(exported, tiny_bert_dir, tmp_path):
    out, *_ = exported["bert", "lora"]
    config = json.loads((out / hf_peft.CONFIG_FILE).read_text())
    (tmp_path / hf_peft.CONFIG_FILE).write_text(
        json.dumps(dict(config, base_model_name_or_path=None))
    )
    (tmp_path / hf_peft.WEIGHTS_FILE).write_bytes((out / hf_peft.WEIGHTS_FILE).read_bytes())
    with pytest.raises(ValueError, match="no base_model_name_or_path; pass base="):
        bertjax.from_pretrained(tmp_path)
    model, params = bertjax.from_pretrained(tmp_path, base=tiny_bert_dir)
    assert model.peft.rank == 2
    with pytest.raises(ValueError, match=r"rank differ\); make the config match the adapter"):
        bertjax.from_pretrained(tmp_path, base=tiny_bert_dir, peft=peft.LoraConfig(4, 4))
    (tmp_path / hf_peft.CONFIG_FILE).write_text(json.dumps(dict(config, use_rslora=True)))
    with pytest.raises(ValueError, match="use_rslora=True is not supported"):
        bertjax.from_pretrained(tmp_path)


def _weighted_logits_sum(trainable, frozen, model):
    """sum(logits * [1, -2, 0.5][:num_labels]), as the reference's "grads" job."""
    variables = {"params": peft.combine(frozen, trainable)}
    logits = model.apply(variables, np.asarray(IDS), np.asarray(MASK)).logits
    return (logits * np.array([[1.0, -2.0, 0.5]])[:, : logits.shape[-1]]).sum()


def test_gradients_equal_hf_peft(exported):
    """Same gradients for every trainable tensor: DoRA's column norm is detached as in HF peft
    (without the detach, the factors' gradients differ)."""
    cases = {k: v for k, v in exported.items() if k[0] == "bert"}
    jobs = [dict(job="grads", adapter=str(o), ids=IDS, mask=MASK) for o, *_ in cases.values()]
    for (case, (_, _, model, params)), hf in zip(cases.items(), reference(jobs), strict=True):
        mask = peft.trainable_mask(params, model.peft)
        trainable, frozen = peft.partition(params, mask)
        grads = jax.grad(_weighted_logits_sum)(trainable, frozen, model)
        ours = hf_peft.to_hf_state(model.peft, grads)
        assert sorted(ours) == sorted(hf), case
        for name, grad in ours.items():
            np.testing.assert_allclose(
                grad,
                np.array(hf[name]).reshape(grad.shape),
                atol=1e-4,
                rtol=1e-3,
                err_msg=f"{case} {name}",
            )
