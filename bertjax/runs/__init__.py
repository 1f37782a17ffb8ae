"""A run folder and its bookkeeping: config, labels, metrics.jsonl, checkpoints, summary, lock.

One process at a time holds a run folder (an `flock` on `.lock`, which the kernel releases
when the holder dies, so a killed run never blocks the next). Files are replaced atomically;
a half-written last line of metrics.jsonl (a kill or a full disk mid-append) is dropped on
resume, and a checkpoint torn by a crash mid-save is recovered from its complete sibling.
"""

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import ml_collections

from bertjax.parallel import distributed
from bertjax.runs import checkpoint

log = logging.getLogger("bertjax")

CONFIG_FILE, LABELS_FILE, METRICS_FILE = "config.json", "labels.json", "metrics.jsonl"
SUMMARY_FILE, CURVES_FILE, BASE_FILE = "summary.json", "curves.png", "base.json"
LOCK_FILE = ".lock"
# Fields whose default changed, at the default a run written before then trained with
# (dtype: "float32" until issue #25 made "auto" the default).
DEFAULTS_BEFORE = {"dtype": "float32"}
# Fields that may differ between a run and its resume.
IGNORED_WHEN_RESUMING = ("workdir", "log.tensorboard")


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


def without(resolved: dict, fields) -> dict:
    """A copy of a resolved config without the dotted `fields` ("optim.lr", "workdir")."""
    out = json.loads(json.dumps(resolved))
    for field in fields:
        *parents, leaf = field.split(".")
        node = out
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return out


def saved_config(folder: Path) -> dict:
    """A run folder's config.json, with the fields added to the config since the run was
    written (absent there) at their defaults: a run from before `distill` or `model_layers`
    existed resumes and counts as finished under the same command."""
    from bertjax.train import defaults

    def fill(saved: dict, default: dict) -> dict:
        out = dict(saved)
        for key, value in default.items():
            if key not in out:
                out[key] = value
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = fill(out[key], value)
        return out

    saved = json.loads((Path(folder) / CONFIG_FILE).read_text())
    return fill(fill(saved, DEFAULTS_BEFORE), config_dict(defaults.get_config()))


def differences(old: dict, new: dict, ignored=IGNORED_WHEN_RESUMING) -> list[str]:
    """ "field: old -> new" for each dotted field where two resolved configs differ."""

    def walk(a: dict, b: dict, prefix: str) -> list[str]:
        out = []
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                out += walk(x, y, f"{prefix}{key}.")
            elif x != y and not (f"{prefix}{key}" == "dtype" and _same_compute_dtype(x, y)):
                out.append(f"{prefix}{key}: {x!r} -> {y!r}")
        return out

    return walk(without(old, ignored), without(new, ignored), "")


def _same_compute_dtype(old: str, new: str) -> bool:
    """Whether two dtype fields compute alike on this machine ("auto" resolves to bfloat16
    or float32 here): a run saved with "float32" resumes under the "auto" default where auto
    means float32."""
    from bertjax.models.precision import compute_dtype

    try:
        return compute_dtype(old) == compute_dtype(new)
    except (ValueError, TypeError):  # an unknown name: it differs as written
        return False


# ---- the lock ----


class RunLocked(ValueError):
    """Another live process holds the run folder."""


def lock(folder: Path):
    """Holds `folder` for this process (an open file); raises RunLocked naming the holder."""
    folder.mkdir(parents=True, exist_ok=True)
    file = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        raise RunLocked(
            f"{folder} is in use by process {holder}; wait for it to finish or stop it"
        ) from None
    file.seek(0)
    previous = file.read().strip()
    if previous and previous != str(os.getpid()):
        log.info("%s: took over the lock left by process %s (no longer running)", folder, previous)
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


def unlock(folder: Path, file) -> None:
    (folder / LOCK_FILE).unlink(missing_ok=True)
    file.close()


@contextlib.contextmanager
def held(folders: list[Path]):
    """Locks every folder (process 0 only, under multi-host) for the duration; a folder this
    created and that holds nothing but the lock afterwards (a failed start) is removed."""
    if not distributed.is_primary():
        yield
        return
    created = [f for f in folders if not f.exists()]
    files = []
    try:
        for folder in folders:
            files.append((folder, lock(folder)))
        yield
    except BaseException:
        for folder in created:  # a start that failed (a compile, Ctrl-C) leaves no folder
            if not saved_anything(folder):
                shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        for folder, file in files:
            unlock(folder, file)
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


# ---- one run's record ----


