"""Finishing a run: test metrics of its best checkpoint, summary.json and curves.png."""

import jax
import numpy as np

import peft
from bertjax import data, runs
from bertjax.runs import events
from bertjax.runs.events import log_record
from bertjax.runs.plots import plot_curves
from bertjax.train.build import Setup
from bertjax.train.evaluate import majority_baseline, metrics_of
from bertjax.train.plan import Plan


def finish(run: runs.Run, setup: Setup, frozen, plan: Plan, writer: events.Writer) -> dict:
    """Test metrics of the best checkpoint, summary.json and curves.png of one run; its
    summary."""
    trainable = runs.restore_best(run, peft.split(setup.params, setup.mask))
    record = record_on_test(run, setup, trainable, frozen, plan)
    if record is not None:
        writer.write(record)
    test_metrics = None if record is None else record["metrics"]
    records = runs.read_metrics(run.folder)
    summary = summary_of(run, setup, test_metrics, records, plan.peak_memory_mb)
    runs.write_json(run.folder / runs.SUMMARY_FILE, summary)
    plot_curves(records, run.folder / runs.CURVES_FILE, title=run.config.name)
    return summary


def record_on_test(run: runs.Run, setup: Setup, trainable, frozen, plan: Plan) -> dict | None:
    """The metrics.jsonl record of the best checkpoint on the test split (at the best step);
    None when there is no labelled test split."""
    test = setup.splits.get("test")
    if test is None or not data.has_labels(test):
        return None
    num_labels = setup.model.num_labels
    stacked = jax.tree_util.tree_map(lambda x: x[None], trainable)
    logits = plan.evaluator.logits(stacked, frozen, test, num_labels, desc="test")
    metrics = metrics_of(logits, np.asarray(test["label"]), num_labels)
    loss = metrics.pop("loss")
    step = run.status.best["step"]
    return log_record(step, plan.schedule.epoch(step), "test", loss, metrics, None, run)


def summary_of(run: runs.Run, setup: Setup, test_metrics, records: list, peak_memory_mb) -> dict:
    """summary.json of a finished run; records: its metrics.jsonl."""
    config, status = run.config, run.status
    speeds = [r["examples_per_s"] for r in records if r["split"] == "train" and r["examples_per_s"]]
    return dict(
        name=config.name,
        model=config.model,
        method=config.peft.method,
        dataset=data.dataset_name(config.data),
        best_step=status.best["step"],
        validation=status.best["metrics"],
        test=test_metrics,
        select_metric=config.train.select_metric,
        total_params=peft.count(setup.params),
        trainable_params=peft.count(setup.params, setup.mask),
        train_examples=len(setup.splits["train"]),
        wall_time_s=round(run.seconds(), 2),
        seconds_per_epoch=round(float(np.mean(status.epoch_seconds)), 2)
        if status.epoch_seconds
        else None,
        examples_per_s=round(float(np.median(speeds)), 1) if speeds else None,
        peak_memory_mb=peak_memory_mb,
        stopped_early=status.stopped,
        majority_baseline=baselines(setup),
    )


def baselines(setup: Setup) -> dict | None:
    """majority_baseline of the run's labelled validation and test splits."""
    labelled = {
        name: np.asarray(setup.splits[name]["label"])
        for name in ("validation", "test")
        if setup.splits.get(name) is not None and data.has_labels(setup.splits[name])
    }
    return majority_baseline(setup.splits["train"]["label"], labelled, setup.model.num_labels)
