"""Results that must not be silently wrong (issue #27): every case runs the real scripts in
a subprocess on real files, and ends either right or in one `error: …` line, exit status 1."""

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax.train import loop as training
from bertjax.train.build import build
from tests.conftest import one_error as _one_error
from tests.conftest import run_config
from tests.conftest import run_script as _cli
from tests.conftest import tsv_rows as _rows

REPO = Path(__file__).resolve().parents[1]


def _last_error(out) -> str:
    """A command that failed after its INFO lines: exit status 1, no traceback, and one
    `error: …` line, the last."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "Event loop is closed" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], out.stderr
    return lines[-1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    (folder / "train.tsv").write_text("sentence\tlabel\n" + _rows(32))
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + _rows(16))
    return folder


def _lora_run(folder: Path, model: Path, data: Path, seed: int) -> Path:
    config = run_config(folder, model, data, **{"peft.lora.rank": 2, "train.seed": seed})
    config.peft.method = "lora"
    config.train.max_steps = 2
    config.data.splits.test = ""
    training.train(config)
    return folder


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_bert_vocab_dir, data_dir):
    """Two finished tiny LoRA runs (seeds 0 and 1) on one base model folder of their own."""
    root = tmp_path_factory.mktemp("two_runs")
    base = root / "base"
    shutil.copytree(tiny_bert_vocab_dir, base)
    return tuple(_lora_run(root / f"run{s}", base, data_dir, s) for s in (0, 1)), base


# ---- 2: export into a used folder -------------------------------------------------------------


def test_export_refuses_a_used_folder_and_replaces_it_whole(two_runs, tmp_path):
    (run_a, run_b), _ = two_runs
    out = tmp_path / "exported"
    done = _cli("export.py", "--ckpt", run_a, "--out", out, "--format", "peft")
    assert done.returncode == 0, done.stderr
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(out))
    refused = _cli("export.py", "--ckpt", run_b, "--out", out, "--format", "merged")
    assert _one_error(refused) == (
        f"error: --out {out} is not empty (adapter_config.json, adapter_model.safetensors, "
        "tokenizer.json, tokenizer_config.json); choose an empty folder, or pass --replace to "
        "replace it"
    )
    assert "config.json" not in os.listdir(out)  # untouched: still A's adapter alone
    done = _cli("export.py", "--ckpt", run_b, "--out", out, "--format", "merged", "--replace")
    assert done.returncode == 0, done.stderr
    names = set(os.listdir(out))
    assert "adapter_config.json" not in names and "adapter_model.safetensors" not in names
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert not [p for p in os.listdir(tmp_path) if p != "exported"]  # no temporary left
    for file in out.iterdir():  # as the umask gives (0022 here): readable by everyone
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~_umask(), file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_export_never_replaces_the_run_or_its_base(two_runs):
    (run_a, _), base = two_runs
    weights = (base / "model.safetensors").read_bytes()
    for target in (base, run_a, run_a / "checkpoints"):
        out = _cli("export.py", "--ckpt", run_a, "--out", target, "--replace")
        assert "which the export reads; choose another folder" in _one_error(out)
    assert (base / "model.safetensors").read_bytes() == weights


# ---- 5: data values read as something else; 9: a metric the task does not report ------------


def _train_args(model, data, workdir, *more):
    return [
        "train.py",
        "--config",
        "configs/tiny.py",
        f"--config.model={model}",
        f"--config.data.path={data}",
        f"--config.workdir={workdir}",
        "--config.data.splits.validation=dev",
        "--config.data.splits.test=",
        *more,
    ]


def test_whole_number_float_labels_are_classes(tmp_path, tiny_bert_vocab_dir):
    data = tmp_path / "data"
    data.mkdir()
    cells = ["0.0", "1.0", "1", "0"]  # "1" mixed with "1.0": one class
    rows = "".join(f"text {i}\t{cells[i % 4]}\n" for i in range(16))
    (data / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    run = tmp_path / "run"
    out = _cli(*_train_args(tiny_bert_vocab_dir, data, run, "--config.train.max_steps=1"))
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "labels.json").read_text()) == ["0", "1"]


def test_whole_number_floats_are_regression_when_asked():
    import datasets

    from bertjax import data
    from configs import tiny

    train = datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [0.0, 1.0]})
    config = tiny.get_config().data
    assert data.label_names({"train": train}, config) == ["0", "1"]
    assert data.label_names({"train": train}, config, num_labels=1) == ["label"]
    halves = datasets.Dataset.from_dict({"sentence": ["a", "b"], "label": [0.5, 1.0]})
    assert data.label_names({"train": halves}, config) == ["label"]  # STS-B-like: regression


@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--config.data.max_train_examples=-5",
            "data.max_train_examples=-5 must be an integer >= 1 (or unset it: all examples)",
        ),
        (
            "--config.data.max_eval_examples=0",
            "data.max_eval_examples=0 must be an integer >= 1 (or unset it: all examples)",
        ),
        (
            "--config.data.max_length=2",
            "data.max_length=2 leaves no room for text: the tokenizer adds 2 special tokens to "
            "a text; use at least 3 (e.g. 128)",
        ),
        (
            "--config.peft.lora.rank=33",
            "peft.lora.rank=33 is above the model's width (32); use a rank well below it "
            "(e.g. 8), or peft.method=full",
        ),
        (
            "--config.train.select_metric=pearson",
            "train.select_metric='pearson' is not reported for classification into 2 classes; "
            "use one of accuracy, f1, macro_f1, micro_f1, mcc",
        ),
    ],
)
def test_values_that_cannot_mean_what_they_say_are_refused_before_training(
    tmp_path, tiny_bert_vocab_dir, data_dir, flag, message
):
    out = _cli(*_train_args(tiny_bert_vocab_dir, data_dir, tmp_path / "run", flag))
    assert _one_error(out) == f"error: {message}"
    assert not (tmp_path / "run").exists()  # refused before the run folder is written


def test_build_logs_the_weights_threads_records_after_the_tokenizer(
    tmp_path, tiny_bert_vocab_dir, data_dir, caplog
):
    """build loads the weights on a second thread while the tokenizer loads; what that thread
    logs (the new head) comes once, after the tokenization, from the caller's build."""
    caplog.set_level("INFO", logger="bertjax")
    config = run_config(tmp_path / "run", tiny_bert_vocab_dir, data_dir)
    setup = build(config)
    assert set(setup.splits) >= {"train", "validation"} and setup.label_names == ["0", "1"]
    new = [r for r in caplog.records if r.getMessage().startswith("newly initialised")]
    assert len(new) == 1 and new[0].levelname == "WARNING"
    assert not logging.getLogger("bertjax").filters  # the hold is lifted


