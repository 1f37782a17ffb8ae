"""The run folder: resolved config, labels, metrics.jsonl, summary, curves, checkpoints."""

import json
import shutil
from pathlib import Path

import ml_collections

from bertjax import distributed

CONFIG_FILE, LABELS_FILE, METRICS_FILE = "config.json", "labels.json", "metrics.jsonl"
SUMMARY_FILE, CURVES_FILE, BASE_FILE = "summary.json", "curves.png", "base.json"
IGNORED_WHEN_RESUMING = ("workdir",)  # fields that may differ between a run and its resume


def workdir_of(config) -> Path:
    return Path(config.workdir or Path("runs") / config.name)


def config_dict(config) -> dict:
    """The resolved config as plain JSON data (tuples become lists)."""
    return json.loads(config.to_json())


def load_config(run: Path) -> ml_collections.ConfigDict:
    file = Path(run) / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no {CONFIG_FILE})")
    return ml_collections.ConfigDict(json.loads(file.read_text()))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for key in keys:
        name = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, name + ".")
        elif a != b and name not in IGNORED_WHEN_RESUMING:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out


def open_run(config, overwrite: bool = False) -> Path:
    """Creates the run folder, or checks that an existing one holds this same config.

    A different config is refused (unless `overwrite`, which empties the folder first) so
    a resume never mixes two runs.
    """
    run = workdir_of(config)
    new = config_dict(config)
    if run.exists() and overwrite and distributed.is_primary():
        shutil.rmtree(run)
    distributed.barrier(f"open {run}")  # every process checks the same folder ...
    if (run / CONFIG_FILE).is_file():
        diff = _differences(json.loads((run / CONFIG_FILE).read_text()), new)
        if diff:
            raise ValueError(
                f"{run} holds a run with a different config ({'; '.join(diff[:3])}); "
                "pass --overwrite or choose another --config.workdir"
            )
    elif run.exists() and any(run.iterdir()):
        raise ValueError(f"{run} exists and is not a bertjax run; choose another --config.workdir")
    distributed.barrier(f"checked {run}")  # ... before process 0 writes to it
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / CONFIG_FILE, new)
    return run


def write_json(file: Path, data) -> None:
    if not distributed.is_primary():  # process 0 alone writes the run folder's files
        return
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(file)


def read_metrics(run: Path) -> list[dict]:
    file = Path(run) / METRICS_FILE
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def truncate_metrics(run: Path, step: int) -> None:
    """Drops records logged after `step` (they belong to the part of a run being redone)."""
    if not distributed.is_primary():
        return
    kept = [r for r in read_metrics(run) if r["step"] <= step]
    (Path(run) / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in kept))


def append_metrics(run: Path, record: dict) -> None:
    if not distributed.is_primary():
        return
    with open(Path(run) / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
