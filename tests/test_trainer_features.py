"""TensorBoard events, early stopping (single runs and group members), activation checkpointing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.util.tensor_util import make_ndarray

import peft
from bertjax import runs
from bertjax.runs import checkpoint
from bertjax.train import loop as training
from bertjax.train import memory, stopping
from bertjax.train.build import remat_of
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import init_state, loss_fn, make_train_step, stack_states
from tests.conftest import TINY, best_logged_step, run_config, run_script

REPO = Path(__file__).resolve().parents[1]
# Vectorized vs separate runs: float32 rounding of batched matmuls (as tests/test_sweep.py).
RTOL, ATOL = 1e-5, 1e-6


class Crash(Exception):
    """Stands for the process dying at a chosen point."""


def _events(run: Path) -> EventAccumulator:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def test_events_hold_metrics_jsonl_and_a_redone_part_is_not_doubled(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    """A crash at the save of step 8 (after its records were written) and a resume from the
    checkpoint of step 4: TensorBoard's reader sees each step once, with metrics.jsonl's
    values; the learning rate is the linear decay's (hand-derived)."""
    config = run_config(
        tmp_path / "run",
        tiny_bert_vocab_dir,
        shared_data / "sst2",
        **{"train.eval_every": 4, "train.log_every": 2, "peft.method": "lora"},
    )
    save_last = runs.save_last

    def crash_at_8(run, tree, step):
        if step == 8:
            raise Crash
        save_last(run, tree, step)

    monkeypatch.setattr(runs, "save_last", crash_at_8)
    with pytest.raises(Crash):
        training.train(config)
    before = _events(tmp_path / "run")
    assert [e.step for e in before.Scalars("train/loss")] == [2, 4, 6, 8]
    monkeypatch.setattr(runs, "save_last", save_last)
    summary = training.train(config)  # resumes from step 4

    events = _events(tmp_path / "run")
    records = runs.read_metrics(tmp_path / "run")
    expected = {}
    for r in records:
        values = {"loss": r["loss"], **r["metrics"]}
        if r["split"] == "train":
            values.update(lr=r["lr"], grad_norm=r["grad_norm"], examples_per_s=r["examples_per_s"])
        for key, value in values.items():
            expected.setdefault(f"{r['split']}/{key}", []).append((r["step"], value))
    assert set(expected) == set(events.Tags()["scalars"])
    assert {"train/lr", "train/grad_norm", "validation/accuracy", "test/accuracy"} <= set(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in points], tag  # once each, in order
        np.testing.assert_allclose([v for _, v in got], [v for _, v in points], rtol=1e-6)
    # 8 optimizer updates, no warmup: lr · (1 - count / 8) with count = step - 1.
    lrs = {r["step"]: r["lr"] for r in records if r["split"] == "train"}
    assert lrs == pytest.approx({2: 1e-3 * 7 / 8, 4: 1e-3 * 5 / 8, 6: 1e-3 * 3 / 8, 8: 1e-3 / 8})
    assert all(r["grad_norm"] > 0 for r in records if r["split"] == "train")
    text = make_ndarray(events.Tensors("config/text_summary")[0].tensor_proto).item().decode()
    logged = json.loads(text)  # the resolved config, checked field by field against the run's
    assert logged["model"] == str(tiny_bert_vocab_dir) and logged["peft"]["method"] == "lora"
    assert (logged["train"]["eval_every"], logged["train"]["log_every"]) == (4, 2)
    assert logged["data"]["text_fields"] == ["sentence"] and logged["optim"]["lr"] == 1e-3
    assert logged["peft"]["lora"]["targets"] == ["query", "value"]
    assert logged["train"]["max_steps"] is None and logged["workdir"] == str(tmp_path / "run")
    assert summary["best_step"] == best_logged_step(records, "accuracy")


def test_tensorboard_off_writes_no_events(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = run_config(
        tmp_path / "run",
        tiny_bert_vocab_dir,
        shared_data / "sst2",
        **{"log.tensorboard": False, "peft.method": "head", "train.max_steps": 2},
    )
    training.train(config)
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / runs.SUMMARY_FILE).is_file()


