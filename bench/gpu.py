"""Train step on one GPU: ours (JAX) vs PyTorch eager, float32 and bfloat16, bert-base-sized.

    python bench/gpu.py [--repeats 20 --markdown f.md]      # on a GPU machine
    python bench/gpu.py --small                              # anywhere (CPU): proves it runs

Random weights of a bert-base-sized BERT (12 layers, hidden 768, 12 heads, intermediate 3072,
vocabulary 30,522), 2 labels, full fine-tuning, AdamW + global-norm clipping + linear schedule,
dropout on, one fixed random batch of 32 × 128 tokens (no padding). Ours: the jitted train step
of training (`make_train_step`), `dtype` float32 or bfloat16 (bf16 operands, f32 results).
PyTorch: `transformers` BertForSequenceClassification, eager, float32 or
`torch.autocast(device, torch.bfloat16)` around forward+loss (bench/torch_ref.py's step), run in
bench/.venv-torch (`--torch_python`; skipped, with a note, where that python is missing).
Both sides run on the same device: JAX's first device and `cuda` where torch sees one, else the
CPU. float32 matmuls may use TF32 on both sides (XLA's default on GPU; torch is told to allow it).

Per side and dtype: median step time of --repeats steps after two warm-up steps, tokens/s,
TFLOP/s of the analytic training FLOPs (3 × the forward matmuls: 6 per parameter of the encoder
matrices per token, plus attention's 12 · batch · seq² · hidden per layer) and MFU against the
device's dense peak (PEAK_TFLOPS by device name: bf16 for bfloat16, TF32 for float32; None
where the device is not in the table, the CPU included). --small: 2 layers, hidden 128, batch
8 × 64, 3 repeats.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BERT_BASE = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
)
SMALL = {**BERT_BASE, "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}
SMALL["intermediate_size"] = 512
# Dense (no sparsity) tensor-core TFLOP/s from NVIDIA's data sheets, (bf16, tf32), matched by
# the first name that occurs in the device's name: the PCIe and NVL H100s before the SXM one.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 418.0),
    ("H100", 989.0, 494.7),
    ("H200", 989.0, 494.7),
    ("A100", 312.0, 156.0),
)


def peak_flops(device_name: str, dtype: str) -> float | None:
    """FLOP/s peak of a named device at `dtype` (float32 → TF32); None when not in the table."""
    for name, bf16, tf32 in PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return (bf16 if dtype == "bfloat16" else tf32) * 1e12
    return None


def train_flops(dims: dict, batch: int, seq: int) -> float:
    """Analytic FLOPs of one training step (forward + backward = 3 × forward) of a BERT
    classifier: the encoder's and pooler's matrices, the attention scores and their values."""
    h, layers, inner = dims["hidden_size"], dims["num_hidden_layers"], dims["intermediate_size"]
    tokens = batch * seq
    matrices = 2 * tokens * layers * (4 * h * h + 2 * h * inner)
    attention = 4 * batch * seq * seq * h * layers  # q·kᵀ and p·v
    pooler = 2 * batch * h * h
    return 3.0 * (matrices + attention + pooler)


def fixed_batch(batch: int, seq: int):
    """(input ids [batch, seq], labels [batch]) as numpy, the same on both sides (seeded)."""
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(1000, 30000, (batch, seq)), rng.integers(0, 2, batch)


def timed_steps(step, repeats: int) -> float:
    """Median seconds of step() (which must wait for its work) after two warm-up calls."""
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ours(dims: dict, batch: int, seq: int, dtype: str, repeats: int) -> dict:
    """Median step seconds of our jitted full fine-tuning step at `dtype`."""
    import common
    import jax
    import jax.numpy as jnp

    import bertjax
    import peft
    from bertjax.train.optim import make_optimizer
    from bertjax.train.steps import init_state, make_train_step

    hf = dict(model_type="bert", type_vocab_size=2, **dims)
    model, params = bertjax.from_config(hf, num_labels=2, dtype=jnp.dtype(dtype))
    optimizer = make_optimizer(common.optim_config(), 1000)
    state = init_state(params, peft.trainable_mask(params, "full"), optimizer)
    # common.random_batch draws fixed_batch's ids and labels (same seed, same order)
    inputs, key = jax.device_put(common.one_run(common.random_batch(batch, seq), jax.random.key(0)))
    step = make_train_step(model, optimizer).lower(state, inputs, key).compile()
    box = [state]

    def run():
        box[0], metrics = step(box[0], inputs, key)
        jax.block_until_ready(metrics)

    return dict(step_s=timed_steps(run, repeats), device=jax.devices()[0].device_kind)


def torch_child(dims: dict, batch: int, seq: int, dtypes: list[str], repeats: int) -> dict:
    """Median step seconds of PyTorch eager per dtype (runs in bench/.venv-torch)."""
    import torch
    import torch_ref
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # as XLA's default float32 dots on GPU
    torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**dims, num_labels=2)).to(device).train()
    trainable = list(model.named_parameters())
    params = [p for _, p in trainable]
    optimizer, schedule = torch_ref.make_optimizer(trainable, 1e-4, 0.01, 0, 1000)
    ids, labels = (torch.from_numpy(a).to(device) for a in fixed_batch(batch, seq))
    inputs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=torch.zeros_like(ids),
        labels=labels,
    )
    out = dict(device=torch.cuda.get_device_name() if device == "cuda" else "cpu")
    out.update(
        torch=torch.__version__,
        transformers=transformers.__version__,
        threads=torch.get_num_threads(),
    )
    for dtype in dtypes:

        def run(dtype=dtype):  # .item() waits for the device
            torch_ref.train_step(model, params, optimizer, schedule, inputs, dtype, device).item()

        out[dtype] = timed_steps(run, repeats)
    return out


def run_torch(args, dims: dict) -> dict | None:
    """torch_child's result from --torch_python; None (and a note) where it is missing."""
    if not Path(args.torch_python).exists():
        print(f"no PyTorch side: {args.torch_python} not found", file=sys.stderr)
        return None
    spec = dict(dims=dims, batch=args.batch, seq=args.seq, dtypes=args.dtypes.split(","))
    cmd = [args.torch_python, __file__, "--torch_child", json.dumps(spec)]
    cmd += ["--repeats", str(args.repeats)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def row(side: str, dtype: str, step_s: float, flops: float, device: str, tokens: int) -> list:
    """One table row: ms/step, tokens/s, TFLOP/s and MFU (n/a: no peak known for `device`)."""
    peak = peak_flops(device, dtype)
    mfu = "n/a" if peak is None else f"{flops / step_s / peak:.1%}"
    speed = [f"{step_s * 1e3:.1f}", f"{tokens / step_s:,.0f}", f"{flops / step_s / 1e12:.3g}"]
    return [side, dtype, *speed, mfu]


def report_text(args, dims: dict, ours_s: dict, theirs: dict | None, device: str) -> str:
    """The table of both sides, with the model, batch and device above it."""
    import common

    flops, tokens = train_flops(dims, args.batch, args.seq), args.batch * args.seq
    rows = [row("ours (JAX)", d, s, flops, device, tokens) for d, s in ours_s.items()]
    if theirs:
        for dtype in ours_s:
            side = "PyTorch eager" + (" + autocast" if dtype == "bfloat16" else "")
            rows.append(row(side, dtype, theirs[dtype], flops, theirs["device"], tokens))
    headers = ["side", "dtype", "ms/step", "tokens/s", "TFLOP/s", "MFU"]
    size = "small (--small)" if args.small else "bert-base-sized"
    note = "" if theirs else " PyTorch side skipped (no --torch_python)."
    return (
        f"{size} random BERT ({dims['num_hidden_layers']} layers, hidden {dims['hidden_size']}), "
        f"full fine-tuning, batch {args.batch} × {args.seq}, median of {args.repeats} steps, on "
        f"{device}; {flops / 1e9:,.1f} GFLOP per step (analytic).{note}\n\n"
        + common.table(headers, rows)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny model and batch (CPU check)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (--small: 8)")
    parser.add_argument("--seq", type=int, default=None, help="default 128 (--small: 64)")
    parser.add_argument("--repeats", type=int, default=None, help="default 20 (--small: 3)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--torch_python", default=str(BENCH / ".venv-torch" / "bin" / "python"))
    parser.add_argument("--markdown", help="append the table, machine and command to this file")
    parser.add_argument("--torch_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_child:  # in bench/.venv-torch: no jax, no bertjax
        spec = json.loads(args.torch_child)
        print(json.dumps(torch_child(**spec, repeats=args.repeats)))
        return
    args.batch = args.batch or (8 if args.small else 32)
    args.seq = args.seq or (64 if args.small else 128)
    args.repeats = args.repeats or (3 if args.small else 20)
    dims = SMALL if args.small else BERT_BASE
    import common  # imports jax: not in the torch child

    ours_s, device = {}, "?"
    for dtype in args.dtypes.split(","):
        result = ours(dims, args.batch, args.seq, dtype, args.repeats)
        ours_s[dtype], device = result["step_s"], result["device"]
    theirs = run_torch(args, dims)
    text = report_text(args, dims, ours_s, theirs, device)
    text += f"\n\nload average at the end {os.getloadavg()[0]:.2f}"
    common.report("Train step on one device: ours vs PyTorch", text, theirs, args.markdown)


if __name__ == "__main__":
    main()