def test_a_classification_metric_on_regression_is_refused_before_the_first_step(
    tmp_path, tiny_bert_vocab_dir
):
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"text {i}\t0.{i}5\n" for i in range(8))  # STS-B-like scores
    (data / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    run = tmp_path / "run"
    out = _cli(
        *_train_args(tiny_bert_vocab_dir, data, run), "--config.train.select_metric=accuracy"
    )
    assert _one_error(out) == (
        "error: train.select_metric='accuracy' is not reported for regression; use one of "
        "pearson, spearman"
    )
    assert not run.exists()


def test_f1_with_three_classes_is_refused_before_the_first_step(tmp_path, tiny_bert_vocab_dir):
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f"text {i}\t{i % 3}\n" for i in range(12))
    (data / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (data / "dev.tsv").write_text("sentence\tlabel\n" + rows)
    out = _cli(
        *_train_args(tiny_bert_vocab_dir, data, tmp_path / "run"), "--config.train.select_metric=f1"
    )
    assert _one_error(out) == (
        "error: train.select_metric='f1' is not reported for classification into 3 classes; "
        "use one of accuracy, macro_f1, micro_f1, mcc"
    )


# ---- 6: a run that could never train; a sweep goes on past a cell that cannot run ---------

SMALL_SPLIT = (
    "the train split has 32 examples, fewer than one batch (train.batch_size=64): no train "
    "step would run; lower train.batch_size or give more training data"
)


def test_a_train_split_smaller_than_one_batch_is_refused_at_start(
    tmp_path, tiny_bert_vocab_dir, data_dir
):
    """Once it ended "no checkpoints/best; re-run the same command to finish", forever."""
    run = tmp_path / "run"
    out = _cli(*_train_args(tiny_bert_vocab_dir, data_dir, run, "--config.train.batch_size=64"))
    assert _last_error(out) == f"error: {SMALL_SPLIT}"
    assert not run.exists()


def test_a_sweep_finishes_its_other_cells_and_lists_the_failed_one(
    tmp_path, tiny_bert_vocab_dir, data_dir
):
    """Once the failing cell aborted the cells after it and no report was written."""
    folder = tmp_path / "sweep"
    args = _train_args(tiny_bert_vocab_dir, data_dir, tmp_path / "unused")
    args[0] = "sweep.py"
    out = _cli(*args, "--grid", "train.batch_size=64,8", "--workdir", folder)
    report = folder / "sweep.md"
    assert _last_error(out) == (f"error: 1 run(s) failed, the others finished: {report}")
    assert (folder / "batch_size=8" / "summary.json").is_file()  # the cell after the failure
    assert not (folder / "batch_size=64").exists()
    text = report.read_text()
    assert f"- `batch_size=64`: {SMALL_SPLIT}" in text
    assert "| 64 | – | 0/1 (failed) |" in text


# ---- 10: bad data files -------------------------------------------------------------------


def _gzip(text: str) -> bytes:
    import gzip

    # mtime=0: the bytes (and so the test ids pytest-xdist workers compare) never depend on
    # the second each worker collects in
    return gzip.compress(text.encode(), mtime=0)


def _zip(text: str) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("train.tsv", date_time=(2026, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


def _parquet(**columns) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


GOOD = "sentence\tlabel\n" + _rows(8)
NO_ROWS = "{f}: no rows, only a header (or nothing); add examples to it"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("train.tsv", _gzip(GOOD), "{f}: gzip-compressed; name it train.tsv.gz, or decompress it"),
        (
            "train.tsv",
            _zip(GOOD),
            "{f}: a zip archive, not text; decompress it (or gzip it as .gz)",
        ),
        (
            "train.tsv.gz",
            _gzip(GOOD * 50)[:60],
            "{f}: truncated or corrupt gzip file (Compressed file ended before the "
            "end-of-stream marker was reached); compress it again",
        ),
        ("train.tsv.gz", GOOD.encode(), "{f}: not gzip-compressed; re-compress it with gzip"),
        (
            "train.tsv",
            b"sentence\tlabel\n",
            "{f}: no rows, only a header (or nothing); add examples to it",
        ),
        (
            "dev.tsv",
            b"sentence\tlabel\n",
            "{f}: no rows, only a header (or nothing); add examples to it",
        ),
        (
            "train.jsonl",
            b'{"sentence": "a", "label": 1}\n{"sentence": "b", "label": "pos"}\n',
            "{f} line 2: 'label' is a str, at line 1 a number; give the column one type "
            "(quote the numbers of a text column)",
        ),
        (
            "train.jsonl",
            b'{"sentence": "a", "label": 1}\n{"sentence": 7, "label": 0}\n',
            "{f} line 2: 'sentence' is a number, at line 1 a str; give the column one type "
            "(quote the numbers of a text column)",
        ),
        (
            "train.jsonl",
            b'{"sentence": "a", "label": 1}\n{"sentence": "b", "label": null}\n',
            "{f} line 2: no 'label' value (1 row(s) without one); label every row, or remove "
            "the rows",
        ),
        ("test.tsv", b"sentence\tlabel\n", NO_ROWS),
        (
            "train.parquet",
            _parquet(sentence=["a", "b", "c"], label=[0, None, 1]),
            "{f} record 2: no 'label' value (1 row(s) without one); label every row, or "
            "remove the rows",
        ),
        (
            "train.parquet",
            b"PAR1 not really parquet",
            "{f}: unreadable Parquet file (Could not open Parquet input source '<Buffer>': "
            "Parquet magic bytes not found in footer. Either the file is corrupted or this is "
            "not a parquet file.); write it again",
        ),
    ],
)
def test_bad_data_files_are_one_line_naming_the_file(
    tmp_path, tiny_bert_vocab_dir, name, content, message
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text(GOOD)
    (data / "dev.tsv").write_text(GOOD)
    if name.startswith("train."):
        (data / "train.tsv").unlink()
    (data / name).write_bytes(content)
    test = ["--config.data.splits.test=test"] if name.startswith("test.") else []
    out = _cli(*_train_args(tiny_bert_vocab_dir, data, tmp_path / "run", *test))
    assert _one_error(out).startswith("error: " + message.format(f=data / name))


def test_a_bom_and_a_very_large_cell_are_read(tmp_path, tiny_bert_vocab_dir):
    """A byte-order mark is not part of the first column's name; a cell of 300,000
    characters (a long document) is one text, truncated by the tokenizer."""
    data = tmp_path / "data"
    data.mkdir()
    rows = "".join(f'"{"word " * 60_000 if i == 3 else "text"} {i}",{i % 2}\n' for i in range(8))
    (data / "train.csv").write_bytes(("\ufeffsentence,label\n" + rows).encode())
    (data / "dev.tsv").write_bytes(("\ufeff" + GOOD).encode())
    run = tmp_path / "run"
    out = _cli(*_train_args(tiny_bert_vocab_dir, data, run, "--config.train.max_steps=1"))
    assert out.returncode == 0, out.stderr
    assert json.loads((run / "labels.json").read_text()) == ["0", "1"]


# ---- 11: torn adapter, export on a full disk, --config that is not a config ------------------


def test_export_on_a_full_disk_leaves_out_as_it_was(two_runs, tmp_path):
    (run_a, run_b), _ = two_runs
    out = tmp_path / "exported"
    assert _cli("export.py", "--ckpt", run_a, "--out", out, "--format", "peft").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before["tokenizer.json"]) > 200_000  # the limit tears it
    failed = _cli(
        "export.py",
        *("--ckpt", run_b, "--out", out, "--format", "peft", "--replace"),
        env={"BERTJAX_XLA_CACHE": "off"},
        max_file_bytes=200_000,
    )
    assert _one_error(failed) == (
        f"error: cannot write the export to {out}: File too large; free disk space (or fix "
        f"the folder's permissions) and export again; {out} is as it was"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert os.listdir(tmp_path) == ["exported"]  # no temporary folder left


def test_a_torn_adapter_names_the_file(two_runs, tmp_path, data_dir):
    (run_a, _), _ = two_runs
    adapter = tmp_path / "adapter"
    assert _cli("export.py", "--ckpt", run_a, "--out", adapter, "--format", "peft").returncode == 0
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = _cli(*_train_args(adapter, data_dir, tmp_path / "run"))
    assert _one_error(out) == (
        f"error: {weights}: unreadable weights file, truncated or corrupt (Error while "
        "deserializing header: incomplete metadata, file not fully covered); download or "
        "export the adapter again"
    )


def test_config_that_is_not_a_config_is_one_line(two_runs, tmp_path):
    (run_a, _), _ = two_runs
    out = _cli("train.py", "--config", run_a / "config.json")
    assert _one_error(out) == (
        f"error: cannot load config file {run_a / 'config.json'}: a JSON file; pass a "
        "configs/*.py file (eval.py --ckpt takes a run folder)"
    )
    script = tmp_path / "script.py"
    script.write_text("print('not a config')\n")
    out = _cli("train.py", "--config", script)
    assert _one_error(out) == (
        f"error: cannot load config file {script}: it has no get_config(); pass a configs/*.py file"
    )
    notes = tmp_path / "notes.md"
    notes.write_text("# Notes\n\nRun *this* first.\n")
    out = _cli("train.py", "--config", notes)
    assert _one_error(out) == (
        f"error: cannot load config file {notes}: not Python (invalid syntax, line 3); pass a "
        "configs/*.py file"
    )


# ---- 4: the base folder's tokenizer changed after training -----------------------------------


def test_a_changed_tokenizer_is_refused_like_changed_weights(two_runs, tmp_path):
    (run_a, _), base = two_runs
    file = base / "tokenizer.json"
    original = file.read_text()
    tokenizer = json.loads(original)
    vocab = tokenizer["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]  # same files, other ids
    try:
        file.write_text(json.dumps(tokenizer))
        out = _cli("eval.py", "--ckpt", run_a, "--data.path", tmp_path)
        line = _one_error(out)
    finally:
        file.write_text(original)
    assert line.startswith(
        f"error: {run_a}: base model {base} differs from the one this run was trained on (its "
        "weights or its tokenizer changed: "
    )
    assert line.endswith("); restore that model folder, or train again")


# ---- 1, 3 and 4 through train.py ------------------------------------------------------------


def test_train_py_refuses_to_resume_on_a_base_whose_tokenizer_changed(
    tmp_path, tiny_bert_vocab_dir, data_dir
):
    """Interrupted at step 2, then the base's vocabulary ids of "good" and "bad" swap: the
    same command refuses in one line naming both fingerprints, and base.json still names the
    base the run started on (once it resumed with exit 0 on the new base and rewrote it)."""
    base = tmp_path / "model"
    shutil.copytree(tiny_bert_vocab_dir, base)
    run = tmp_path / "run"
    args = _train_args(base, data_dir, run, "--config.peft.method=bitfit")
    stopped = _cli(*args, env={"BERTJAX_SELF_SIGNAL": "SIGINT@train:2"})
    assert stopped.returncode == 130, stopped.stderr
    started = (run / "base.json").read_text()
    tokenizer = json.loads((base / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]
    (base / "tokenizer.json").write_text(json.dumps(tokenizer))
    line = _last_error(_cli(*args))
    was = json.loads(started)["sha256"][:12]
    assert line.startswith(
        f"error: {run}: base model {base} differs from the one this run started on (its "
        "weights or tokenizer: hash "
    )
    assert line.endswith(
        f" != {was}); restore that model to resume, or pass --overwrite to train again from step 0"
    )
    assert (run / "base.json").read_text() == started


def test_train_py_refuses_an_accumulation_longer_than_the_run(
    tmp_path, tiny_bert_vocab_dir, data_dir
):
    """32 examples, batch 8, 1 epoch: 4 steps; optim.accumulate=16 would apply no update
    (once exit 0 with a summary and LoRA's b still zero)."""
    run = tmp_path / "run"
    out = _cli(*_train_args(tiny_bert_vocab_dir, data_dir, run, "--config.optim.accumulate=16"))
    assert _last_error(out) == (
        "error: optim.accumulate=16 is more than the run's 4 steps: no optimizer update would "
        "be applied; lower optim.accumulate or train longer"
    )
    assert not run.exists()


# ---- 12: a start that fails after the run folder was written --------------------------------


def test_a_failed_start_does_not_block_the_corrected_command(
    tmp_path, tiny_bert_vocab_dir, data_dir
):
    """The first checkpoint cannot be written (a full disk, RLIMIT_FSIZE): nothing to resume.
    A folder this start created is removed; one that existed keeps the files, and the
    corrected command (another lr) is not refused as 'a different config'."""
    full = {"env": {"BERTJAX_XLA_CACHE": "off"}, "max_file_bytes": 100_000}
    run = tmp_path / "run"
    args = _train_args(tiny_bert_vocab_dir, data_dir, run, "--config.peft.method=full")
    failed = _cli(*args, **full)
    assert "cannot write checkpoint" in _last_error(failed)
    assert not run.exists()
    run.mkdir()  # a folder made beforehand stays, with what the failed start wrote
    failed = _cli(*args, **full)
    assert "cannot write checkpoint" in _last_error(failed)
    assert (run / "config.json").is_file()
    corrected = _cli(
        *args,
        "--config.optim.lr=1e-3",
        "--config.train.max_steps=1",
    )
    assert corrected.returncode == 0, corrected.stderr
    assert json.loads((run / "config.json").read_text())["optim"]["lr"] == 1e-3


# ---- 7: readers do not repair a live run; 13: --predict f --out f ---------------------------


def test_readers_leave_a_live_runs_checkpoints_alone(two_runs, tmp_path):
    """train.py holds the lock and is between its two renames (best -> best.old, best.new ->
    best): eval.py and export.py read best.new without renaming anything."""
    from bertjax import runs

    (_, run_b), _ = two_runs
    run = tmp_path / "run"
    shutil.copytree(run_b, run)
    checkpoints = run / "checkpoints"
    (checkpoints / "best").rename(checkpoints / "best.new")
    shutil.copytree(checkpoints / "best.new", checkpoints / "best.old")
    held = runs.lock(run)  # as the live train.py would
    layout = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    try:
        evaluated = _cli("eval.py", "--ckpt", run)
        exported = _cli("export.py", "--ckpt", run, "--out", tmp_path / "out")
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == layout
    finally:
        runs.unlock(run, held)
    assert evaluated.returncode == 0, evaluated.stderr
    assert exported.returncode == 0, exported.stderr
    want = json.loads(_cli("eval.py", "--ckpt", run_b).stdout.splitlines()[-1])
    assert json.loads(evaluated.stdout.splitlines()[-1]) == want  # best.new is the best


def test_predict_refuses_to_write_over_its_input(two_runs, tmp_path):
    (run_a, _), _ = two_runs
    texts = tmp_path / "texts.txt"
    texts.write_text("a good sentence\n")
    out = _cli("eval.py", "--ckpt", run_a, "--predict", texts, "--out", texts)
    assert _one_error(out) == (
        f"error: --out {texts} is the --predict file itself; choose another file for the "
        "predictions"
    )
    assert texts.read_text() == "a good sentence\n"


# ---- 8: Ctrl-C while loading ------------------------------------------------------------------


def test_a_signal_the_main_thread_cannot_take_still_stops_a_loading_process():
    """Python runs a signal handler only when the main thread runs Python code again: a
    SIGINT landing just before a blocking read (here: blocked in the main thread, so another
    thread takes it) left the process waiting on that read. cli's watcher thread stops it."""
    import signal

    script = (
        "import os, signal, sys\n"
        "from bertjax import cli\n"
        "cli.stop_on_signals()\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
        "read_end, _ = os.pipe()\n"
        "print('reading', flush=True)\n"
        "os.read(read_end, 1)  # nobody writes: blocks until the process ends\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "reading\n", process.stderr.read()
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert stderr.splitlines() == ["error: stopped by SIGINT"]


def test_ctrl_c_while_loading_is_one_line_and_exit_130(tmp_path, tiny_bert_vocab_dir):
    """train.py blocks reading a named pipe as its train file; once it has the pipe open
    (known, not timed: our open for writing succeeds), SIGINT arrives mid-load."""
    import errno
    import signal
    import time

    data = tmp_path / "data"
    data.mkdir()
    (data / "dev.tsv").write_text(GOOD)
    os.mkfifo(data / "train.tsv")
    args = _train_args(tiny_bert_vocab_dir, data, tmp_path / "run")
    process = subprocess.Popen(
        [sys.executable, *map(str, args)], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    writer = None
    while writer is None and process.poll() is None:
        try:  # succeeds only once the reader has opened the pipe
            writer = os.open(data / "train.tsv", os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            assert err.errno == errno.ENXIO, err
            time.sleep(0.1)
    assert writer is not None, process.stderr.read()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    os.close(writer)
    assert process.returncode == 130, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == ["error: stopped by SIGINT"]
