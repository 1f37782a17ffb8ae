"""first_tokens_only: the last encoder layer computes only the tokens the classification head
reads, what the train and eval steps ask of BERT, RoBERTa, ELECTRA and DistilBERT. Logits and
gradients equal those of the full last layer (float32, dropout off), plain and packed rows,
and the step's program does fewer FLOPs. (Packed rows through the steps against the plain full
call: tests/test_packing.py.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import peft
from bertjax.data import batching, packing
from bertjax.models import families
from bertjax.train import evaluate, steps
from tests.test_packing import _dataset, _model, _pad_id, _type_free

FIRST_TOKEN_FAMILIES = [
    "tiny_bert_dir",
    "tiny_roberta_dir",
    "tiny_distilbert_dir",
    "tiny_electra_dir",
]


def _packed_batch(fixture: str):
    pad_id = _pad_id(fixture)
    cols = batching._columns(_type_free(_dataset(40, pad_id, seed=3), fixture))
    batch = next(packing.train_batches(cols, 16, seed=0, epoch=1, pad_id=pad_id))
    assert batch["segment_ids"].max() > 1  # rows hold several examples
    return {k: jnp.asarray(batch[k]) for k in evaluate.MODEL_INPUTS}, cols, batch


def _apply(model, params, batch, packed: bool, first_tokens_only: bool):
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    extra = {k: batch[k] for k in steps.PACKED_INPUTS} if packed else {}
    out = model.apply({"params": params}, *args, first_tokens_only=first_tokens_only, **extra)
    return out.logits.reshape(-1, out.logits.shape[-1])


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("fixture", FIRST_TOKEN_FAMILIES)
def test_first_tokens_only_logits_and_gradients_equal_the_full_last_layer(request, fixture, packed):
    model, params = _model(request, fixture, "lora")
    assert families.family_of_model(model).first_tokens
    batch, cols, raw = _packed_batch(fixture)
    if not packed:  # the same examples, one per row, right-padded
        index = raw["index"][raw["weights"] > 0]
        plain = batching.pad_batch(cols, index, 32, 16, _pad_id(fixture))
        batch = {k: jnp.asarray(plain[k]) for k in evaluate.MODEL_INPUTS}
    mask = peft.trainable_mask(params, "lora")
    trainable, frozen = peft.partition(params, mask)

    def loss(trainable, first_tokens_only):
        logits = _apply(model, peft.combine(frozen, trainable), batch, packed, first_tokens_only)
        return steps.loss_fn(logits, batch["labels"], batch["weights"]), logits

    (full_loss, full_logits), full_grads = jax.value_and_grad(loss, has_aux=True)(trainable, False)
    (got_loss, got_logits), got_grads = jax.value_and_grad(loss, has_aux=True)(trainable, True)
    np.testing.assert_allclose(got_logits, full_logits, atol=1e-5, rtol=0)
    assert abs(float(got_loss) - float(full_loss)) < 1e-6
    leaves = jax.tree.leaves(got_grads)
    assert any(float(jnp.abs(g).max()) > 0 for g in leaves)
    for got, want in zip(leaves, jax.tree.leaves(full_grads), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_distilbert_dir"])
def test_first_tokens_only_shrinks_the_last_layer_and_the_steps_use_it(request, fixture):
    """last_hidden_state holds the first tokens only, and the eval step's program (steps._logits)
    costs what the first-tokens forward costs, less than the full one."""
    model, params = _model(request, fixture, "full")
    batch, _, raw = _packed_batch(fixture)
    rows, entries = raw["cls_index"].shape
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    packed = {k: batch[k] for k in steps.PACKED_INPUTS}
    out = model.apply({"params": params}, *args, first_tokens_only=True, **packed)
    assert out.last_hidden_state.shape[:2] == (rows, entries)

    def flops(fn) -> float:
        return jax.jit(fn).lower(params).compile().cost_analysis()["flops"]

    def forward(first_tokens_only):
        return lambda p: (
            model.apply({"params": p}, *args, first_tokens_only=first_tokens_only, **packed).logits
        )

    full, first = flops(forward(False)), flops(forward(True))
    step = flops(lambda p: steps._logits(model, p, batch, deterministic=True))
    assert first < 0.95 * full
    assert step == pytest.approx(first, rel=0.01)
