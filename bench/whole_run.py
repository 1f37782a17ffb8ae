"""Whole-process wall time of one training run, ours (cold and warm XLA cache) vs PyTorch.

    python bench/whole_run.py [--train_examples 4000 --method lora --lr 5e-4 --dtype float32 \
        --markdown f.md]

The same work as bench/epoch.py (a seeded SST-2 subset, one epoch, MiniLM-L6, batch 32, dev
evaluation), but each side is timed as a whole process from its start to its exit: Python
start, imports, tokenization, weights, compilation, training, evaluation, checkpoints, plots.
Ours runs twice in one fresh persistent XLA cache (`BERTJAX_XLA_CACHE`) and tokenizer cache
(`BERTJAX_TOKENIZER_CACHE`): cold (both empty) and warm (what the first run left), at the
default settings (dtype auto: bfloat16 where the hardware has native bf16 matmuls; packed
rows), in bench/.venv-user when `bash bench/user_env.sh` made it: bertjax installed as a user
installs it, without torch (see --ours_python). PyTorch (bench/torch_ref.py) runs three times:
float32 with dynamic padding on shuffled batches, float32 with Trainer's `group_by_length`, and
bf16 autocast with `group_by_length`. Ours also reports where its time goes (each phase timed
in the process by wrapping the function that does it; compile times from jax.monitoring).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from epoch import make_config, token_counts, write_subset

from bertjax.models.precision import compute_dtype

# phase -> (module, function) timed in the child; the loop's remainder is the train steps.
PHASES = {
    "setup: the four rows below, overlapped (build)": ("bertjax.train.groups", "build"),
    "data files and labels (data.labelled)": ("bertjax.data", "labelled"),
    "tokenizer (load_encoder; cold: imports transformers)": ("bertjax.train.build", "load_encoder"),
    "tokenization (data.tokenize)": ("bertjax.data", "tokenize"),
    "(on a second thread, overlapping the two above) weights (from_pretrained)": (
        "bertjax.train.build",
        "from_pretrained",
    ),
    "state init / resume check": ("bertjax.train.plan", "initial_state"),
    "train step compile (+ memory analysis)": ("bertjax.train.plan", "compiled_steps"),
    "(on a second thread, overlapping the above) eval step compiled ahead": (
        "bertjax.train.plan",
        "ahead_evaluator",
    ),
    "event writer: tensorboardX import (summary_writer_class)": (
        "bertjax.runs.events",
        "summary_writer_class",
    ),
    "evaluation passes": ("bertjax.train.evaluate", "predict"),
    "checkpoint writes (last)": ("bertjax.runs", "save_last"),
    "checkpoint writes (best)": ("bertjax.runs", "save_best"),
    "restore best": ("bertjax.runs", "restore_best"),
    "curves.png": ("bertjax.train.finish", "plot_curves"),
}


def child(args) -> None:
    """One instrumented run in this process; prints its timings as JSON (last line)."""
    started = time.perf_counter()
    import collections
    import importlib
    import importlib.util

    import jax

    from bertjax.train import loop as training
    from bertjax.train import xla_cache

    imports_s = time.perf_counter() - started
    xla_cache.enable()  # BERTJAX_XLA_CACHE, set by the parent
    seconds, calls = collections.Counter(), collections.Counter()

    def timed(name, fn):
        def wrapper(*a, **kw):
            start = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                seconds[name] += time.perf_counter() - start
                calls[name] += 1

        return wrapper

    for name, (module, fn) in PHASES.items():
        mod = importlib.import_module(module)
        setattr(mod, fn, timed(name, getattr(mod, fn)))
    training._loop = timed("loop", training._loop)
    compile_s, compiles = collections.Counter(), collections.Counter()

    def listen(event, secs, fun_name="", **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compile_s[fun_name.removeprefix("jit(").removesuffix(")")] += secs
            compiles[fun_name.removeprefix("jit(").removesuffix(")")] += 1

    jax.monitoring.register_event_duration_secs_listener(listen)
    config = make_config(args, common.minilm_path(), Path(args.data), Path(args.workdir))
    summary = training.train(config)
    print(
        json.dumps(
            dict(
                imports_s=imports_s,
                in_process_s=time.perf_counter() - started,
                phases={k: [seconds[k], calls[k]] for k in (*PHASES, "loop")},
                backend_compile_s=dict(compile_s),
                recompiled={name: n for name, n in compiles.items() if n > 1},
                epoch_s=summary["seconds_per_epoch"],
                accuracy=summary["validation"]["accuracy"],
                trainable=summary["trainable_params"],
                torch_installed=importlib.util.find_spec("torch") is not None,
                torch_imported="torch" in sys.modules,
            )
        )
    )


def ours(args, data_dir: Path, workdir: Path, cache: Path) -> dict:
    cmd = [
        args.ours_python,
        __file__,
        "--child",
        "--data",
        str(data_dir),
        "--workdir",
        str(workdir),
    ]
    keys = ("train_examples", "method", "lr", "batch", "dtype")
    cmd += [f"--{k}={getattr(args, k)}" for k in keys]
    # cold: both caches empty (compiled programs; the tokenizer read back without transformers)
    env = {
        **os.environ,
        "BERTJAX_XLA_CACHE": str(cache),
        "BERTJAX_TOKENIZER_CACHE": str(cache.parent / "tokenizers"),
    }
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - start
    result["python"] = args.ours_python
    return result


def torch_run(**flags) -> dict:
    start = time.perf_counter()
    result = common.run_torch("epoch", **flags)
    result["wall_s"] = time.perf_counter() - start
    return result


def where(run: dict) -> str:
    """Which python ran ours, and whether torch was installed there and imported."""
    yes = {True: "yes", False: "no"}
    return (
        f"Ours ran in {run['python']} (torch installed: {yes[run['torch_installed']]}, "
        f"imported: {yes[run['torch_imported']]})"
    )


def _recompiled(run: dict) -> str:
    """Each program name the backend compiled more than once in the run, as "name ×n"; an
    eager op (broadcast_in_dim, …) compiles once per shape, so only train_step or eval_step
    here would be a recompile; "none" when there is none."""
    return ", ".join(f"{k} ×{n}" for k, n in run["recompiled"].items()) or "none"


def breakdown(cold: dict, warm: dict) -> str:
    rows = [["Python start + imports (process wall − in-process + imports)"]]
    for run in (cold, warm):
        rows[0].append(f"{run['wall_s'] - run['in_process_s'] + run['imports_s']:.1f}")
    for name in PHASES:
        rows.append([name, *(f"{r['phases'][name][0]:.1f}" for r in (cold, warm))])
    for run in (cold, warm):
        loop = run["phases"]["loop"][0]
        inner = (
            "state init",
            "train step compile",
            "event writer",
            "evaluation",
            "checkpoint",
            "restore",
            "curves",
        )
        loop -= sum(s for n, (s, _) in run["phases"].items() if n.startswith(inner))
        run["steps_s"] = loop
    rows.append(["train steps, logs, events (rest of the loop)"])
    rows[-1] += [f"{r['steps_s']:.1f}" for r in (cold, warm)]
    outside = ("setup", "loop")
    rows.append(["rest (config, run folder, hashes, teacher check, summary)"])
    for r in (cold, warm):
        known = sum(s for n, (s, _) in r["phases"].items() if n.startswith(outside))
        rows[-1].append(f"{r['in_process_s'] - r['imports_s'] - known:.1f}")
    rows.append(["backend compiles of all programs (inside the rows above)"])
    rows[-1] += [f"{sum(r['backend_compile_s'].values()):.1f}" for r in (cold, warm)]
    rows.append(["names compiled more than once", *(_recompiled(r) for r in (cold, warm))])
    rows.append(["whole process", *(f"**{r['wall_s']:.1f}**" for r in (cold, warm))])
    return common.table(["phase (s)", "cold cache", "warm cache"], rows)


TORCH_SIDES = (
    "PyTorch f32 dynamic padding",
    "PyTorch f32 group_by_length",
    "PyTorch bf16 autocast group_by_length",
)


def side_by_side(cold: dict, warm: dict, torch_sides: tuple) -> str:
    """The table of ours (cold, warm) beside each PyTorch run, with each PyTorch run's wall
    time over ours (above 1: ours is faster)."""
    sides = (cold, warm, *torch_sides)

    def per_real(x):
        return f"{x['computed_tokens'] / x['real_tokens']:.2f}"

    rows = [
        ["whole process s", *(f"{x['wall_s']:.1f}" for x in sides)],
        ["epoch s (train loop)", *(f"{x['epoch_s']:.1f}" for x in sides)],
        [
            "torch s / ours s, cold",
            "",
            "",
            *(f"{x['wall_s'] / cold['wall_s']:.2f}x" for x in torch_sides),
        ],
        [
            "torch s / ours s, warm",
            "",
            "",
            *(f"{x['wall_s'] / warm['wall_s']:.2f}x" for x in torch_sides),
        ],
        ["dev accuracy", *(f"{x['accuracy']:.4f}" for x in sides)],
        ["computed / real tokens", per_real(cold), "", *(per_real(x) for x in torch_sides)],
        ["trainable params", *(f"{x['trainable']:,}" for x in sides)],
    ]
    return common.table(["", "ours cold", "ours warm", *TORCH_SIDES], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_examples", type=int, default=4000)
    parser.add_argument("--method", default="lora", choices=list(common.METHODS))
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--dtype", default="auto", help="ours: config.dtype (default: auto, our default)"
    )
    parser.add_argument(
        "--ours_only", action="store_true", help="ours cold and warm with the breakdown only"
    )
    parser.add_argument(
        "--ours_python",
        help="the python that runs ours (default: bench/.venv-user's, bertjax installed as "
        "`make demo` does, without torch, when `bash bench/user_env.sh` made it; else this one)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    common.add_output_flags(parser)
    args = parser.parse_args()
    args.max_length, args.packing = 128, 1
    if args.child:
        return child(args)
    args.ours_python = common.ours_python(args.ours_python)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, cache = Path(tmp, "data"), Path(tmp, "xla")
        data_dir.mkdir()
        write_subset(data_dir, args.train_examples, seed=0)
        cold = ours(args, data_dir, Path(tmp, "cold"), cache)
        warm = ours(args, data_dir, Path(tmp, "warm"), cache)
        if args.ours_only:
            print(f"ours cold {cold['wall_s']:.1f} s, warm {warm['wall_s']:.1f} s; {where(cold)}")
            return print(breakdown(cold, warm))
        computed, real = token_counts(
            make_config(args, common.minilm_path(), data_dir, Path(tmp, "x"))
        )
        flags = dict(
            model=common.minilm_path(),
            data=data_dir,
            method=args.method,
            batch=args.batch,
            lr=args.lr,
            warmup_ratio=0.1,
            max_length=128,
            eval_batch=128,
            lora_dropout=0.1,
            threads=args.torch_threads,
        )
        dynamic = torch_run(**flags)
        grouped = torch_run(**flags, group_by_length=1)
        autocast = torch_run(**flags, group_by_length=1, dtype="bfloat16")
    cold["computed_tokens"], cold["real_tokens"] = computed, real
    text = (
        f"SST-2 {args.train_examples} train examples, 1 epoch, method {args.method}, MiniLM-L6, "
        f"batch {args.batch}, lr {args.lr}; ours at the default settings (packed rows) in "
        f"{args.dtype} ({compute_dtype(args.dtype)} here). Whole process, one run each, one "
        f"after the other. {where(cold)}.\n\n"
        f"{side_by_side(cold, warm, (dynamic, grouped, autocast))}\n\n"
        f"Where our time goes:\n\n{breakdown(cold, warm)}"
    )
    common.report(f"Whole run: ours vs PyTorch ({args.method})", text, dynamic, args.markdown)


if __name__ == "__main__":
    main()
