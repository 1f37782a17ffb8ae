"""Running Hugging Face peft (PyTorch), installed in .hf-peft/, as the tests' reference."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HF_PEFT = Path(__file__).resolve().parents[1] / ".hf-peft"
SCRIPT = Path(__file__).with_name("hf_peft_reference.py")
INSTALL = "pip install --no-deps --target .hf-peft peft==0.21.2 accelerate==1.13.0"


def require_hf_peft(module_level: bool = False) -> None:
    """Skips without .hf-peft, unless BERTJAX_REQUIRE_HF_PEFT is set (CI): then fails."""
    if HF_PEFT.is_dir():
        return
    reason = f"Hugging Face peft not installed in {HF_PEFT}: {INSTALL}"
    if os.environ.get("BERTJAX_REQUIRE_HF_PEFT"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


def reference(jobs: list[dict]) -> list[dict]:
    """Runs jobs in tests/hf_peft_reference.py with Hugging Face peft first on the path."""
    require_hf_peft()
    env = dict(os.environ, PYTHONPATH=str(HF_PEFT))
    out = subprocess.run(
        [sys.executable, str(SCRIPT), json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=env,
        cwd=SCRIPT.parent,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
