"""The training loop's pieces without a run: the plan's step arithmetic, the best and early
stopping rule, divergence, the calls of a step, the status record, the one writer."""

import json
import math
from types import SimpleNamespace

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bertjax import runs
from bertjax.runs import events
from bertjax.train import groups, loop, stopping
from bertjax.train.plan import Schedule, schedule_of


def _tc(**fields):
    base = dict(max_steps=None, epochs=1, log_every=None, eval_every=None)
    return SimpleNamespace(**{**base, **fields})


def _run(tmp_path, name="run", **train) -> runs.Run:
    config = ml_collections.ConfigDict(
        dict(
            name=name,
            log=dict(tensorboard=False),
            optim=dict(lr=1e-3),
            train=dict(
                select_metric="accuracy",
                early_stopping_patience=train.get("patience", 0),
                early_stopping_min_delta=train.get("delta", 0.0),
            ),
        )
    )
    (tmp_path / name).mkdir(exist_ok=True)
    return runs.Run(config, tmp_path / name)


def test_schedule_counts_steps_and_default_log_every():
    """epochs × steps per epoch unless max_steps; ~20 train records an epoch, 1 to 50 apart."""
    assert schedule_of(100, _tc(epochs=3)).total_steps == 300
    assert schedule_of(100, _tc(epochs=3, max_steps=250)).total_steps == 250
    assert schedule_of(200, _tc()).log_every == 10  # 200 // 20
    assert schedule_of(2000, _tc()).log_every == 50  # capped
    assert schedule_of(10, _tc()).log_every == 1  # 10 // 20 = 0, at least 1
    assert schedule_of(200, _tc(log_every=7)).log_every == 7
    assert Schedule(10, 10, 1, accumulate=4).updates == 3  # 4 + 4 + a partial 2
    assert Schedule(100, 250, 5).steps_in_epoch(2) == 50  # the last epoch is cut short


def test_a_short_run_evaluates_a_few_times_by_default():
    """Without eval_every: each epoch's end, and 4 evaluations a run where that is fewer
    (issue #28: a 1-epoch run's curve had one validation point), unless the run is too short
    to leave 5 steps between them."""

    def points(steps_per_epoch, total, **tc):
        schedule = schedule_of(steps_per_epoch, _tc(epochs=1, max_steps=total, **tc))
        return [s for s in range(total + 1) if schedule.is_eval_point(s)]

    assert points(62, 62) == [16, 32, 48, 62]  # the demo: 2,000 sentences, batch 32
    assert points(156, 312) == [78, 156, 234, 312]  # 2 epochs
    assert points(100, 400) == [100, 200, 300, 400]  # 4 epochs: their ends are enough
    assert points(100, 1000) == list(range(100, 1001, 100))
    assert points(16, 16) == [16]  # 4 steps apart: too short
    assert points(20, 20) == [5, 10, 15, 20]
    assert points(62, 62, eval_every=40) == [40, 62]  # as set


def test_eval_points_are_epoch_ends_the_last_step_and_every_eval_every():
    schedule = Schedule(steps_per_epoch=100, total_steps=250, log_every=5, eval_every=30)
    points = [s for s in range(0, 251) if schedule.is_eval_point(s)]
    every_30 = list(range(30, 250, 30))  # 30 … 240
    assert points == sorted(set(every_30) | {100, 200, 250})
    plain = Schedule(steps_per_epoch=100, total_steps=250, log_every=5)
    assert [s for s in range(0, 251) if plain.is_eval_point(s)] == [100, 200, 250]


def test_log_points_are_every_log_every_and_epoch_ends():
    schedule = Schedule(steps_per_epoch=12, total_steps=30, log_every=5)
    points = [s for s in range(1, 31) if schedule.is_log_point(s)]
    assert points == [5, 10, 12, 15, 20, 24, 25, 30]
    assert schedule.epoch(18) == 1.5


def test_best_rule_and_nan():
    """A first evaluation is always the best (also NaN: a run must have a best to finish
    from); later only a larger number is; any number beats a NaN best; NaN beats nothing."""
    status = runs.Status()
    values = [math.nan, 0.5, 0.4, math.nan, 0.6, 0.6]
    improved = [stopping.update_best(status, v, s, {}) for s, v in enumerate(values, 1)]
    assert improved == [True, True, False, False, True, False]
    assert status.best["step"] == 5 and status.best["value"] == 0.6
    only_nan = runs.Status()
    assert [stopping.update_best(only_nan, math.nan, s, {}) for s in (1, 2)] == [True, False]
    assert only_nan.best["step"] == 1


def test_early_stopping_counts_stale_evaluations(tmp_path):
    """patience 2, min_delta 0.01: 0.5 (new), 0.505 (not by > 0.01: stale 1), 0.52 (by
    0.02 over the best 0.505: reset), 0.52 (stale 1), 0.525 (stale 2: stopped at step 5)."""
    run = _run(tmp_path, patience=2, delta=0.01)
    stale = []
    for step, value in enumerate([0.5, 0.505, 0.52, 0.52, 0.525], 1):
        best_before = run.status.best["value"]
        stopping.update_best(run.status, value, step, {})
        stopping.early_stopping(run, value, best_before, step, run.config.train)
        stale.append(run.status.stale_evals)
    assert stale == [0, 1, 0, 1, 2]
    assert run.status.stopped["step"] == 5
    assert "best 0.5250 at step 5" in run.status.stopped["reason"]
    assert not run.training


