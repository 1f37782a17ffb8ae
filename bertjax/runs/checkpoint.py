"""Orbax checkpoints of a run: `checkpoints/last` (resumable state) and `checkpoints/best`."""

import contextlib
import hashlib
import json
import logging
import math
import re
import shutil
import sys
from pathlib import Path

import jax
import numpy as np

from bertjax.parallel import distributed


def _checkpointer():
    """Orbax's StandardCheckpointer; Orbax is imported at a run's first save or restore
    (not by a run's start-up, nor by eval.py's)."""
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def save(folder: Path, tree, meta: dict) -> None:
    """Writes `tree` (+ meta.json) to `folder` atomically: a crash mid-save leaves the
    previous checkpoint in place (written beside it, then swapped in by rename).

    With several processes every one calls this (Orbax writes each array once, from the
    process holding it); process 0 alone clears, renames and writes meta.json, and nobody
    returns before the new checkpoint is in place.
    """
    folder = Path(folder).absolute()
    fresh, old = folder.with_name(folder.name + ".new"), folder.with_name(folder.name + ".old")
    primary = distributed.is_primary()
    if primary:
        for stale in (fresh, old):
            shutil.rmtree(stale, ignore_errors=True)
    distributed.barrier(f"checkpoint cleared {folder}")
    checkpointer = None
    try:
        with _orbax_errors_muted():  # reported once, below, as one line
            checkpointer = _checkpointer()
            checkpointer.save(fresh / "state", tree)
            checkpointer.wait_until_finished()
        if primary:
            (fresh / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    except Exception as err:  # noqa: BLE001 - Orbax/TensorStore raise ValueError, OSError, …
        _close(checkpointer)
        _silence_closed_loop_callbacks()
        if primary:
            shutil.rmtree(fresh, ignore_errors=True)
        # Orbax's abandoned write tasks would log their copy of the error at exit.
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise OSError(
            f"cannot write checkpoint {folder}: {_reason(err)}; the checkpoints saved before are "
            "kept. Free disk space (or fix the folder's permissions) and re-run the same command "
            "to resume"
        ) from None
    if primary:
        if folder.exists():
            folder.rename(old)
        fresh.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(f"checkpoint saved {folder}")


def _close(checkpointer) -> None:
    """Joins a failed checkpointer's background threads, quietly (they hold the error that
    save() reports)."""
    if checkpointer is None:
        return
    with _orbax_errors_muted(), contextlib.suppress(Exception):
        checkpointer.close()


@contextlib.contextmanager
def _orbax_errors_muted():
    """Orbax logs a failed background write with tracebacks (through absl) before raising it;
    save() raises it as one line instead."""
    absl = logging.getLogger("absl")
    level, hook, excepthook = absl.level, sys.unraisablehook, sys.excepthook
    absl.setLevel(logging.CRITICAL)
    # TensorStore's callbacks for the writes still in flight then find Orbax's event loop
    # closed and raise "Event loop is closed" into the void (unraisable exceptions, or
    # printed through sys.excepthook from the C callback).
    sys.unraisablehook = lambda unraisable: None
    sys.excepthook = lambda *exc: None
    try:
        yield
    finally:
        absl.setLevel(level)
        sys.unraisablehook, sys.excepthook = hook, excepthook


def _is_closed_loop(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def _silence_closed_loop_callbacks() -> None:
    """After a failed save, TensorStore's callbacks for writes still in flight find Orbax's
    event loop closed, at any later moment until the process exits, and print "Event loop
    is closed" tracebacks through sys.excepthook (from the C callback) or as unraisable
    exceptions. From then on those, and only those, are dropped; every other error is still
    printed by the hooks that were there."""
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
    if getattr(excepthook, "drops_closed_loop", False):
        return

    def quiet_excepthook(kind, value, traceback):
        if not _is_closed_loop(value):
            excepthook(kind, value, traceback)

    def quiet_unraisablehook(unraisable):
        if not _is_closed_loop(unraisable.exc_value):
            unraisablehook(unraisable)

    quiet_excepthook.drops_closed_loop = True
    sys.excepthook, sys.unraisablehook = quiet_excepthook, quiet_unraisablehook


def _reason(err: Exception) -> str:
    """The operating system's words for a failed write ("File too large", "No space left on
    device"), else the error's first line."""
    text = str(err)
    found = re.findall(r"(?:: |\] )([A-Z][a-z][^:\[\]\n]*?) \[os_error_code", text)
    if found:
        return found[-1]
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return text.splitlines()[0] if text else type(err).__name__


def _as_saved(checkpointer, path: Path):
    """Shapes and dtypes of a saved tree, placed on this process's first device: a checkpoint
    written on another mesh (say 4 devices) restores anywhere."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    saved = checkpointer.metadata(path).item_metadata.tree
    return jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        saved,
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )


def restore(folder: Path, like=None) -> tuple:
    """(tree, meta) restored against `like` (arrays or jax.eval_shape structs); without
    `like`, as the nested dicts of arrays Orbax saved, on this process's first device."""
    folder = Path(folder).absolute()
    checkpointer = _checkpointer()
    if like is None:
        abstract = _as_saved(checkpointer, folder / "state")
    else:
        from orbax.checkpoint.utils import to_shape_dtype_struct

        abstract = jax.tree_util.tree_map(to_shape_dtype_struct, like)
    tree = checkpointer.restore(folder / "state", abstract)
    return tree, json.loads((folder / "meta.json").read_text())


def exists(folder: Path) -> bool:
    return (Path(folder) / "meta.json").is_file() and (Path(folder) / "state").is_dir()


def tree_hash(tree) -> str:
    """sha256 over a tree's paths, dtypes, shapes and bytes: identifies a base model."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        leaf = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}{leaf.dtype}{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def candidates(folder: Path) -> list[tuple[Path, int | None]]:
    """(folder, saved step or None when meta.json is missing) for `folder` and the siblings
    `save` writes beside it (`.new` complete before it is renamed in, `.old` the previous
    one), newest step first; only those that exist."""
    folder = Path(folder).absolute()
    found = []
    for path in (
        folder,
        folder.with_name(folder.name + ".new"),
        folder.with_name(folder.name + ".old"),
    ):
        if path.is_dir():
            try:
                step = json.loads((path / "meta.json").read_text()).get("step", -1)
            except (OSError, ValueError):
                step = None
            found.append((path, step))
    return sorted(found, key=lambda c: math.inf if c[1] is None else -c[1])
