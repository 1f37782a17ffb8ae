"""Inference throughput on SST-2: our length-sorted bucketed eval vs PyTorch dynamic padding.

    python bench/eval.py [--examples 4000 --repeats 3 --dtype bfloat16 --markdown f.md]

MiniLM-L6 with a seeded 2-label head, exported with `bertjax.save_pretrained` so both sides run
the same weights; float32, batch 128, max_length 128. Ours: `bertjax.train.evaluate.predict`
(`batching.eval_batches`: packed rows, or with --packing 0 sorted by length and padded to
buckets; jitted `make_eval_step`).
PyTorch: `torch.no_grad()`, batches in dataset order padded to their longest example
(DataCollatorWithPadding). The full dev set (872) by default; --examples N takes the first N
rows of train.tsv instead. Warm-up (ours: every compile) excluded; median of --repeats.
Sanity check: argmax agreement of the two sides' logits (should be >= 99.9%).
"""

import argparse
import tempfile
from pathlib import Path

import common
import jax.numpy as jnp
import numpy as np

import bertjax
import peft
from bertjax import data
from bertjax.data import batching
from bertjax.train.build import frozen_in_compute_dtype
from bertjax.train.evaluate import predict
from bertjax.train.steps import make_eval_step


def write_split(folder: Path, examples: int | None) -> Path:
    """eval.tsv: SST-2 dev, or the first `examples` rows of train."""
    source = common.SST2 / ("train.tsv" if examples else "dev.tsv")
    lines = source.read_text(encoding="utf-8").splitlines(True)
    path = folder / "eval.tsv"
    path.write_text("".join(lines[: examples + 1] if examples else lines), encoding="utf-8")
    return path


def ours(model, params, dataset, batch_size, max_length, repeats, pad_id, packing) -> dict:
    buckets = batching.bucket_lengths(max_length)
    mask = peft.trainable_mask(params, "head")
    # as a bfloat16 run evaluates: the frozen weight matrices cast once to the compute dtype
    params = frozen_in_compute_dtype(params, mask, model.dtype)
    trainable, frozen = peft.partition(params, mask)
    step = make_eval_step(model)

    def run():
        return predict(
            step, trainable, frozen, dataset, batch_size, buckets, pad_id, 2, packing=packing
        )

    logits = run()  # warm-up: compiles every shape
    shapes = [
        b["input_ids"].shape
        for b in batching.eval_batches(dataset, batch_size, buckets, pad_id=pad_id, packing=packing)
    ]
    return dict(
        eval_s=common.median_time(run, repeats),  # predict fetches every result: no async tail
        logits=logits,
        computed_tokens=sum(rows * length for rows, length in shapes),
        real_tokens=sum(len(ids) for ids in dataset["input_ids"]),
        num_shapes=len(set(shapes)),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=None, help="first N of train, not dev")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--packing", type=int, default=1, help="ours: 1 packed rows, 0 buckets")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: ours dtype=bfloat16 (mixed precision), PyTorch torch.autocast",
    )
    common.add_output_flags(parser)
    args = parser.parse_args()
    model_dir = common.minilm_path()
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[args.dtype]
    model, params = bertjax.from_pretrained(model_dir, num_labels=2, seed=0, dtype=dtype)
    data_cfg = common.base_config().data
    data_cfg.max_length = args.max_length
    tokenizer = bertjax.load_tokenizer(model_dir)
    pad_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as tmp:
        raw = data.read_file(write_split(Path(tmp), args.examples))
        split = data.encode_labels({"train": raw}, ["0", "1"], data_cfg)
        dataset = data.tokenize(split, tokenizer, data_cfg)["train"]
        a = ours(
            model, params, dataset, args.batch, args.max_length, args.repeats, pad_id, args.packing
        )
        bertjax.save_pretrained(model, params, Path(tmp, "model"))
        b = common.run_torch(
            "eval",
            model=Path(tmp, "model"),
            tokenizer=model_dir,
            data=tmp,
            split="eval",
            eval_batch=args.batch,
            max_length=args.max_length,
            repeats=args.repeats,
            threads=args.torch_threads,
            dtype=args.dtype,
        )
    n = len(dataset)
    torch_logits = np.asarray(b["logits"], np.float32)
    agree = float(np.mean(a["logits"].argmax(-1) == torch_logits.argmax(-1)))
    rows = [
        ["seconds", f"{a['eval_s']:.2f}", f"{b['eval_s']:.2f}"],
        ["examples/s", f"{n / a['eval_s']:.0f}", f"{n / b['eval_s']:.0f}"],
        ["computed tokens", f"{a['computed_tokens']:,}", f"{b['computed_tokens']:,}"],
        ["real tokens", f"{a['real_tokens']:,}", f"{b['real_tokens']:,}"],
        ["distinct batch shapes", a["num_shapes"], "-"],
    ]
    what = f"first {n} of SST-2 train" if args.examples else f"SST-2 dev ({n})"
    text = (
        f"{what}, MiniLM-L6, batch {args.batch}, {args.dtype}, median of {args.repeats}. Speedup "
        f"(torch s / ours s): **{b['eval_s'] / a['eval_s']:.2f}x**. Argmax agreement "
        f"{100 * agree:.2f}% {'(ok)' if agree >= 0.999 else '(BELOW 99.9%)'}, max |Δlogit| "
        f"{np.abs(a['logits'] - torch_logits).max():.1e}.\n\n"
        + common.table(["", "ours", "PyTorch"], rows)
    )
    common.report("Inference: ours vs PyTorch", text, b, args.markdown)


if __name__ == "__main__":
    main()
