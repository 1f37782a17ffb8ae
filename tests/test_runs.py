"""Run folders under faults: signals (at known steps, never timed), locks, torn metrics,
torn checkpoints, failed starts, timings across sessions."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertjax import runs
from bertjax.train import loop as training
from bertjax.train import stopping
from tests.conftest import best_logged_step, python_command, run_config, run_script

REPO = Path(__file__).resolve().parents[1]
STEPS = 8  # run_config: 64 examples, batch 8, 1 epoch


def _cli(
    run: Path,
    model: Path,
    data: Path,
    *flags: str,
    signal_at: str | None = None,
    max_file_bytes: int | None = None,
):
    """train.py on configs/tiny.py; `signal_at` ("SIGINT@train:3") makes the run send itself
    that signal at that point: a real signal at a known step, not a timed one.
    `max_file_bytes`: the kernel refuses to grow any file of the process past this size
    (RLIMIT_FSIZE, EFBIG), as a full disk refuses a write; works as root too."""
    env = dict(os.environ)
    env.pop(stopping.SELF_SIGNAL, None)
    if signal_at:
        env[stopping.SELF_SIGNAL] = signal_at
    command = [
        "train.py",
        "--config=configs/tiny.py",
        f"--config.model={model}",
        f"--config.data.path={data}",
        f"--config.workdir={run}",
        "--config.data.splits.validation=dev",
        "--config.data.splits.test=",
        "--config.peft.method=bitfit",
        *flags,
    ]
    if max_file_bytes is not None:
        env["BERTJAX_XLA_CACHE"] = "off"  # compiled programs are files too
    return subprocess.run(
        python_command(*command, max_file_bytes=max_file_bytes),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _config(tmp_path, model, shared_data, **overrides):
    return run_config(
        tmp_path / "run", model, shared_data / "sst2", **{"peft.method": "bitfit", **overrides}
    )


def _meta(run: Path, name: str = "last") -> dict:
    return json.loads((run / "checkpoints" / name / "meta.json").read_text())


def _validation_steps(run: Path) -> list[int]:
    return [r["step"] for r in runs.read_metrics(run) if r["split"] == "validation"]


def test_sigint_exits_130_after_saving_last_and_the_same_command_resumes(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    run = tmp_path / "run"
    stopped = _cli(run, tiny_bert_vocab_dir, shared_data / "sst2", signal_at="SIGINT@train:3")
    assert stopped.returncode == 130, stopped.stderr  # so `train.py && eval.py` stops here
    assert "SIGINT at step 3: saved checkpoints/last" in stopped.stderr
    assert _meta(run)["step"] == 3 and not (run / runs.SUMMARY_FILE).exists()
    first_session = _meta(run)["seconds"]

    resumed = _cli(run, tiny_bert_vocab_dir, shared_data / "sst2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {run} from step 3" in resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    # Timings cover both sessions.
    assert summary["wall_time_s"] > first_session > 0
    assert summary["seconds_per_epoch"] is not None and summary["examples_per_s"] is not None

    before = (run / runs.SUMMARY_FILE).stat().st_mtime_ns
    again = _cli(run, tiny_bert_vocab_dir, shared_data / "sst2")
    assert again.returncode == 0 and "is finished (summary.json); nothing to do" in again.stderr
    assert (run / runs.SUMMARY_FILE).stat().st_mtime_ns == before


def test_signal_during_evaluation_or_checkpointing_counts(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    """A SIGTERM that lands during the end-of-epoch evaluation (or the save after it) stops
    the run there with status 143; resuming neither repeats nor skips that evaluation."""
    config = _config(tmp_path, tiny_bert_vocab_dir, shared_data, **{"train.epochs": 2})
    run = Path(config.workdir)
    monkeypatch.setenv(stopping.SELF_SIGNAL, f"SIGTERM@eval:{STEPS}")
    assert training.train(config) == dict(interrupted_at=STEPS, signal="SIGTERM", exit_status=143)
    assert _validation_steps(run) == [STEPS] and _meta(run)["last_eval_step"] == STEPS
    monkeypatch.setenv(stopping.SELF_SIGNAL, f"SIGINT@save:{2 * STEPS}")
    assert training.train(config)["interrupted_at"] == 2 * STEPS
    assert _validation_steps(run) == [STEPS, 2 * STEPS] and _meta(run)["step"] == 2 * STEPS
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    summary = training.train(config)
    assert summary["best_step"] == best_logged_step(runs.read_metrics(run), "accuracy")
    assert _validation_steps(run) == [STEPS, 2 * STEPS]


def test_a_run_freezes_its_long_lived_heap_and_leaves_nothing_frozen(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch
):
    """While the steps run, what loading and compiling left alive is out of the full garbage
    collections' way (gc.freeze); after the run a library caller's heap is collectable again,
    unless the caller had frozen it."""
    import gc

    frozen_in_loop = []
    run_epoch = training.run_epoch

    def counting_run_epoch(*args):
        frozen_in_loop.append(gc.get_freeze_count())
        return run_epoch(*args)

    monkeypatch.setattr(training, "run_epoch", counting_run_epoch)
    assert gc.get_freeze_count() == 0
    training.train(_config(tmp_path, tiny_bert_vocab_dir, shared_data))
    assert frozen_in_loop and min(frozen_in_loop) > 10_000  # modules, datasets, programs
    assert gc.get_freeze_count() == 0

    gc.freeze()  # a caller that froze its own heap keeps it frozen
    try:
        training.train(_config(tmp_path / "again", tiny_bert_vocab_dir, shared_data))
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


# A fresh interpreter: records which thread first imports each module the end of a run needs,
# and whether it is imported by the time the first epoch starts.
IMPORTS_AHEAD = """
import json, sys, threading
from pathlib import Path