@dataclasses.dataclass
class Status:
    """What the loop learns about a run on the way. checkpoints/last's meta holds every field
    but `diverged` (a resume retries from the last good checkpoint), so a new field is one
    edit here."""

    best: dict = dataclasses.field(default_factory=lambda: dict(value=-math.inf, step=-1))
    stopped: dict | None = None  # early stopping: {"step": s, "reason": why}
    stale_evals: int = 0  # evaluations in a row without enough improvement (early stopping)
    last_eval_step: int = -1
    seconds: float = 0.0  # wall time of the run's earlier sessions
    epoch_seconds: list = dataclasses.field(default_factory=list)
    diverged: str | None = dataclasses.field(default=None, metadata=dict(saved=False))


def status_meta(status: Status, seconds: float) -> dict:
    """The saved fields of `status` as checkpoint meta; `seconds`: the run's time so far."""
    saved = {
        f.name: getattr(status, f.name)
        for f in dataclasses.fields(Status)
        if f.metadata.get("saved", True)
    }
    return {**saved, "seconds": round(seconds, 2)}


def status_from_meta(meta: dict) -> Status:
    """The Status a checkpoint's meta saved (fields it lacks keep their defaults)."""
    saved = [f.name for f in dataclasses.fields(Status) if f.metadata.get("saved", True)]
    return Status(**{name: meta[name] for name in saved if name in meta})


@dataclasses.dataclass
class Run:
    """One run: its config, folder and status (what the loop learns about it on the way)."""

    config: Any
    folder: Path
    status: Status = dataclasses.field(default_factory=Status)
    started: float = dataclasses.field(default_factory=time.time)

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    def seconds(self) -> float:
        """Wall time of the whole run so far, across sessions."""
        return self.status.seconds + time.time() - self.started

    @property
    def training(self) -> bool:
        """Neither stopped early nor diverged."""
        return self.status.stopped is None and self.status.diverged is None


def reset(run: Run) -> None:
    """Forgets what the loop learnt about the run (it starts again from step 0)."""
    run.status = Status()


def saved_anything(folder: Path) -> bool:
    """Whether a run folder holds a checkpoint: without one there is nothing to resume."""
    checkpoints = Path(folder) / "checkpoints"
    return checkpoints.is_dir() and any(checkpoints.iterdir())


def check_folder(config, overwrite: bool = False) -> Run:
    """A Run for `config`; refuses a folder that holds another config (unless overwrite) or
    something that is not a run. A run that never saved a checkpoint (a failed start) is
    not in the way: the corrected command replaces it. Writes nothing."""
    folder = workdir_of(config)
    if (folder / CONFIG_FILE).is_file() and not overwrite:
        diff = differences(saved_config(folder), config_dict(config))
        if diff and not saved_anything(folder):
            log.info("%s: replacing a run that never saved a checkpoint", folder)
        elif diff:
            raise ValueError(
                f"{folder} holds a run with a different config ({'; '.join(diff[:3])}); "
                "pass --overwrite or choose another --config.workdir"
            )
    elif folder.exists() and not overwrite and set(os.listdir(folder)) - {LOCK_FILE}:
        raise ValueError(
            f"{folder} exists and is not a bertjax run; choose another --config.workdir"
        )
    return Run(config, folder)


def start(run: Run, label_names: list, base: dict, overwrite: bool = False) -> None:
    """Writes the run's config, labels and base model id (emptying the folder first with
    `overwrite`): called once everything they describe has loaded. Refuses to resume a
    run on a base model whose weights differ from the ones it started on."""
    if not overwrite:
        check_base(run, base)
    if not distributed.is_primary():
        return
    if overwrite:
        for entry in run.folder.iterdir():
            if entry.name != LOCK_FILE:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    write_json(run.folder / CONFIG_FILE, config_dict(run.config))
    write_json(run.folder / LABELS_FILE, label_names)
    write_json(run.folder / BASE_FILE, base)


def check_base(run: Run, base: dict) -> None:
    """Raises (one line naming both weight hashes) when the run has a checkpoint to resume
    and base.json records other base weights than `base` (model, sha256)."""
    file = run.folder / BASE_FILE
    if not file.is_file() or not run.checkpoints.exists():
        return
    started = json.loads(file.read_text())
    if started["sha256"] not in (base["sha256"], base.get("weights_sha256")):
        raise ValueError(
            f"{run.folder}: base model {base['model']} differs from the one this run started "
            f"on (its weights or tokenizer: hash {base['sha256'][:12]} != "
            f"{started['sha256'][:12]}); restore that model to resume, or pass --overwrite to "
            "train again from step 0"
        )