# A fresh interpreter where torch is installed: an event writer, then torch itself.
EVENTS_WITHOUT_TORCH = """
import json, sys
from pathlib import Path
from bertjax.runs import events
from tests.conftest import run_config

folder = Path(sys.argv[1])
config = run_config(folder, folder, folder)
writer = events.Events(folder, config, 0)
writer.record(dict(step=1, split="train", loss=0.5, metrics={}, lr=1e-3))
writer.close()
after_writer = "torch" in sys.modules
import torch

print(json.dumps([after_writer, torch.ones(2).sum().item()]))
"""


def test_the_event_writer_does_not_import_torch_and_torch_still_imports(tmp_path):
    """tensorboardX's writer imports torch wherever it is installed (1.1 s of a run's start);
    ours is imported with torch hidden, and torch imports as usual afterwards."""
    pytest.importorskip("torch")  # the dev/test extra installs it
    script = tmp_path / "events_without_torch.py"
    script.write_text(EVENTS_WITHOUT_TORCH)
    out = run_script(script, tmp_path / "run", env={"PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    after_writer, total = json.loads(out.stdout.strip().splitlines()[-1])
    assert after_writer is False
    assert total == 2.0
    scalars = _events(tmp_path / "run").Scalars("train/loss")
    assert [(e.step, e.value) for e in scalars] == [(1, 0.5)]


# ---- early stopping ----

# lr 0 keeps the parameters, so validation accuracy never changes: with patience 2 and an
# evaluation every 2 steps, the run improves at step 2 (from nothing), not at 4 and 6, and
# stops at step 6 of 16.
PLATEAU = {
    "optim.lr": 1e-12,  # > 0 (a config check) yet too small to change a prediction
    "train.epochs": 2,
    "train.eval_every": 2,
    "train.early_stopping_patience": 2,
    "peft.method": "lora",
    "data.max_length": 16,
}
REASON = "accuracy did not improve by more than 0.0 for 2 evaluations (best {:.4f} at step 2)"


def _split(records: list[dict], split: str) -> list[int]:
    return [r["step"] for r in records if r["split"] == split]


def _numbers(records: list[dict]) -> list[tuple]:
    """What a record says about training (not its wall time)."""
    return [(r["split"], r["step"], r["loss"], r["metrics"]) for r in records]


def test_early_stopping_stops_at_the_expected_evaluation_and_resumes_without_training(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    config = run_config(tmp_path / "run", tiny_bert_vocab_dir, shared_data / "sst2", **PLATEAU)
    # Interrupted at step 5, after one evaluation without improvement (step 4): the count
    # must survive the resume, or the run would stop at step 8 instead of 6.
    monkeypatch.setenv(stopping.SELF_SIGNAL, "SIGTERM@train:5")
    assert training.train(config)["interrupted_at"] == 5
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    summary = training.train(config)
    accuracy = summary["validation"]["accuracy"]
    assert summary["stopped_early"] == dict(step=6, reason=REASON.format(accuracy))
    assert summary["best_step"] == 2
    run = tmp_path / "run"
    assert json.loads((run / runs.SUMMARY_FILE).read_text()) == summary
    records = runs.read_metrics(run)
    assert _split(records, "validation") == [2, 4, 6]
    assert _split(records, "train") == [4]  # log_every 4: nothing logged past step 6
    assert _split(records, "test") == [2]
    _, meta = checkpoint.restore(run / "checkpoints" / "last")
    assert meta["step"] == 6 and meta["stopped"] == summary["stopped_early"]

    # Killed after stopping but before summary.json: the same command trains no further.
    (run / runs.SUMMARY_FILE).unlink()
    again = training.train(config)
    for key in ("stopped_early", "best_step", "validation", "test"):
        assert again[key] == summary[key]
    assert _numbers(runs.read_metrics(run)) == _numbers(records)
    _, meta = checkpoint.restore(run / "checkpoints" / "last")
    assert meta["step"] == 6


def test_a_stopped_group_member_stays_and_the_other_equals_its_separate_run(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    """Two runs in one program: lr 0 plateaus and stops at step 6; lr 1e-3 trains all 16
    steps (it is never stopped here, whatever its accuracy does) and ends where it ends
    trained alone."""
    original = stopping.early_stopping

    def only_the_plateau(run, *args):
        if run.config.optim.lr == PLATEAU["optim.lr"]:
            original(run, *args)

    monkeypatch.setattr(stopping, "early_stopping", only_the_plateau)
    data = shared_data / "sst2"
    plateau = run_config(tmp_path / "g0", tiny_bert_vocab_dir, data, **PLATEAU)
    going = run_config(tmp_path / "g1", tiny_bert_vocab_dir, data, **PLATEAU)
    going.optim.lr = 1e-3
    alone = run_config(tmp_path / "alone", tiny_bert_vocab_dir, data, **PLATEAU)
    alone.optim.lr = 1e-3
    # float32: a group's step is the vmapped one, a run's alone is not (K = 1); in bfloat16
    # their sums may round differently (~1e-6 on these weights after 16 AdamW steps)
    for config in (plateau, going, alone):
        config.dtype = "float32"
    first, second = training.train_runs([plateau, going])
    assert first["stopped_early"]["step"] == 6
    assert second["stopped_early"] is None
    training.train(alone)

    records = runs.read_metrics(tmp_path / "g0")
    assert max(r["step"] for r in records if r["split"] != "test") == 6
    # A folder of run folders (a sweep) is one TensorBoard run per run folder.
    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    assert set(multiplexer.Runs()) == {"g0", "g1", "alone"}
    stopped = [e.step for e in multiplexer.Scalars("g0", "validation/accuracy")]
    assert stopped == [2, 4, 6]
    (a, step_a), (b, step_b) = _last(tmp_path / "g1"), _last(tmp_path / "alone")
    assert step_a == step_b == 16
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=ATOL)
    group = _numbers(runs.read_metrics(tmp_path / "g1"))
    single = _numbers(runs.read_metrics(tmp_path / "alone"))
    assert [r[:2] for r in group] == [r[:2] for r in single]
    for (*_, loss_a, a), (*_, loss_b, b) in zip(group, single, strict=True):
        np.testing.assert_allclose(loss_a, loss_b, rtol=RTOL)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6)


def _last(run: Path):
    tree, meta = checkpoint.restore(run / "checkpoints" / "last")
    return tree["trainable"], meta["step"]


def _tiny_model(remat=False, **overrides):
    from transformers import BertConfig

    from bertjax.hub.pretrained import from_config
    from bertjax.models.families import build, model_config_from_hf

    hf = BertConfig(**{**TINY, **overrides})
    _, params = from_config(hf, 3)
    return build(model_config_from_hf(hf), 3, None, jnp.float32, remat), params


def _batch(rng, batch: int, length: int) -> dict:
    ids = rng.integers(3, 99, size=(batch, length)).astype(np.int32)
    return dict(
        input_ids=ids,
        attention_mask=(np.arange(length) < rng.integers(1, length + 1, (batch, 1))).astype(
            np.int32
        ),
        token_type_ids=np.zeros_like(ids),
        labels=rng.integers(0, 3, batch).astype(np.int32),
        weights=np.ones(batch, np.float32),
    )


def test_an_inactive_member_is_left_exactly_as_it_was():
    """state.active [True, False]: member 0 steps as it would alone, member 1's step,
    parameters and optimizer state stay bit for bit."""
    model, params = _tiny_model()
    mask = peft.trainable_mask(params, "bitfit")
    optimizer = make_optimizer(run_config(Path("x"), Path("m"), Path("d")).optim, 10)
    one = init_state(params, mask, optimizer)
    single = jax.tree_util.tree_map(lambda x: x[0], one.replace(frozen=None))
    two = stack_states([single, single]).replace(frozen=one.frozen, active=jnp.array([True, False]))
    before = jax.tree_util.tree_map(np.array, two.replace(frozen=None))
    batch = _batch(np.random.default_rng(0), 4, 8)
    rngs = jnp.stack([jax.random.key(0)] * 2)
    stepped, _ = make_train_step(model, optimizer)(
        two, {k: np.stack([v, v]) for k, v in batch.items()}, rngs
    )
    alone, _ = make_train_step(model, optimizer)(
        init_state(params, mask, optimizer), {k: v[None] for k, v in batch.items()}, rngs[:1]
    )
    after = stepped.replace(frozen=None)
    leaves = jax.tree_util.tree_leaves
    for x, y in zip(leaves(before), leaves(after), strict=True):
        assert np.array_equal(x[1], np.asarray(y)[1])
    for x, y in zip(leaves(alone.replace(frozen=None)), leaves(after), strict=True):
        x, y = np.asarray(x, np.float64)[0], np.asarray(y, np.float64)[0]
        np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL)
    assert int(after.step[0]) == 1 and int(after.step[1]) == 0


# ---- activation checkpointing ----


@pytest.mark.parametrize("remat", [True, "dots_saveable"])
def test_remat_gives_the_same_loss_and_gradients(remat):
    """Training mode (dropout on, one key): remat recomputes the same masks."""
    shape = dict(num_hidden_layers=4, max_position_embeddings=128)
    plain, params = _tiny_model(**shape)
    rematted, _ = _tiny_model(remat, **shape)
    batch = _batch(np.random.default_rng(1), 16, 128)

    def objective(model):
        def loss(p):
            out = model.apply(
                {"params": p},
                batch["input_ids"],
                batch["attention_mask"],
                batch["token_type_ids"],
                deterministic=False,
                rngs={"dropout": jax.random.key(3)},
            )
            return loss_fn(out.logits, batch["labels"], batch["weights"])

        return jax.jit(jax.value_and_grad(loss))(params)

    (loss_a, grads_a), (loss_b, grads_b) = objective(plain), objective(rematted)
    assert abs(float(loss_a) - float(loss_b)) <= 1e-5
    leaves = jax.tree_util.tree_leaves
    for x, y in zip(leaves(grads_a), leaves(grads_b), strict=True):
        assert float(jnp.max(jnp.abs(x - y))) <= 1e-5


REMAT_MEMORY = """
import json, jax, jax.numpy as jnp, numpy as np
from bertjax.train.steps import compiled_memory, loss_fn
from tests.test_trainer_features import _tiny_model
shape = dict(num_hidden_layers=4, max_position_embeddings=128)
ids = jnp.zeros((16, 128), jnp.int32)
temp = {}
for remat in (False, True):
    model, params = _tiny_model(remat, **shape)
    def loss(p):
        out = model.apply({"params": p}, ids, jnp.ones_like(ids), jnp.zeros_like(ids),
                          deterministic=False, rngs={"dropout": jax.random.key(0)})
        return loss_fn(out.logits, jnp.zeros(16, jnp.int32), jnp.ones(16))
    temp[str(remat)] = compiled_memory(jax.jit(jax.value_and_grad(loss)), params)["temp"]
print(json.dumps(temp))
"""


def test_remat_lowers_the_temp_memory_of_the_backward_pass():
    """XLA's temp memory of loss and gradients, 4 layers at 16 x 128 (attention maps
    dominate), with the memory-aware CPU schedule (bertjax.train.memory.CPU_MEMORY_SCHEDULER; the
    default CPU scheduler ignores memory). Measured (jax 0.10.2): 56.9 MiB without remat,
    36.5 MiB with."""
    env = {**os.environ, "XLA_FLAGS": memory.CPU_MEMORY_SCHEDULER, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", REMAT_MEMORY],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    temp = json.loads(out.stdout.strip().splitlines()[-1])
    assert temp["True"] < 0.75 * temp["False"], temp


def test_bad_remat_value_is_one_line_naming_the_field():
    config = run_config(Path("x"), Path("m"), Path("d"), **{"train.remat": "dots"})
    with pytest.raises(ValueError, match=r"train.remat='dots' unknown; use False, True or"):
        remat_of(config)
    config.train.remat = "dots_saveable"
    assert remat_of(config) == "dots_saveable"
