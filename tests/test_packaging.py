"""The wheel: built from the sources, installed into a fresh venv, its CLI's --help works from
a folder outside the checkout (no configs/, no train.py there)."""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from bertjax.train import defaults

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def _flat_names(config, prefix="") -> set[str]:
    names = set()
    for key, value in config.items():
        if hasattr(value, "items"):
            names |= _flat_names(value, f"{prefix}{key}.")
        else:
            names.add(f"{prefix}{key}")
    return names


@pytest.mark.slow
def test_installed_wheel_train_help_lists_the_config_fields(tmp_path):
    # a copy, so the in-tree build folders never race other tests
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("bertjax", "peft"):
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    wheels = tmp_path / "wheels"
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        str(wheels),
        str(source),
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("bertjax-*.whl")

    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(
        _run(
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
            cwd=tmp_path,
        ).stdout.strip()
    )
    # the already-installed dependencies (jax, flax, …) through a .pth: no downloads
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--no-deps",
        "-q",
        str(wheel),
        cwd=tmp_path,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = _run(str(python), "-c", "import bertjax; print(bertjax.__file__)", cwd=outside)
    assert Path(where.stdout.strip()).is_relative_to(site)  # the wheel's copy, not the checkout
    out = _run(str(venv / "bin" / "bertjax-train"), "--help", cwd=outside).stdout
    rows = out.split("config fields", 1)[1].splitlines()[1:]
    listed = {line.split()[0] for line in rows if line.strip()}
    assert listed == _flat_names(defaults.get_config())
    lr_row = next(line for line in rows if line.split()[:1] == ["optim.lr"])
    assert lr_row.split(None, 2)[1:] == ["2e-05", "peak learning rate (AdamW), > 0"]
    assert "--config: Path to a configs/*.py file." in out
