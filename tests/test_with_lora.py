"""peft on a Flax model that knows nothing of it: with_lora / with_ia3 (LoRA, DoRA, IA3) on
Flax's own attention, an MLP and an Einsum; merging; dropout; peft/README.md's example."""

import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peft
from tests.test_model import abstract_params
from tests.test_peft import TINY_BERT


class AttentionMLP(nn.Module):
    """Flax's own attention (DenseGeneral q/k/v/out), an MLP, an Einsum and a task head."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        attn = nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, name="attn")
        h = nn.LayerNorm(name="ln")(x + attn(x, deterministic=not train))
        h = nn.Dense(8, name="down")(nn.gelu(nn.Dense(16, name="up")(h)))
        h = nn.Einsum((8, 2, 3), "btd,dhk->bthk", name="proj")(h).reshape(*h.shape[:2], 6)
        return nn.Dense(2, name="head")(h.mean(axis=1))


def _randomise(params, kinds=("lora", "ia3"), seed=1):
    """Factors away from their identity init, as training would leave them."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    out = []
    for (path, leaf), key in zip(leaves, keys, strict=True):
        names = {getattr(k, "key", None) for k in path}
        noise = 0.3 * jax.random.normal(key, leaf.shape)
        out.append(leaf + noise if names & set(kinds) else leaf)
    return jax.tree_util.tree_unflatten(tree, out)


X = jax.random.normal(jax.random.key(3), (2, 5, 8))


def test_with_lora_spec_tree_on_flax_attention_and_mlp():
    lora = peft.LoraConfig(rank=3, alpha=6, targets="all-linear", head=("head",))
    params = peft.with_lora(AttentionMLP(), lora).init(jax.random.key(0), X)["params"]
    shapes = {
        "/".join(k.key for k in p): tuple(v.shape)
        for p, v in jax.tree_util.tree_flatten_with_path(params)[0]
        if any(k.key == "lora" for k in p)
    }
    assert shapes == {
        "attn/query/lora/a": (8, 3),
        "attn/query/lora/b": (3, 2, 4),
        "attn/key/lora/a": (8, 3),
        "attn/key/lora/b": (3, 2, 4),
        "attn/value/lora/a": (8, 3),
        "attn/value/lora/b": (3, 2, 4),
        "attn/out/lora/a": (2, 4, 3),
        "attn/out/lora/b": (3, 8),
        "up/lora/a": (8, 3),
        "up/lora/b": (3, 16),
        "down/lora/a": (16, 3),
        "down/lora/b": (3, 8),
        "proj/lora/a": (8, 3),
        "proj/lora/b": (3, 2, 3),
    }
    base = AttentionMLP().init(jax.random.key(0), X)["params"]
    plain = jax.tree_util.tree_map(jnp.shape, peft.merge_lora(params, lora))
    assert plain == jax.tree_util.tree_map(jnp.shape, base)


@pytest.mark.parametrize(
    "method",
    [
        peft.LoraConfig(3, 6, targets="all-linear", head=("head",)),
        peft.LoraConfig(2, 8, targets=("query", "value", "up"), use_dora=True, head=("head",)),
        peft.LoraConfig(2, 8, targets="all-linear", use_dora=True, head=("head",)),
        peft.IA3Config(targets=("key", "value", "down", "proj"), feedforward=("down",)),
    ],
    ids=["lora", "dora", "dora-all-linear", "ia3"],
)
def test_injected_model_equals_base_at_init_and_merged_after_training(method):
    wrap, merge = (
        (peft.with_ia3, peft.merge_ia3)
        if isinstance(method, peft.IA3Config)
        else (peft.with_lora, peft.merge_lora)
    )
    model = wrap(AttentionMLP(), method)
    params = model.init(jax.random.key(0), X)["params"]
    plain = AttentionMLP()
    base_params = plain.init(jax.random.key(0), X)["params"]
    want = plain.apply({"params": base_params}, X)
    # Same base weights (init keys differ only in the added factors' own scopes).
    start = peft.combine(params, base_params)
    np.testing.assert_allclose(model.apply({"params": start}, X), want, atol=1e-6, rtol=0)
    trained = _randomise(start)
    got = model.apply({"params": trained}, X)
    assert np.abs(np.asarray(got - want)).max() > 1e-2  # the factors do something
    np.testing.assert_allclose(plain.apply({"params": merge(trained, method)}, X), got, atol=1e-5)


