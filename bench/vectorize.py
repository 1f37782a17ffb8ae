"""Vectorized sweep members vs separate runs: wall time of K runs trained as one vmapped program.

    python bench/vectorize.py [--method bitfit --lrs 3e-4,1e-4,5e-5,3e-5 --seeds 1,2,3,4,5 \
        --train_examples 500 --markdown bench/results.md]
    python bench/vectorize.py --quick      # 4 lrs × 1 seed, 256 examples, max_length 64

The issue's goal: 4 lrs × 5 seeds of LoRA or BitFit in at most 4× the time of one run.
Each timing is a whole run as a user sees it, through the real code paths: one
`training.train`, one `training.train_runs` group of all K = lrs × seeds members, and K separate
`training.train` runs (or --separate N of them, scaled by K/N). Wall times include data
preparation, XLA compiles, evaluation each epoch and checkpoints; a short warm-up run first
takes the one-off costs (imports, tokenizer, small helper jits) out of all three. Data: a
seeded subset of /work/shared/data/sst2/train.tsv (per seed, as in separate runs) and dev.
Also printed: the largest difference between a vectorized member's and its separate run's
validation accuracy (0 expected).
"""

import argparse
import tempfile
import time
from pathlib import Path

import common

from bertjax.train import loop as training


def make_config(args, workdir: Path, lr: float, seed: int, max_steps: int | None = None):
    config = common.base_config()
    config.name, config.workdir = f"lr={lr},seed={seed}", str(workdir / f"lr={lr},seed={seed}")
    config.model = args.model or common.minilm_path()
    config.data.path = str(common.SST2)
    config.data.splits.validation, config.data.splits.test = "dev", ""
    config.data.max_length = args.max_length
    config.data.max_train_examples = args.train_examples
    config.data.max_eval_examples = args.eval_examples
    config.peft.method = args.method
    config.optim.update(lr=lr, weight_decay=0.0, warmup_ratio=0.1)
    config.train.update(batch_size=args.batch_size, epochs=args.epochs, seed=seed, log_every=10**6)
    config.train.max_steps = max_steps
    config.lock()
    return config


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="bitfit", choices=["head", "bitfit", "lora", "adapter"])
    parser.add_argument("--lrs", default="3e-4,1e-4,5e-5,3e-5")
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--train_examples", type=int, default=500)
    parser.add_argument("--eval_examples", type=int, default=None, help="default: all of dev")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--separate", type=int, default=None, help="separate runs to time")
    parser.add_argument("--model", default=None, help="model folder (default: MiniLM-L6)")
    parser.add_argument("--quick", action="store_true", help="4 lrs × 1 seed, 256 examples")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.train_examples, args.eval_examples = "1", 256, 128
        args.max_length, args.batch_size = 64, 16
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    k = len(lrs) * len(seeds)
    n_separate = min(args.separate or k, k)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        training.train(make_config(args, tmp / "warmup", lrs[0] * 0.5, seeds[0], max_steps=2))
        one_s, _ = timed(lambda: training.train(make_config(args, tmp / "one", lrs[0], seeds[0])))
        members = [make_config(args, tmp / "vectorized", lr, s) for s in seeds for lr in lrs]
        vec_s, vec = timed(lambda: training.train_runs(members))
        separate = [make_config(args, tmp / "separate", lr, s) for s in seeds for lr in lrs]
        sep_s, sep = timed(lambda: [training.train(c) for c in separate[:n_separate]])
    sep_total = sep_s * k / n_separate
    diff = max(
        abs(a["validation"]["accuracy"] - b["validation"]["accuracy"])
        for a, b in zip(vec, sep, strict=False)
    )
    scaled = f" (timed {n_separate}, scaled)" if n_separate < k else ""
    rows = [
        ("one run", 1, one_s),
        (f"vectorized ({len(lrs)} lrs × {len(seeds)} seeds)", k, vec_s),
        (f"separate runs{scaled}", k, sep_total),
    ]
    lines = [
        f"MiniLM-L6 {args.method} on {args.train_examples} SST-2 examples"
        if not args.model
        else f"{args.model} {args.method} on {args.train_examples} SST-2 examples",
        f"(batch {args.batch_size}, max_length {args.max_length}, {args.epochs} epoch(s), "
        f"dev {args.eval_examples or 'all'}); wall times include compiles, eval and checkpoints",
        "",
        "| | runs | wall s | × one run |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {n} | {s:.1f} | {s / one_s:.2f} |" for name, n, s in rows),
        "",
        f"max |Δ validation accuracy| vectorized vs separate: {diff:.2e}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
