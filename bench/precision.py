"""Train step in float32 vs bfloat16 (mixed precision), ours only, alternating in one process.

    python bench/precision.py [--methods lora,full,bitfit --batch 32 --seq 64 --repeats 7]

MiniLM-L6 real weights, AdamW, dropout on, a fixed random batch. Each method's float32 and
bfloat16 steps are compiled first, then timed in alternation (f32, bf16, f32, …) so that load
from other processes falls on both alike; median of --repeats each. bfloat16 runs as training
does: frozen weight matrices cast once (`build.frozen_in_compute_dtype`). Also counts, in each
compiled step's HLO, the converts, transposes and dots with bfloat16 results (a bfloat16-result
dot is the slow kind on CPU): what the profile showed to matter.
"""

import argparse
import os
import re

import common
import jax
import jax.numpy as jnp

import bertjax
import peft
from bertjax.train.build import frozen_in_compute_dtype
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import init_state, make_train_step


def compiled_step(model_dir, method: str, dtype, batch, key):
    """(run, hlo text, trainable count) of one method's jitted step at `dtype`."""
    config = common.METHODS[method]
    model, params = bertjax.from_pretrained(model_dir, num_labels=2, peft=config, dtype=dtype)
    mask = peft.trainable_mask(params, config or method)
    params = frozen_in_compute_dtype(params, mask, dtype)
    optimizer = make_optimizer(common.optim_config(), 1000)
    state = init_state(params, mask, optimizer)
    step = make_train_step(model, optimizer).lower(state, batch, key).compile()
    box = [state]

    def run():
        box[0], metrics = step(box[0], batch, key)
        jax.block_until_ready(metrics)

    run()  # warm-up
    return run, step.as_text(), peft.count(params, mask)


def hlo_counts(text: str) -> dict:
    """Instructions per step by kind (fusions' bodies included)."""
    ops = re.findall(r"= (\w+)\[[^\]]*\][^ ]* (\w+)\(", text)
    return dict(
        convert=sum(op == "convert" for _, op in ops),
        transpose=sum(op == "transpose" for _, op in ops),
        bf16_result_dots=sum(op == "dot" and kind == "bf16" for kind, op in ops),
        dots=sum(op == "dot" for _, op in ops),
    )


def alternate(runs: list, repeats: int) -> list[float]:
    """Median seconds of each run, timed in turns."""
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, t in zip(runs, times, strict=True):
            t.append(common.median_time(run, 1))
    return [sorted(t)[len(t) // 2] for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="lora,full,bitfit", help="comma-separated")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    common.add_output_flags(parser)
    args = parser.parse_args()
    model_dir = common.minilm_path()
    batch, key = common.one_run(common.random_batch(args.batch, args.seq), jax.random.key(0))
    batch = jax.device_put(batch)
    rows = []
    for method in args.methods.split(","):
        dtypes = (jnp.float32, jnp.bfloat16)
        built = [compiled_step(model_dir, method, d, batch, key) for d in dtypes]
        f32_s, bf16_s = alternate([run for run, _, _ in built], args.repeats)
        counts = [hlo_counts(text) for _, text, _ in built]
        rows.append(
            [
                method,
                f"{built[0][2]:,}",
                f"{f32_s:.3f}",
                f"{bf16_s:.3f}",
                f"**{f32_s / bf16_s:.2f}x**",
                " / ".join(str(c["convert"]) for c in counts),
                " / ".join(str(c["transpose"]) for c in counts),
                " / ".join(f"{c['bf16_result_dots']} of {c['dots']}" for c in counts),
            ]
        )
    headers = [
        "method",
        "trainable",
        "f32 s/step",
        "bf16 s/step",
        "speedup",
        "converts f32/bf16",
        "transposes f32/bf16",
        "bf16-result dots f32/bf16",
    ]
    load = os.getloadavg()
    text = (
        f"MiniLM-L6, batch {args.batch} x seq {args.seq}, AdamW, train mode, median of "
        f"{args.repeats} alternating steps; load average at the end {load[0]:.2f} "
        f"(shared machine: compare within this table only).\n\n" + common.table(headers, rows)
    )
    common.report("Train step: float32 vs bfloat16", text, None, args.markdown)


if __name__ == "__main__":
    main()