WATCHED = ("orbax.checkpoint", "matplotlib.figure", "matplotlib.backends.backend_agg")
importer = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in WATCHED and name not in importer:
            importer[name] = threading.current_thread().name
        return None


sys.meta_path.insert(0, Watch())
from bertjax.train import loop as training
from tests.conftest import run_config

ahead = {}
run_epoch = training.run_epoch


def first_epoch(*args):
    ahead.update({name: name in sys.modules for name in WATCHED})
    return run_epoch(*args)


training.run_epoch = first_epoch
model, data, workdir = map(Path, sys.argv[1:])
training.train(run_config(workdir, model, data, **{"peft.method": "bitfit"}))
print(json.dumps([importer, ahead]))
"""


def test_a_run_imports_what_its_end_needs_on_a_second_thread_while_compiling(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    """Orbax (checkpoints) and matplotlib (curves) are imported on the compile-ahead thread,
    before the first step, not on the main thread when the first checkpoint or plot is due."""
    script = tmp_path / "imports_ahead.py"
    script.write_text(IMPORTS_AHEAD)
    out = run_script(
        script,
        tiny_bert_vocab_dir,
        shared_data / "sst2",
        tmp_path / "run",
        env={"PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    importer, ahead = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        set(importer)
        == set(ahead)
        == {
            "orbax.checkpoint",
            "matplotlib.figure",
            "matplotlib.backends.backend_agg",
        }
    )
    assert all(ahead.values()), ahead
    assert "MainThread" not in importer.values(), importer


def test_a_held_run_folder_is_refused_and_a_dead_holders_lock_taken_over(
    tmp_path, tiny_bert_vocab_dir, shared_data, caplog
):
    config = _config(tmp_path, tiny_bert_vocab_dir, shared_data, **{"train.max_steps": 2})
    run = Path(config.workdir)
    holder = runs.lock(run)  # a live holder: this process, through another open file
    with pytest.raises(runs.RunLocked, match=f"{run} is in use by process {os.getpid()}"):
        training.train(config)
    assert os.listdir(run) == [runs.LOCK_FILE]  # the refused start wrote nothing
    runs.unlock(run, holder)

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (run / runs.LOCK_FILE).write_text(dead.stdout)  # left by a killed process
    with caplog.at_level(logging.INFO, logger="bertjax"):
        assert training.train(config)["best_step"] == 2
    assert f"took over the lock left by process {dead.stdout.strip()}" in caplog.text
    assert not (run / runs.LOCK_FILE).exists()


def test_a_torn_last_metrics_line_is_dropped_on_resume(
    tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch, caplog
):
    config = _config(tmp_path, tiny_bert_vocab_dir, shared_data)
    run = Path(config.workdir)
    monkeypatch.setenv(stopping.SELF_SIGNAL, "SIGINT@train:4")
    training.train(config)
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    with open(run / runs.METRICS_FILE, "a") as f:
        f.write('{"step": 5, "epoch": 0.625, "split": "tra')  # killed mid-append
    with caplog.at_level(logging.WARNING, logger="bertjax"):
        assert training.train(config)["best_step"] == STEPS
    assert "dropped a torn last line" in caplog.text
    lines = (run / runs.METRICS_FILE).read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines if json.loads(line)["split"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS


def test_a_torn_line_inside_metrics_is_an_error_naming_it(tmp_path):
    (tmp_path / runs.METRICS_FILE).write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not a JSON record"):
        runs.read_metrics(tmp_path)


@pytest.fixture
def stopped_run(tmp_path, tiny_bert_vocab_dir, shared_data, monkeypatch):
    """A run stopped after step 4 (checkpoints/last at step 4), and its config."""
    config = _config(tmp_path, tiny_bert_vocab_dir, shared_data)
    monkeypatch.setenv(stopping.SELF_SIGNAL, "SIGINT@train:4")
    training.train(config)
    monkeypatch.delenv(stopping.SELF_SIGNAL)
    return config, Path(config.workdir) / "checkpoints"


def test_a_crash_between_the_renames_of_a_save_is_recovered(stopped_run, caplog):
    """save() writes last.new, renames last -> last.old, then last.new -> last: killed
    between the two renames, the complete last.new is taken (never step 0)."""
    config, folder = stopped_run
    (folder / "last").rename(folder / "last.new")
    with caplog.at_level(logging.INFO, logger="bertjax"):
        assert training.train(config)["best_step"] == STEPS
    assert "recovered last from last.new (step 4)" in caplog.text
    assert "from step 4" in caplog.text


def test_an_incomplete_checkpoint_falls_back_to_the_previous_one(stopped_run, caplog):
    config, folder = stopped_run
    shutil.copytree(folder / "last", folder / "last.old")  # the previous save, still there
    (folder / "last" / "meta.json").unlink()
    with caplog.at_level(logging.INFO, logger="bertjax"):
        training.train(config)
    assert "skipped incomplete checkpoints last (no meta.json)" in caplog.text
    assert "recovered last from last.old (step 4)" in caplog.text


@pytest.mark.parametrize("damage", ["meta", "truncate"])
def test_no_complete_checkpoint_stops_with_one_line_instead_of_step_0(stopped_run, damage):
    config, folder = stopped_run
    if damage == "meta":
        (folder / "last" / "meta.json").unlink()
    else:
        data = sorted((folder / "last" / "state" / "d").iterdir())[0]
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    metrics = (Path(config.workdir) / runs.METRICS_FILE).read_text()
    with pytest.raises(ValueError, match=r"checkpoints/last: no complete checkpoint .*--overwrite"):
        training.train(config)
    assert (Path(config.workdir) / runs.METRICS_FILE).read_text() == metrics  # untouched


def test_a_failed_start_leaves_no_trace(tmp_path, tiny_bert_vocab_dir, shared_data):
    config = _config(tmp_path, tmp_path / "no_such_model", shared_data, **{"train.max_steps": 2})
    with pytest.raises(FileNotFoundError, match="no_such_model"):
        training.train(config)
    assert not Path(config.workdir).exists()
    config.model = str(tiny_bert_vocab_dir)  # the corrected command needs no --overwrite
    assert training.train(config)["best_step"] == 2


def test_a_full_disk_at_a_checkpoint_is_one_line_and_the_run_resumes_intact(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    """A checkpoint write that fails for want of space (full fine-tuning's checkpoint is
    ~12 MB, every other file of the run is far below 1 MB) stops the run with one line naming
    the file; the checkpoint saved before it is intact and the same command resumes from it."""
    run, data, full = tmp_path / "run", shared_data / "sst2", "--config.peft.method=full"
    stopped = _cli(run, tiny_bert_vocab_dir, data, full, signal_at="SIGINT@train:3")
    assert stopped.returncode == 130, stopped.stderr
    saved = {p: p.read_bytes() for p in (run / "checkpoints" / "last").rglob("*") if p.is_file()}
    assert saved and _meta(run)["step"] == 3, stopped.stderr

    failed = _cli(run, tiny_bert_vocab_dir, data, full, max_file_bytes=2**20)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert len(errors) == 1 and "File too large" in errors[0] and str(run) in errors[0], errors
    assert _meta(run)["step"] == 3
    now = {p: p.read_bytes() for p in (run / "checkpoints" / "last").rglob("*") if p.is_file()}
    assert now == saved  # the failed session left `last` as it was

    resumed = _cli(run, tiny_bert_vocab_dir, data, full)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {run} from step 3" in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["best_step"] == STEPS


def test_a_run_folder_that_cannot_be_made_is_one_line_and_leaves_nothing(
    tmp_path, tiny_bert_vocab_dir, shared_data
):
    """A workdir under a regular file (as unwritable as a read-only folder, also for root)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    out = _cli(blocker / "run", tiny_bert_vocab_dir, shared_data / "sst2")
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert len(errors) == 1 and str(blocker) in errors[0], out.stderr
    assert "Not a directory; a file stands where a folder is needed" in errors[0], errors
    assert blocker.read_text() == "not a folder\n"


