"""One training epoch on an SST-2 subset: our `training.train` vs two PyTorch loaders.

    python bench/epoch.py [--train_examples 2000 --method full --packing 1 --markdown f.md]

Both sides train the same seeded subset of /work/shared/data/sst2/train.tsv for one epoch
(MiniLM-L6, batch 32, max_length 128, AdamW lr 1e-4, weight decay 0.01, linear schedule with
10% warmup, clip 1.0, dropout on, len // 32 steps) and evaluate the full dev set (872).
Ours: the real `bertjax.train.loop.train` path in a temp workdir; its epoch time includes the
XLA compiles (reported separately, from jax.monitoring); packed rows (data.packing) or length
buckets. PyTorch: BertForSequenceClassification with DataCollatorWithPadding (pad to the longest
in each batch), once with a shuffled DataLoader (dynamic padding) and once with Trainer's
`group_by_length` sampler (LengthGroupedSampler: batches of similar lengths).
"""

import argparse
import collections
import tempfile
from pathlib import Path

import common
import jax
import numpy as np

from bertjax import data
from bertjax.data import batching
from bertjax.hub.pretrained import load_tokenizer
from bertjax.train import loop as training


def write_subset(folder: Path, n: int, seed: int) -> None:
    """train.tsv: n seeded random rows of SST-2 train (original order); dev.tsv: all of dev."""
    header, *rows = (common.SST2 / "train.tsv").read_text(encoding="utf-8").splitlines(True)
    keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])
    (folder / "train.tsv").write_text(header + "".join(rows[i] for i in keep), encoding="utf-8")
    (folder / "dev.tsv").write_text((common.SST2 / "dev.tsv").read_text(encoding="utf-8"))


def make_config(args, model: str, data_dir: Path, workdir: Path):
    config = common.base_config()
    config.name, config.workdir, config.model = "bench_epoch", str(workdir), model
    config.data.path = str(data_dir)
    config.data.splits.validation, config.data.splits.test = "dev", ""
    config.data.max_length = args.max_length
    config.data.packing = bool(args.packing)
    config.peft.method = args.method
    config.optim.update(lr=args.lr, weight_decay=0.01, warmup_ratio=0.1)
    config.train.update(batch_size=args.batch, epochs=1, eval_batch_size=128, seed=0)
    # one evaluation, at the epoch's end, as the PyTorch reference (by default a run this
    # short would evaluate 4 times)
    config.train.eval_every = 10**9
    config.dtype = getattr(args, "dtype", "float32")  # epoch.py: float32; whole_run.py: its flag
    return config


def token_counts(config) -> tuple[int, int]:
    """(computed, real) tokens of our first epoch: every slot of its batches vs real tokens."""
    splits, _ = data.prepare(config.data, load_tokenizer(config.model), config.train.seed)
    computed = real = 0
    for batch in batching.train_batches(
        splits["train"],
        config.train.batch_size,
        batching.bucket_lengths(config.data.max_length),
        config.train.seed,
        0,
        pad_id=0,
        packing=config.data.packing,
    ):
        computed += batch["input_ids"].size
        real += int(batch["attention_mask"].sum())
    return computed, real


def ours(config) -> dict:
    compile_s, compiles = collections.Counter(), collections.Counter()

    def listen(event, seconds, fun_name="", **_):
        name = fun_name.removeprefix("jit(").removesuffix(")")
        if event.startswith("/jax/core/compile/") and name in ("train_step", "eval_step"):
            compile_s[name] += seconds  # tracing + lowering + XLA compile
            compiles[name] += event.endswith("backend_compile_duration")

    jax.monitoring.register_event_duration_secs_listener(listen)
    summary = training.train(config)
    computed, real = token_counts(config)
    return dict(
        epoch_s=summary["seconds_per_epoch"],
        total_s=summary["wall_time_s"],
        compile_s=compile_s["train_step"],
        eval_compile_s=compile_s["eval_step"],
        num_shapes=compiles["train_step"],
        eval_shapes=compiles["eval_step"],
        computed_tokens=computed,
        real_tokens=real,
        accuracy=summary["validation"]["accuracy"],
        trainable=summary["trainable_params"],
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_examples", type=int, default=2000)
    parser.add_argument("--method", default="full", choices=list(common.METHODS))
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--packing", type=int, default=1, help="ours: 1 packed rows, 0 buckets")
    common.add_output_flags(parser)
    args = parser.parse_args()
    model = common.minilm_path()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, workdir = Path(tmp, "data"), Path(tmp, "run")
        data_dir.mkdir()
        write_subset(data_dir, args.train_examples, seed=0)
        a = ours(make_config(args, model, data_dir, workdir))
        torch_flags = dict(
            model=model,
            data=data_dir,
            method=args.method,
            batch=args.batch,
            lr=args.lr,
            warmup_ratio=0.1,
            max_length=args.max_length,
            eval_batch=128,
            lora_dropout=0.1,  # configs/base.py's peft.lora.dropout
            threads=args.torch_threads,
        )
        b = common.run_torch("epoch", **torch_flags)
        g = common.run_torch("epoch", **torch_flags, group_by_length=1)
    steady = a["epoch_s"] - a["compile_s"]

    def ratio(x):
        return f"{x['computed_tokens'] / x['real_tokens']:.2f}"

    rows = [
        [
            "epoch wall s (train loop)",
            f"{a['epoch_s']:.1f}",
            f"{b['epoch_s']:.1f}",
            f"{g['epoch_s']:.1f}",
        ],
        ["  of which XLA compile s", f"{a['compile_s']:.1f}", "-", "-"],
        ["epoch s without compile", f"{steady:.1f}", f"{b['epoch_s']:.1f}", f"{g['epoch_s']:.1f}"],
        [
            "epoch + dev eval s",
            f"{a['total_s']:.1f} (+ckpts)",
            f"{b['epoch_s'] + b['eval_s']:.1f}",
            f"{g['epoch_s'] + g['eval_s']:.1f}",
        ],
        ["computed tokens", *(f"{x['computed_tokens']:,}" for x in (a, b, g))],
        ["real tokens", *(f"{x['real_tokens']:,}" for x in (a, b, g))],
        ["computed / real", ratio(a), ratio(b), ratio(g)],
        ["distinct batch shapes (train)", a["num_shapes"], b["num_shapes"], g["num_shapes"]],
        ["dev accuracy (872)", *(f"{x['accuracy']:.4f}" for x in (a, b, g))],
        ["trainable params", *(f"{x['trainable']:,}" for x in (a, b, g))],
    ]
    ours_name = "ours (packed)" if args.packing else "ours (buckets)"
    text = (
        f"SST-2 {args.train_examples} train examples, {b['steps']} steps, method {args.method}, "
        f"MiniLM-L6, batch {args.batch}, lr {args.lr}. Speedup (torch / ours) incl. compile: "
        f"**{b['epoch_s'] / a['epoch_s']:.2f}x** dynamic padding, "
        f"**{g['epoch_s'] / a['epoch_s']:.2f}x** group_by_length; without compile "
        f"{b['epoch_s'] / steady:.2f}x, {g['epoch_s'] / steady:.2f}x. Ours also compiled "
        f"{a['eval_shapes']} eval shapes ({a['eval_compile_s']:.1f} s).\n\n"
        + common.table(["", ours_name, "PyTorch dynamic", "PyTorch group_by_length"], rows)
    )
    common.report(f"One epoch: ours vs PyTorch ({args.method})", text, b, args.markdown)


if __name__ == "__main__":
    main()
