"""Results that must not be silently wrong (issue #27): every case runs the real scripts in
a subprocess on real files, and ends either right or in one `error: …` line, exit status 1."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bertjax.train import loop as training
from tests.conftest import run_config

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, env=None, preexec_fn=None):
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        preexec_fn=preexec_fn,
    )


def _one_error(out) -> str:
    """The single line a failed command prints: exit status 1, no traceback."""
    assert out.returncode == 1, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def _rows(n: int) -> str:
    return "".join(f"sentence number {i} {'good' if i % 2 else 'bad'}\t{i % 2}\n" for i in range(n))


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