def test_restoring_a_checkpoint_by_a_relative_path_keeps_it(tmp_path, monkeypatch):
    """A sweep's cells live under a relative workdir: restoring `checkpoints/best` by its
    relative path once deleted it (it compared unequal to its own absolute path)."""
    monkeypatch.chdir(tmp_path)
    folder = Path("run") / "checkpoints" / "best"
    tree = {"w": np.arange(3, dtype=np.float32)}
    runs.checkpoint.save(folder, tree, {"step": 7})
    for _ in range(2):
        restored, meta = runs.restore(folder, tree)
        assert meta["step"] == 7 and np.array_equal(restored["w"], tree["w"])
    assert sorted(p.name for p in folder.parent.iterdir()) == ["best"]


def test_after_a_failed_save_only_closed_loop_callbacks_are_silenced():
    """Orbax's writes still in flight after a failed save find its event loop closed and print
    "Event loop is closed" through sys.excepthook (TensorStore's C callbacks call PyErr_Print)
    at any moment before exit; those alone are dropped, every other error still prints."""
    script = (
        "import sys\n"
        "from bertjax.runs import checkpoint\n"
        "checkpoint._silence_closed_loop_callbacks()\n"
        "checkpoint._silence_closed_loop_callbacks()\n"
        "for err in (RuntimeError('Event loop is closed'), ValueError('kept')):\n"
        "    try:\n"
        "        raise err\n"
        "    except Exception as caught:\n"
        "        sys.excepthook(type(caught), caught, caught.__traceback__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ValueError: kept" in done.stderr and "Event loop is closed" not in done.stderr


def test_a_run_written_before_a_config_field_existed_is_the_same_run(tmp_path):
    """Runs from before distill/model_layers (their config.json lacks them) resume and count
    as finished under the same command: an absent field is its default. A field set away from
    its default is still a different config."""
    config = run_config(tmp_path / "run", tmp_path / "model", tmp_path / "data")
    folder = runs.workdir_of(config)
    folder.mkdir(parents=True)
    saved = runs.config_dict(config)
    del saved["distill"], saved["model_layers"]
    runs.write_json(folder / runs.CONFIG_FILE, saved)
    (folder / "checkpoints" / "last").mkdir(parents=True)  # it saved something
    assert runs.check_folder(config).folder == folder
    config.distill.alpha = 0.0
    with pytest.raises(ValueError, match=r"different config \(distill.alpha: 0.5 -> 0.0\)"):
        runs.check_folder(config)