def finished_summary(run: Run) -> dict | None:
    file = run.folder / SUMMARY_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def write_json(file: Path, data) -> None:
    if not distributed.is_primary():
        return
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(file)


# ---- metrics.jsonl ----


def read_metrics(run: Path) -> list[dict]:
    """The records of metrics.jsonl. A torn last line (the process died mid-append) is
    dropped with a warning; a bad line elsewhere is an error naming it."""
    file = Path(run) / METRICS_FILE
    if not file.is_file():
        return []
    lines = file.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(
                    f"{file} line {number} is not a JSON record; fix or delete that line"
                ) from None
            log.warning("%s: dropped a torn last line (%d bytes)", file, len(line))
    return records


def truncate_metrics(run: Path, step: int) -> None:
    """Keeps records logged up to `step` (later ones belong to the part being redone), but
    no test record: finishing, which writes it, comes after the last checkpoint."""
    if not distributed.is_primary():
        return
    kept = [r for r in read_metrics(run) if r["step"] <= step and r["split"] != "test"]
    tmp = Path(run) / (METRICS_FILE + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(Path(run) / METRICS_FILE)


def append_metrics(run: Path, record: dict) -> None:
    if not distributed.is_primary():
        return
    with open(Path(run) / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---- checkpoints ----


def save_last(run: Run, tree, step: int) -> None:
    """checkpoints/last: the resumable state and what resuming needs besides it."""
    meta = dict(step=step, **status_meta(run.status, run.seconds()))
    checkpoint.save(run.checkpoints / "last", tree, meta)


def save_best(run: Run, step: int, metrics: dict, trainable) -> None:
    checkpoint.save(
        run.checkpoints / "best", dict(trainable=trainable), dict(step=step, metrics=metrics)
    )


def restore(folder: Path, like, repair: bool = True) -> tuple | None:
    """(tree, meta) of the newest complete checkpoint among `folder` and the siblings a
    crash mid-save can leave (`checkpoint.candidates`), made `folder` again (with `repair`:
    only the run's lock holder may; a reader such as eval.py must not rename files a live
    run is swapping); None when there is none at all. Incomplete ones are skipped with a
    warning; when none is complete the error says what to do."""
    folder = Path(folder).absolute()  # as the candidates' paths: a relative one is the same
    found = checkpoint.candidates(folder)
    if not found:
        return None
    skipped = [f"{path.name} (no meta.json)" for path, step in found if step is None]
    for candidate, step in found:
        if step is None:
            continue
        try:
            tree, meta = checkpoint.restore(candidate, like)
        except Exception as err:  # a missing or truncated file: Orbax/TensorStore errors vary
            skipped.append(f"{candidate.name} ({type(err).__name__})")
            continue
        if skipped:
            log.warning("%s: skipped incomplete checkpoints %s", folder.parent, ", ".join(skipped))
        distributed.barrier(f"restored {candidate}")  # every process read it before the rename
        if repair and candidate != folder and distributed.is_primary():
            shutil.rmtree(folder, ignore_errors=True)
            candidate.rename(folder)
            log.warning(
                "%s: recovered %s from %s (step %d)",
                folder.parent,
                folder.name,
                candidate.name,
                meta["step"],
            )
        return tree, meta
    fix = (
        "pass --overwrite to train this run again from step 0"
        if repair
        else "finish or restart the run with train.py first"
    )
    raise ValueError(f"{folder}: no complete checkpoint ({'; '.join(skipped)}); {fix}")


def resume(run: Run, like) -> Any:
    """The state saved in checkpoints/last (restoring run.best, timings), or None to start
    from step 0 (said aloud when steps were already logged)."""
    restored = restore(run.checkpoints / "last", like)
    if restored is None:
        logged = [r["step"] for r in read_metrics(run.folder)]
        if logged:
            log.warning(
                "%s: no checkpoint yet; starting again from step 0 (%d logged steps are redone)",
                run.folder,
                max(logged),
            )
        truncate_metrics(run.folder, -1)
        return None
    tree, meta = restored
    run.status = status_from_meta(meta)
    truncate_metrics(run.folder, meta["step"])
    return tree


def restore_best(run: Run, like, repair: bool = True):
    """The trainable tree of checkpoints/best; repair=False for readers without the lock."""
    restored = restore(run.checkpoints / "best", dict(trainable=like), repair)
    if restored is None:
        raise ValueError(
            f"{run.folder}: no checkpoints/best; re-run train.py's command to finish the run"
        )
    return restored[0]["trainable"]
