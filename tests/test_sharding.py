"""Data parallelism over a 4-device CPU mesh gives the updates of one device."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from bertjax.runs import checkpoint
from bertjax.train import loop as training
from tests.conftest import TINY, run_config

REPO = Path(__file__).resolve().parents[1]

STEP_CHECK = """
import json, sys
import jax, numpy as np, ml_collections
import bertjax, peft
from bertjax.parallel import sharding
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import init_state, make_eval_step, make_train_step, run_state

assert jax.device_count() == 4, jax.devices()
tiny = json.loads(sys.argv[1])
lora = peft.LoraConfig(4, 8, dropout=0.1, targets=("query", "value"))
model, params = bertjax.from_config(dict(tiny, model_type="bert"), num_labels=3, peft=lora)
mask = peft.trainable_mask(params, lora)
optim = ml_collections.ConfigDict(dict(lr=1e-2, weight_decay=0.01, warmup_ratio=0.0,
                                       schedule="linear", grad_clip=1.0, accumulate=1))
rng = np.random.default_rng(0)
ids = rng.integers(5, 99, (8, 16)).astype(np.int32)
lengths = rng.integers(4, 17, (8, 1))
batch = dict(input_ids=ids, attention_mask=(np.arange(16) < lengths).astype(np.int32),
             token_type_ids=np.zeros_like(ids), labels=rng.integers(0, 3, 8).astype(np.int32),
             weights=np.ones(8, np.float32))
out = {}
for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
    mesh = sharding.data_mesh(devices)
    optimizer = make_optimizer(optim, 10)
    state = sharding.put_replicated(init_state(params, mask, optimizer), mesh)
    step = make_train_step(model, optimizer, mesh)
    put = sharding.put_batch(batch, mesh)
    assert len(put["input_ids"].sharding.device_set) == len(devices)
    one_run = sharding.put_batch({k: v[None] for k, v in batch.items()}, mesh, axis=1)
    losses = []
    for _ in range(3):
        state, metrics = step(state, one_run, jax.random.key(0)[None])
        losses.append(float(metrics["loss"][0]))
    state = run_state(state, 0)
    logits = make_eval_step(model, mesh)(state.trainable, state.frozen, put)
    leaves = jax.tree_util.tree_leaves(state.trainable)
    out[name] = dict(losses=losses, logits=np.asarray(logits).tolist(),
                     trainable=[np.asarray(x).tolist() for x in leaves])
print(json.dumps(out))
"""


def _four_devices(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def test_train_step_on_four_devices_matches_one():
    out = _four_devices("-c", STEP_CHECK, json.dumps(TINY))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    one, four = result["one"], result["four"]
    np.testing.assert_allclose(four["losses"], one["losses"], rtol=1e-5)
    assert one["losses"][2] < one["losses"][0]  # the steps did learn something
    np.testing.assert_allclose(four["logits"], one["logits"], rtol=1e-5, atol=1e-6)
    for a, b in zip(four["trainable"], one["trainable"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_training_run_on_four_devices_matches_one(tmp_path, tiny_bert_vocab_dir, shared_data):
    """The whole pipeline (train.py) data-parallel on 4 devices vs this 1-device process, in
    float32: in bfloat16 the sums split over devices round differently (BitFit's near-zero
    biases then differ by a few percent after 2 epochs of Adam)."""
    assert jax.device_count() == 1
    overrides = {"peft.method": "bitfit", "train.epochs": 2, "dtype": "float32"}
    config = run_config(tmp_path / "one", tiny_bert_vocab_dir, shared_data / "sst2", **overrides)
    one = training.train(config)
    args = [
        "train.py",
        "--config=configs/tiny.py",
        f"--config.model={tiny_bert_vocab_dir}",
        f"--config.data.path={shared_data / 'sst2'}",
        f"--config.workdir={tmp_path / 'four'}",
    ] + [f"--config.{key}={value}" for key, value in _flags(config).items()]
    out = _four_devices(*args)
    assert out.returncode == 0, out.stderr
    four = json.loads(out.stdout.strip().splitlines()[-1])
    assert four["best_step"] == one["best_step"]
    for metric, value in one["validation"].items():
        np.testing.assert_allclose(four["validation"][metric], value, rtol=1e-4, atol=1e-6)
    a = checkpoint.restore(tmp_path / "one" / "checkpoints" / "last")[0]["trainable"]
    b = checkpoint.restore(tmp_path / "four" / "checkpoints" / "last")[0]["trainable"]
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-6)


def _flags(config) -> dict:
    """The fields run_config sets, as command-line overrides of configs/tiny.py."""
    return {
        "data.splits.validation": config.data.splits.validation,
        "data.max_length": config.data.max_length,
        "data.max_train_examples": config.data.max_train_examples,
        "data.max_eval_examples": config.data.max_eval_examples,
        "peft.method": config.peft.method,
        "dtype": config.dtype,
        "train.batch_size": config.train.batch_size,
        "train.epochs": config.train.epochs,
        "train.log_every": config.train.log_every,
        "train.eval_batch_size": config.train.eval_batch_size,
        "optim.lr": config.optim.lr,
        "optim.warmup_ratio": config.optim.warmup_ratio,
    }
