"""Bad input and what a person reads: exit status 1 and one `error: …` line, quiet logs, help.

Every test runs the real scripts (train.py, eval.py, sweep.py, report.py) in a subprocess on
real files; most errors fire before any weights or data load.
"""

import json
import re
import shutil
from pathlib import Path

import pytest

from bertjax.train import checks
from configs import base, sst2_lora, tiny
from tests.conftest import one_error as _one_error
from tests.conftest import run_script as _cli
from tests.conftest import tsv_rows as _rows

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    (folder / "train.tsv").write_text("sentence\tlabel\n" + _rows(32))
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + _rows(16))
    return folder


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_vocab_dir, data_dir):
    """A finished tiny run made by train.py (its stderr kept), with its data folder moved
    away afterwards so nothing that reads the run can load the data."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    shutil.copytree(data_dir, data)
    out = _cli(*_train_args(tiny_bert_vocab_dir, data, root / "runs" / "run"))
    assert out.returncode == 0, out.stderr
    shutil.move(data, root / "data_moved_away")
    return root / "runs" / "run", out


# ---- config: checks.check_config, and through train.py --------------------------------------


def _config(**fields):
    config = tiny.get_config()
    for key, value in fields.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optim.lr", 0.0, r"optim.lr=0.0 must be a number > 0"),
        ("optim.lr", -1e-3, r"optim.lr=-0.001 must be a number > 0"),
        ("train.batch_size", 0, r"train.batch_size=0 must be an integer >= 1"),
        ("train.eval_batch_size", -4, r"train.eval_batch_size=-4 must be an integer >= 1"),
        ("train.epochs", 0, r"train.epochs=0 must be an integer >= 1 \(or set train.max_steps\)"),
        ("train.max_steps", 0, r"train.max_steps=0 must be an integer >= 1"),
        ("optim.warmup_ratio", 1.0, r"optim.warmup_ratio=1.0 must be in \[0, 1\)"),
        ("optim.warmup_ratio", -0.1, r"optim.warmup_ratio=-0.1 must be in \[0, 1\)"),
        ("peft.lora.dropout", 1.0, r"peft.lora.dropout=1.0 must be in \[0, 1\)"),
        ("peft.lora.dropout", -0.5, r"peft.lora.dropout=-0.5 must be in \[0, 1\)"),
        ("peft.method", "lorra", r"peft.method='lorra' is unknown \(did you mean 'lora'\?\)"),
        ("dtype", "float16", r"dtype='float16' is unknown.*float32, bfloat16"),
        ("optim.schedule", "cosin", r"optim.schedule='cosin' is unknown \(did you mean 'cos"),
        ("train.select_metric", "loss", r"train.select_metric='loss' is unknown"),
        # an abbreviation means the option it starts (not "mcc", nearer in spelling)
        ("train.select_metric", "acc", r"'acc' is unknown \(did you mean 'accuracy'\?\)"),
        ("optim.accumulate", 0, r"optim.accumulate=0 must be an integer >= 1"),
        ("train.log_every", 0, r"train.log_every=0 must be an integer >= 1"),
        ("data.max_length", 0, r"data.max_length=0 must be an integer >= 1"),
        ("peft.lora.rank", 0, r"peft.lora: LoRA rank must be an integer >= 1"),
    ],
)
def test_check_config_names_field_value_and_fix(field, value, message):
    with pytest.raises(ValueError, match=message) as err:
        checks.check_config(_config(**{field: value}))
    assert "\n" not in str(err.value)


def test_check_config_accepts_every_shipped_config():
    for file in sorted((REPO / "configs").glob("*.py")):
        if file.stem in ("__init__", "base"):
            continue
        module = __import__(f"configs.{file.stem}", fromlist=["get_config"])
        checks.check_config(module.get_config())
    checks.check_config(_config(**{"train.epochs": 0, "train.max_steps": 5}))  # max_steps wins


def test_check_config_runs_before_anything_loads(tmp_path):
    """No model folder, no data: the config error still comes first, and no run folder."""
    out = _cli(
        *_train_args(tmp_path / "no_model", tmp_path / "no_data", tmp_path / "run"),
        "--config.optim.lr=0",
    )
    assert _one_error(out) == (
        "error: optim.lr=0.0 must be a number > 0, e.g. --config.optim.lr=2e-5"
    )
    assert not (tmp_path / "run").exists()


def test_batch_size_not_divisible_by_the_devices(tmp_path):
    out = _cli(
        *_train_args(tmp_path / "m", tmp_path / "d", tmp_path / "run"),
        "--config.train.batch_size=3",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert _one_error(out) == (
        "error: train.batch_size=3 is not divisible by the 2 devices; use a multiple of 2"
    )


@pytest.mark.parametrize("script", ["train.py", "sweep.py"])
def test_unknown_config_field_is_one_line_with_a_hint(script):
    out = _cli(script, "--config", "configs/tiny.py", "--config.optim.learning_rate=1")
    assert _one_error(out) == (
        "error: unknown config field optim.learning_rate (did you mean optim.lr?)"
    )
    out = _cli(script, "--config", "configs/tiny.py", "--config.trian.epochs=2")
    assert (
        _one_error(out) == "error: unknown config field trian.epochs (did you mean train.epochs?)"
    )


def test_flag_errors_are_one_line():
    out = _cli("train.py", "--config", "configs/tiny.py", "--config.optim.lr=abc")
    assert _one_error(out).startswith("error: flag --config.optim.lr=abc: could not convert")
    out = _cli("train.py")
    assert _one_error(out) == "error: --config is required (python train.py --help lists the flags)"
    out = _cli("train.py", "--config", "configs/nope.py")
    assert "configs/nope.py" in _one_error(out)
    out = _cli("eval.py", "--ckpt", REPO / "no_such_run")
    assert _one_error(out) == f"error: {REPO / 'no_such_run'}: not a run folder (no config.json)"


def _flat(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_help_lists_every_config_field_with_value_and_meaning():
    out = _cli("train.py", "--config", "configs/sst2_lora.py", "--help")
    assert out.returncode == 0, out.stderr
    rows = {
        line.split()[0]: line
        for line in out.stdout.split("config fields", 1)[1].splitlines()[1:]
        if line.strip()
    }
    fields = _flat(base.get_config())
    assert set(rows) == set(fields)
    for line in rows.values():
        assert len(re.split(r"\s{2,}", line.strip())) == 3, line  # name, value, meaning
    lr = sst2_lora.get_config().optim.lr
    assert re.split(r"\s{2,}", rows["optim.lr"].strip())[1:] == [
        repr(lr),
        "peak learning rate (AdamW), > 0",
    ]
    assert "'lora'" in rows["peft.method"] and "full | head | bitfit" in rows["peft.method"]
    assert _cli("eval.py", "--help").returncode == 0
    assert _cli("sweep.py", "--help").returncode == 0


# ---- data and weight files ------------------------------------------------------------------


@pytest.mark.parametrize(
    "train, message",
    [
        ("sentence\tlabel\na\t0\nb\t1\textra\n", r"train.tsv line 3: 3 cells, the header has 2"),
        ("sentence\tlabel\na\t0\nb\t\n", r"train.tsv line 3: no 'label' value"),
        ("sentence\tlabel\na\t0\nb\n", r"train.tsv line 3: 1 cells, the header has 2"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, tiny_bert_vocab_dir, train, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text(train)
    (data / "dev.tsv").write_text("sentence\tlabel\na\t0\n")
    out = _cli(*_train_args(tiny_bert_vocab_dir, data, tmp_path / "run"))
    line = _one_error(out)
    assert str(data / "train.tsv") in line
    assert re.search(message, line), line


def test_label_seen_only_in_validation_is_refused_or_listed(tmp_path, tiny_bert_vocab_dir):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.tsv").write_text("sentence\tlabel\n" + "a\tneg\nb\tpos\n" * 4)
    (data / "dev.tsv").write_text("sentence\tlabel\na\tneg\nb\tneutral\n")
    out = _cli(*_train_args(tiny_bert_vocab_dir, data, tmp_path / "run"))
    assert _one_error(out) == (
        "error: validation split row 1: label 'neutral' is not a train label (neg, pos); fix "
        "the row, or list every class in --config.data.labels"
    )
    out = _cli(
        *_train_args(tiny_bert_vocab_dir, data, tmp_path / "run2"),
        "--config.data.labels=neg,neutral,pos",
        "--config.train.max_steps=1",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "run2" / "labels.json").read_text()) == ["neg", "neutral", "pos"]


def test_corrupt_weights_name_the_file(tmp_path, tiny_bert_vocab_dir, data_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_vocab_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    out = _cli(*_train_args(model, data_dir, tmp_path / "run"))
    assert _one_error(out) == (
        f"error: {weights}: unreadable weights file, truncated or corrupt (Error while "
        "deserializing header: incomplete metadata, file not fully covered); download or save "
        "the checkpoint again"
    )


def test_truncated_pytorch_bin_names_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    from bertjax.hub.pretrained import read_state_dict

    file = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(64)}, file)
    file.write_bytes(file.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"^{file}: unreadable weights file, truncated"):
        read_state_dict(tmp_path)
    file.write_bytes(b"")
    with pytest.raises(ValueError, match=rf"^{file}: unreadable weights file, truncated"):
        read_state_dict(tmp_path)


# ---- what a person reads: logs, predict, report ---------------------------------------------


def test_train_log_is_quiet(trained):
    _, out = trained
    lines = out.stderr.splitlines()
    assert not [line for line in lines if "orbax" in line.lower() or "checkpoint_handler" in line]
    assert not [line for line in lines if "libtpu" in line]
    assert any("validation" in line for line in lines)  # bertjax's own INFO lines stay
    assert len(lines) <= 10, out.stderr


def test_predict_prints_label_names_and_needs_no_data(trained, tmp_path):
    run, _ = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("a good sentence\nsomething bad\n")
    out = _cli("eval.py", "--ckpt", run, "--predict", texts)
    assert out.returncode == 0, out.stderr  # the run's data folder is gone: not loaded
    assert "newly initialised" not in out.stderr
    printed = out.stdout.splitlines()
    # written in the run folder, never into the texts' folder
    assert len(printed) == 3 and printed[-1] == f"wrote {run}/texts.txt.predictions.tsv"
    names = json.loads((run / "labels.json").read_text())
    for line, text in zip(printed, ["a good sentence", "something bad"], strict=False):
        label, probs, shown = line.split("\t")
        assert label in names and shown == text
        pairs = probs.split("  ")
        assert [p.split()[0] for p in pairs] == names
        assert abs(sum(float(p.split()[1]) for p in pairs) - 1) < 2e-3
    assert not (tmp_path / "texts.txt.predictions.tsv").exists()
    raw = (run / "texts.txt.predictions.tsv").read_bytes()
    assert b"\r" not in raw and raw.count(b"\n") == 3


def test_predict_on_an_empty_file(trained, tmp_path):
    run, _ = trained
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    out = _cli("eval.py", "--ckpt", run, "--predict", empty)
    assert _one_error(out) == f"error: {empty}: no texts to predict; write one per line"


def test_report_writes_next_to_its_input(trained, tmp_path):
    run, _ = trained
    out = _cli(REPO / "report.py", run, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert not list(tmp_path.iterdir())  # nothing in the working directory
    assert {"report.md", "report.csv"} <= {p.name for p in run.parent.iterdir()}
    out = _cli(REPO / "report.py", tmp_path / "nothing_here", cwd=tmp_path)
    assert _one_error(out) == f"error: {tmp_path / 'nothing_here'}: no such folder"
