"""Memory estimate: exact parameter bytes, activation scaling, and agreement with XLA's numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import peft
from bertjax.train import memory
from tests.conftest import TINY

REPO = Path(__file__).resolve().parents[1]
DIMS = dict(B=8, L=32, H=32, A=4, F=64, N=2)  # the tiny config's batch shape on TINY


def test_param_bytes_exact():
    assert memory.param_bytes(10, 100) == 16 * 10 + 4 * 100
    assert memory.param_bytes(0, 0) == 0
    est = memory.estimate(1_000, 5_000, *DIMS.values(), 4, "bitfit")
    assert est["params"] == 16 * 1_000 + 4 * 5_000
    assert est["total"] == est["params"] + est["activations"]


def test_activation_formula_scaling():
    B, L, H, A, F, N = DIMS.values()

    def acts(**change):
        return memory.activation_bytes(**{**DIMS, **change}, dtype_bytes=4)

    # Full fine-tuning in float32, tensor by tensor (bytes each layer keeps for its backward
    # pass, read off the architecture): the layer input x, Q, K, V, the context and the FFN
    # input (float32 [B, L, H]); GELU's input and output ([B, L, F]); the two LayerNorm inputs;
    # two hidden dropout masks (1 byte per element); the softmax output, the attention dropout
    # mask and the dropped probabilities ([B, A, L, L]); the embeddings keep their LayerNorm
    # input and dropout mask.
    tokens, maps = B * L, B * A * L * L
    per_layer = {
        "x, Q, K, V, context, FFN input": 6 * 4 * tokens * H,
        "GELU input, GELU output": 2 * 4 * tokens * F,
        "2 LayerNorm inputs": 2 * 4 * tokens * H,
        "2 hidden dropout masks": 2 * 1 * tokens * H,
        "softmax output, attention dropout mask, dropped probabilities": (4 + 1 + 4) * maps,
    }
    embeddings = 4 * tokens * H + 1 * tokens * H
    assert acts() == N * sum(per_layer.values()) + embeddings
    assert acts(B=2 * B) == 2 * acts()  # linear in the batch
    assert acts(N=2 * N) - acts() == acts(N=N) - acts(N=0)  # linear in the layers
    # Quadratic in L only through the attention maps: f(2L) - 2 f(L) = 2·N·(5 + p)·B·A·L².
    assert acts(L=2 * L) - 2 * acts() == 2 * N * (5 + 4) * B * A * L * L
    assert acts(A=2 * A) - acts() == N * 9 * B * A * L * L
    # bfloat16 (mixed precision) halves the kept matmul operands only: Q, K, V, the dropped
    # probabilities and the Dense inputs; LayerNorm and GELU inputs, the softmax output and
    # the embeddings' LayerNorm input stay float32, the masks 1 byte.
    bf16 = memory.activation_bytes(*DIMS.values(), dtype_bytes=2)
    halved = 2 * (6 * tokens * H + tokens * F + maps)  # x, Q, K, V, context, FFN input; GELU
    # output; dropped probabilities
    assert acts() - bf16 == N * halved
    assert bf16 == N * (22 * tokens * H + 6 * tokens * F + 7 * maps) + 5 * tokens * H
    # Frozen weight matrices: the Dense inputs (3·BLH + BLF per layer) are not kept.
    frozen = memory.activation_bytes(*DIMS.values(), dtype_bytes=4, weight_grads=False)
    assert acts() - frozen == N * 4 * (3 * tokens * H + tokens * F)


def test_estimate_per_method_on_a_case_worked_by_hand():
    """One BERT layer, B 1, L 2, H 4, A 1, F 8, float32: every kept tensor counted in bytes.

    Full fine-tuning, per layer: x, Q, K, V, context, FFN input [1, 2, 4] 6 x 32 = 192;
    GELU input and output [1, 2, 8] 2 x 64 = 128; 2 LayerNorm inputs 64; 2 hidden dropout
    masks (1 byte) 16; softmax output [1, 1, 2, 2] 16, its dropout mask 4, the dropped
    probabilities 16: 436. Embeddings: LayerNorm input 32, dropout mask 8: 40.
    Frozen kernels keep no Dense inputs (x, context, FFN input, GELU output: 160 less).
    LoRA r 1 on 2 targets, dropout 0.1: x once 32, per target its mask 8, the dropped input
    32 and x·a [1, 2, 1] 8; and no embedding LayerNorm gradient (no 40).
    Houlsby, bottleneck 4 / 2 = 2: per adapter its input 32 and two [1, 2, 2] tensors 16 each.
    """
    dims = (1, 2, 4, 1, 8, 1, 4)

    def acts(method, peft_cfg=None):
        return memory.estimate(10, 100, *dims, method=method, peft_cfg=peft_cfg)

    assert acts("full") == dict(params=16 * 10 + 4 * 100, activations=476, total=560 + 476)
    assert acts("head")["activations"] == 0
    assert acts("bitfit")["activations"] == 436 - 160 + 40
    lora = peft.LoraConfig(1, 2.0, 0.1, ("query", "value"))
    assert acts("lora", lora)["activations"] == 436 - 160 + 32 + 2 * (8 + 32 + 8)
    houlsby = peft.AdapterConfig("houlsby", reduction_factor=2)
    assert acts("adapter", houlsby)["activations"] == 436 - 160 + 40 + 2 * (32 + 16 + 16)
    pfeiffer = peft.AdapterConfig("pfeiffer", reduction_factor=2)
    assert acts("adapter", pfeiffer)["activations"] == 436 - 160 + 40 + (32 + 16 + 16)
    with pytest.raises(ValueError, match="unknown"):
        memory.estimate(1, 1, *dims, method="prefix")


def _table_rows(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] in memory.METHODS:
            rows[cells[0]] = cells
    return rows


def test_cli_rows_and_agreement_with_xla(tmp_path):
    """configs/tiny.py on a TINY config.json (nothing is loaded: the model is abstract)."""
    model = tmp_path / "tiny_bert"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**TINY, "model_type": "bert"}))
    # Backend optimisation only changes code generation, not buffer sizes; it halves compiles.
    flags = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
    out = subprocess.run(
        [sys.executable, "-m", "bertjax.train.memory", "--config", "configs/tiny.py"]
        + [f"--config.model={model}", "--config.dtype=float32"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "libtpu" not in out.stderr, out.stderr  # the same quiet logs as train.py
    assert "batch 8 x length 32, float32" in out.stdout
    rows = _table_rows(out.stdout)
    assert list(rows) == list(memory.METHODS), out.stdout
    base, head = 22_786, 32 * 2 + 2  # TINY with a 2-label head
    frozen = {
        "full": 0,
        "bitfit": base - head - (2 * (4 * 32 + 2 * 32 + 64 + 32) + 32 + 32),  # all biases
        "lora": base - head,
        "adapter": base - head - 2 * 32 * (1 + 2 * 2),  # every LayerNorm
    }
    assert {m: int(cells[2].replace(",", "")) for m, cells in rows.items()} == frozen
    # LoRA rank 2 on query and value of 2 layers, plus the head.
    assert int(rows["lora"][1].replace(",", "")) == 2 * 2 * (32 * 2 + 2 * 32) + head
    # Measured on CPU (jax 0.10.2; the last layer computing the first tokens only):
    # estimate/XLA 0.72 full, 0.70 BitFit, 0.82 LoRA, 0.72 adapters; XLA also holds backward
    # transients and layout copies. Without activations the ratio would be ~0.1, with them
    # counted twice ~1.5.
    for method, cells in rows.items():
        assert 0.4 < float(cells[-1]) < 0.9, (method, out.stdout)
