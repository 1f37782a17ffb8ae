"""Train-step throughput, ours vs PyTorch: full, BitFit, LoRA, Houlsby adapters at fixed shapes.

    bash bench/reference_env.sh    # once: bench/.venv-torch (torch, transformers, HF peft)
    python bench/step.py [--batch 32 --seq 128 --repeats 5 --markdown bench/results.md]

MiniLM-L6 real weights, float32, AdamW (lr 1e-4, decay 0.01, clip 1.0), dropout on; the same
random batch on both sides. Ours: bertjax's jitted train step (only the trainable partition is
differentiated). PyTorch: transformers BertForSequenceClassification, loss.backward,
optimizer.step over the trainable parameters (bench/torch_ref.py). Warm-up excluded; median of
--repeats. GFLOP/s of both sides use one count per method, XLA's cost analysis of our step; the
analytic count is printed beside it. % of peak: of a float32 2048² matmul chain timed in the
same process (JAX for ours, torch for PyTorch).
"""

import argparse

import common
import jax

import bertjax
import peft
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import init_state, make_train_step


def analytic_flops(method: str, cfg, batch: int, seq: int) -> float:
    """Matmul FLOPs of one train step (elementwise ops, embeddings lookups and Adam not counted).

    Forward: 2·tokens·(encoder Dense weights) + 4·seq·hidden per token per layer (QKᵀ, PV) + the
    LoRA/adapter factors. Full: backward = 2× forward. PEFT: input gradients everywhere (1× the
    Dense forward, 2× attention's, whose operands are both activations) but weight gradients
    only of the LoRA/adapter factors (BitFit: none; biases and the head cost ~nothing).
    """
    tokens, h, layers = batch * seq, cfg.hidden_size, cfg.num_hidden_layers
    dense = 2 * tokens * layers * (4 * h * h + 2 * h * cfg.intermediate_size)
    attention = 2 * tokens * layers * 2 * seq * h
    extra_weights = 0  # per layer: LoRA a, b of query and value; two adapters' down, up
    if method == "lora":
        extra_weights = 2 * 2 * h * common.METHODS["lora"].rank
    elif method == "adapter":
        extra_weights = 2 * 2 * h * common.METHODS["adapter"].bottleneck(h)
    extra = 2 * tokens * layers * extra_weights
    if method == "full":
        return 3 * (dense + attention)
    return 2 * dense + 3 * attention + 3 * extra


def ours(model_dir: str, method: str, batch_size: int, seq_len: int, repeats: int) -> dict:
    config = common.METHODS[method]
    model, params = bertjax.from_pretrained(model_dir, num_labels=2, peft=config)
    mask = peft.trainable_mask(params, config or method)
    optimizer = make_optimizer(common.optim_config(), 1000)
    state = init_state(params, mask, optimizer)
    batch, key = common.one_run(common.random_batch(batch_size, seq_len), jax.random.key(0))
    batch = jax.device_put(batch)
    step = make_train_step(model, optimizer).lower(state, batch, key).compile()
    cost = step.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # a list in older JAX versions

    def run():
        nonlocal state
        state, metrics = step(state, batch, key)
        jax.block_until_ready((state, metrics))

    run()  # warm-up
    return dict(
        step_s=common.median_time(run, repeats),
        trainable=peft.count(params, mask),
        xla_flops=cost["flops"],
        analytic_flops=analytic_flops(method, model.config, batch_size, seq_len),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default=",".join(common.METHODS), help="comma-separated")
    common.add_output_flags(parser)
    args = parser.parse_args()
    model_dir = common.minilm_path()
    methods = args.methods.split(",")
    peak = common.jax_matmul_peak()
    rows, torch_info = [], {}
    for i, method in enumerate(methods):
        a = ours(model_dir, method, args.batch, args.seq, args.repeats)
        flags = dict(method=method, batch=args.batch, seq=args.seq, repeats=args.repeats)
        flags.update(threads=args.torch_threads, peak=int(i == 0))
        b = common.run_torch("step", model=model_dir, **flags)
        torch_info = torch_info or b
        flops, ex, tok = a["xla_flops"], args.batch, args.batch * args.seq
        rows.append(
            [
                method,
                f"{a['trainable']:,} / {b['trainable']:,}",
                f"{a['step_s']:.3f} / {b['step_s']:.3f}",
                f"**{b['step_s'] / a['step_s']:.2f}x**",
                f"{ex / a['step_s']:.1f} / {ex / b['step_s']:.1f}",
                f"{tok / a['step_s']:,.0f} / {tok / b['step_s']:,.0f}",
                f"{flops / 1e9:.0f} ({a['analytic_flops'] / 1e9:.0f})",
                f"{flops / a['step_s'] / 1e9:.1f} / {flops / b['step_s'] / 1e9:.1f}",
                f"{100 * flops / a['step_s'] / 1e9 / peak:.0f} / "
                f"{100 * flops / b['step_s'] / 1e9 / torch_info['peak_gflops']:.0f}",
            ]
        )
    headers = [
        "method",
        "trainable",
        "s/step",
        "speedup",
        "examples/s",
        "tokens/s",
        "GFLOP/step XLA (analytic)",
        "GFLOP/s",
        "% of peak",
    ]
    text = (
        f"MiniLM-L6, batch {args.batch} x seq {args.seq}, float32, AdamW, train mode, "
        f"median of {args.repeats}; cells are ours / PyTorch, speedup = torch s / ours s. "
        f"Matmul peak (float32 2048² chain): JAX {peak:.0f} GFLOP/s, torch "
        f"{torch_info['peak_gflops']:.0f} GFLOP/s; torch {torch_info['threads']} threads, "
        f"attention `{torch_info['attn']}`.\n\n" + common.table(headers, rows)
    )
    common.report("Train step: ours vs PyTorch", text, torch_info, args.markdown)


if __name__ == "__main__":
    main()