def test_divergence_is_a_non_finite_loss(tmp_path):
    assert stopping.divergence(0.7, 3, tmp_path) is None
    for bad in (math.nan, math.inf):
        why = stopping.divergence(bad, 12, tmp_path / "last")
        assert why.startswith(f"loss is {bad} at step 12") and str(tmp_path / "last") in why


def test_step_calls_group_members_by_batch_shape():
    """Members 0, 2 on seed 1 and 1, 3 on seed 2: one whole call when the shapes agree and
    all fit; else calls of members sharing a shape, padded to a power of two."""
    of_seed = {1: np.array([0, 2]), 2: np.array([1, 3])}
    same = {1: ((8, 16),), 2: ((8, 16),)}
    assert groups.step_calls(same, of_seed, k=4, cap=4) is None
    capped = groups.step_calls(same, of_seed, k=4, cap=2)
    assert [(t.tolist(), p.tolist()) for t, p in capped] == [([0, 2], [0, 2]), ([1, 3], [1, 3])]
    differ = {1: ((8, 16),), 2: ((8, 8),)}
    calls = groups.step_calls(differ, of_seed, k=4, cap=4)
    assert [(t.tolist(), p.tolist()) for t, p in calls] == [([0, 2], [0, 2]), ([1, 3], [1, 3])]
    three = {1: np.array([0, 1, 2]), 2: np.array([3])}
    calls = groups.step_calls({1: ((8, 16),), 2: ((8, 8),)}, three, k=4, cap=4)
    assert [(t.tolist(), p.tolist()) for t, p in calls] == [
        ([0, 1, 2, 0], [0, 1, 2, 4]),  # padded to 4 slots; the copy's result goes to 4
        ([3], [3]),
    ]


def test_status_meta_round_trip_saves_all_but_divergence():
    status = runs.Status(
        best=dict(value=0.8, step=6, metrics={"accuracy": 0.8}),
        stopped=dict(step=6, reason="why"),
        stale_evals=2,
        last_eval_step=6,
        seconds=1.0,
        epoch_seconds=[3.5],
        diverged="loss is nan",
    )
    meta = runs.status_meta(status, seconds=12.345)
    assert "diverged" not in meta and meta["seconds"] == 12.35
    assert meta["last_eval_step"] == 6 and meta["stale_evals"] == 2
    back = runs.status_from_meta(json.loads(json.dumps(dict(step=6, **meta))))
    assert back == runs.Status(**{**vars(status), "seconds": 12.35, "diverged": None})
    assert runs.status_from_meta(dict(step=3)) == runs.Status()  # an old meta: defaults


def test_writer_appends_metrics_jsonl(tmp_path):
    run = _run(tmp_path)
    writer = events.Writer(run.folder, run.config, 0)
    writer.write(dict(step=2, split="train", loss=0.5, metrics={}))
    writer.write(dict(step=4, split="validation", loss=0.4, metrics={"accuracy": 0.75}))
    writer.close()
    assert [(r["step"], r["split"]) for r in runs.read_metrics(run.folder)] == [
        (2, "train"),
        (4, "validation"),
    ]


def test_log_window_writes_means_and_marks_divergence(tmp_path):
    """Two steps of two members: member 0's losses 1 and 3 (mean 2), member 1's NaN; 2
    steps × batch 4 in 2 s is 4 examples/s; lr is the peak 1e-3 × the schedule's 0.5."""
    members = [_run(tmp_path, "a"), _run(tmp_path, "b")]
    plan = SimpleNamespace(
        schedule=Schedule(steps_per_epoch=4, total_steps=8, log_every=2),
        batches=SimpleNamespace(batch_size=4),
        peak_lrs=np.array([1e-3, 1e-3]),
        unit_lrs=np.full(100, 0.5),
    )
    window = {
        "loss": [jnp.array([1.0, math.nan]), jnp.array([3.0, 1.0])],
        "grad_norm": [jnp.array([0.2, 0.1]), jnp.array([0.4, 0.1])],
    }
    writers = [events.Writer(m.folder, m.config, 0) for m in members]
    written = loop.log_window(plan, members, 2, window, 2.0, writers)
    assert len(written) == 1
    record = runs.read_metrics(members[0].folder)[0]
    assert record["loss"] == 2.0 and record["examples_per_s"] == 4.0
    assert record["lr"] == pytest.approx(5e-4) and record["grad_norm"] == pytest.approx(0.3)
    assert record["epoch"] == 0.5
    assert members[1].status.diverged.startswith("loss is nan at step 2")
    assert runs.read_metrics(members[1].folder) == []
    assert loop.live(members) == [0]


def test_judge_saves_a_best_only_on_improvement(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(runs, "save_best", lambda run, step, metrics, tree: saved.append(step))
    run = _run(tmp_path, patience=1)
    for step, accuracy in [(2, 0.6), (4, 0.7), (6, 0.65)]:
        loop.judge(run, step, {"accuracy": accuracy}, trainable=None)
    assert saved == [2, 4]
    assert run.status.best == dict(value=0.7, step=4, metrics={"accuracy": 0.7})
    assert run.status.last_eval_step == 6 and run.status.stopped["step"] == 6
