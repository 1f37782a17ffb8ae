"""TensorBoard event files in each run folder (tensorboardX), holding metrics.jsonl's numbers.

`tensorboard --logdir runs` shows each run folder as a run, a sweep folder each cell. Tags
are "<split>/<key>" of the metrics.jsonl records: train/loss, train/lr, train/grad_norm,
train/examples_per_s at each log step; validation/loss and validation/<metric> at each
evaluation; test/<metric> at the best step; the resolved config as the text "config".
"""

import contextlib
import json
import math
import sys
import time
from pathlib import Path

from bertjax import runs
from bertjax.parallel import distributed

TRAIN_KEYS = ("loss", "lr", "grad_norm", "examples_per_s")


def scalars(record: dict) -> dict[str, float]:
    """{"<split>/<key>": value} of one metrics.jsonl record's finite numbers."""
    split = record["split"]
    values = {key: record.get(key) for key in TRAIN_KEYS} if split == "train" else {}
    values.update(loss=record["loss"], **record["metrics"])
    return {
        f"{split}/{key}": float(value)
        for key, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without torch. tensorboardX's writer module
    imports torch wherever it is installed, only to accept torch tensors (which a run never
    passes): 1.1 s of a run's start in an environment that has torch (1.7 s alone). While it
    imports, `sys.modules["torch"] = None` makes `import torch` fail as if torch were absent;
    torch imports normally afterwards. Nothing changes when torch is already imported."""
    hide_torch = "torch" not in sys.modules
    if hide_torch:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if hide_torch and sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


class Events:
    """The event writer of one run folder from `start_step` on; does nothing when
    config.log.tensorboard is off or on processes other than 0.

    Each session writes its own file (distinct names, in time order) and, resuming, marks
    with purge_step that TensorBoard drops the earlier sessions' events after start_step:
    the part being redone, as metrics.jsonl drops its records."""

    def __init__(self, folder: Path, config, start_step: int):
        self.writer = None
        if not config.log.tensorboard or not distributed.is_primary():
            return
        self.writer = summary_writer_class()(
            str(folder),
            purge_step=start_step + 1 if start_step else 0,
            filename_suffix=f".{time.time_ns()}",
            flush_secs=30,
        )
        if start_step == 0:
            text = json.dumps(runs.config_dict(config), indent=2)
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "), 0)

    def record(self, record: dict) -> None:
        """Writes one metrics.jsonl record's numbers at its step."""
        if self.writer is None:
            return
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def log_record(step, epoch, split, loss, metrics, examples_per_s, run, **extra):
    """One metrics.jsonl line; `elapsed` counts the run's earlier sessions too. extra: train
    records' lr and grad_norm."""
    return dict(
        step=step,
        epoch=round(epoch, 4),
        split=split,
        loss=None if loss is None else float(loss),
        metrics=metrics,
        examples_per_s=examples_per_s,
        elapsed=round(run.seconds(), 2),
        **extra,
    )


class Writer:
    """The one writer of a run's records: each goes to metrics.jsonl and TensorBoard."""

    def __init__(self, folder: Path, config, start_step: int):
        self.folder = folder
        self.events = Events(folder, config, start_step)

    def write(self, record: dict) -> None:
        runs.append_metrics(self.folder, record)
        self.events.record(record)

    def close(self) -> None:
        self.events.close()


@contextlib.contextmanager
def writers(members: list, start_step: int):
    """A Writer per run (runs.Run), closed (flushed) on the way out."""
    out = [Writer(m.folder, m.config, start_step) for m in members]
    try:
        yield out
    finally:
        for events in out:
            events.close()