def test_lora_dropout_only_when_training():
    lora = peft.LoraConfig(2, 4, dropout=0.5, targets=("up",), head=("head",))
    model = peft.with_lora(AttentionMLP(), lora)
    params = _randomise(model.init(jax.random.key(0), X)["params"])
    rngs = {"dropout": jax.random.key(5)}
    eval_out = model.apply({"params": params}, X, rngs=rngs)
    train_out = model.apply({"params": params}, X, train=True, rngs=rngs)
    assert np.abs(np.asarray(train_out - eval_out)).max() > 1e-3
    np.testing.assert_array_equal(model.apply({"params": params}, X), eval_out)
    no_dropout = peft.with_lora(AttentionMLP(), dataclasses.replace(lora, dropout=0.0))
    # attention's own dropout rate is 0, so without LoRA dropout training changes nothing
    np.testing.assert_array_equal(
        no_dropout.apply({"params": params}, X, train=True, rngs=rngs), eval_out
    )


def test_with_lora_target_matching_nothing_is_an_error():
    model = peft.with_lora(AttentionMLP(), peft.LoraConfig(2, 4, targets=("qkv",)))
    with pytest.raises(ValueError, match=r"LoRA target 'qkv' matches no layer; available: .*query"):
        model.init(jax.random.key(0), X)


def test_bertjax_encoder_lora_paths_unchanged():
    lora = peft.LoraConfig(2, 4, targets=("query", "value"))
    params = abstract_params(TINY_BERT, 2, lora)
    self_attn = params["bert"]["encoder"]["layer"]["0"]["attention"]["self"]
    assert jax.tree_util.tree_map(jnp.shape, self_attn["query"]) == {
        "kernel": (32, 32),
        "bias": (32,),
        "lora": {"a": (32, 2), "b": (2, 32)},
    }
    assert "lora" not in self_attn["key"]


def test_head_path_nested_and_missing():
    params = AttentionMLP().init(jax.random.key(0), X)["params"]
    mask = peft.trainable_mask(params, "bitfit", head=("attn/out",))
    assert mask["attn"]["out"] == {"kernel": True, "bias": True}
    assert mask["head"] == {"kernel": False, "bias": True}
    with pytest.raises(ValueError, match=r"head 'classifier' matches no parameter; top-level"):
        peft.trainable_mask(params, "bitfit")
    with pytest.raises(ValueError, match=r"head 'head/outt' matches no parameter"):
        peft.bitfit_mask(params, head=("head/outt",))
    with pytest.raises(ValueError, match="selects no parameter"):
        peft.trainable_mask(params, peft.LoraConfig(2, 4), head=("head",))


def test_readme_peft_section_runs(capsys):
    section = (Path(__file__).resolve().parents[1] / "peft" / "README.md").read_text()
    code = section[
        section.index("```python\n") + 10 : section.index("\n```", section.index("```python"))
    ]
    exec(compile(code, "peft/README.md", "exec"), {"__name__": "readme"})
    # 4 linear layers of attention + up + down: a [in, 4] and b [4, out] each; head 16*3+3
    # attn q/k/v: a 16*4, b 4*(2*8); out: a (2*8)*4, b 4*16; up: 16*4 + 4*64; down: 64*4 + 4*16
    factors = 3 * (64 + 64) + (64 + 64) + (64 + 256) + (256 + 64)
    assert capsys.readouterr().out.startswith(f"{factors + 51} of ")
