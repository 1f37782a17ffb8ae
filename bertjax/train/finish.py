"""Finishing a run: test metrics of its best checkpoint, summary.json and curves.png."""

import logging
import time

import numpy as np

import peft
from bertjax import data, runs
from bertjax.data.batching import SOFT_TARGETS
from bertjax.runs import events
from bertjax.runs.events import log_record
from bertjax.runs.plots import plot_curves
from bertjax.train import distill
from bertjax.train.build import Setup
from bertjax.train.evaluate import majority_baseline, metrics_of
from bertjax.train.plan import Plan
from bertjax.train.steps import stack_trees

log = logging.getLogger("bertjax")
# What the best validation select_metric must gain over always predicting the majority
# class for the run to count as having learnt something (2 points of accuracy).
LEARNED_MARGIN = 0.02


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
    summary["eval_examples_per_s"] = None if record is None else record["examples_per_s"]
    if summary["warning"] is not None:
        log.warning("%s: %s", run.folder, summary["warning"])
    runs.write_json(run.folder / runs.SUMMARY_FILE, summary)
    plot_curves(
        records,
        run.folder / runs.CURVES_FILE,
        title=run.config.name,
        baseline=(summary["majority_baseline"] or {}).get("validation"),
        # a run stopped early or diverged ends at its last record's step (the default)
        last_step=plan.schedule.total_steps if run.training else None,
    )
    return summary


def record_on_test(run: runs.Run, setup: Setup, trainable, frozen, plan: Plan) -> dict | None:
    """The metrics.jsonl record of the best checkpoint on the test split (at the best step);
    None when there is no labelled test split."""
    test = setup.splits.get("test")
    if test is None or not data.has_labels(test):
        return None
    num_labels = setup.model.num_labels
    stacked = stack_trees(trainable)  # a group of one run
    start = time.perf_counter()
    logits = plan.evaluator.logits(stacked, frozen, test, num_labels, desc="test")
    seconds = time.perf_counter() - start
    metrics = metrics_of(logits, np.asarray(test["label"]), num_labels)
    loss = metrics.pop("loss")
    step = run.status.best["step"]
    # the test record's speed: evaluation's, its programs compiled by the validation ones
    speed = round(len(test) / seconds, 1)
    return log_record(step, plan.schedule.epoch(step), "test", loss, metrics, speed, run)


def summary_of(run: runs.Run, setup: Setup, test_metrics, records: list, peak_memory_mb) -> dict:
    """summary.json of a finished run; records: its metrics.jsonl."""
    config, status = run.config, run.status
    speeds = [r["examples_per_s"] for r in records if r["split"] == "train" and r["examples_per_s"]]
    summary = dict(
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
        majority_baseline=baselines(setup, transfer=distill.on_transfer_texts(config)),
    )
    summary["warning"] = did_not_learn(summary)
    return summary


def did_not_learn(summary: dict) -> str | None:
    """Why a finished run looks like it learnt nothing: its best validation select_metric
    does not beat the majority-class baseline by LEARNED_MARGIN (or is NaN); None when it
    does, or when there is no baseline (regression, no labelled validation split)."""
    metric = summary["select_metric"]
    baseline = ((summary["majority_baseline"] or {}).get("validation") or {}).get(metric)
    best = (summary["validation"] or {}).get(metric)
    if baseline is None or best is None or best >= baseline + LEARNED_MARGIN:
        return None
    return (
        f"the run did not learn: best validation {metric} {best:.4f} does not beat the "
        f"majority-class baseline {baseline:.4f} by {LEARNED_MARGIN}; usual causes: the "
        "learning rate (--config.optim.lr), too few steps (train.epochs), a frozen pooler or "
        "head (peft.modules_to_save, e.g. bert/pooler)"
    )


def baselines(setup: Setup, transfer: bool = False) -> dict | None:
    """majority_baseline of the run's labelled validation and test splits; the majority
    class is the train split's (of distill.transfer texts, which have no labels: the
    teacher's most frequent prediction)."""
    labelled = {
        name: np.asarray(setup.splits[name]["label"])
        for name in ("validation", "test")
        if setup.splits.get(name) is not None and data.has_labels(setup.splits[name])
    }
    train = setup.splits["train"]
    train_labels = train["label"]
    if transfer and setup.model.num_labels > 1:
        train_labels = np.argmax(np.asarray(train[SOFT_TARGETS]), axis=-1)
    return majority_baseline(train_labels, labelled, setup.model.num_labels)
