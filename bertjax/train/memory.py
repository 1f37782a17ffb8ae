"""Training memory: an analytic estimate per method beside XLA's analysis of the real train step.

    python -m bertjax.memory --config configs/sst2_lora.py [--batch_size 32 --max_length 128] \
        [--methods full,bitfit,lora,adapter] [--config.model=... --config.dtype=bfloat16] \
        [--remat True | dots_saveable | … | False]

prints one markdown row each for full fine-tuning, BitFit, LoRA (config.peft.lora) and adapters
(config.peft.adapter), for config.model at config.dtype. Nothing is loaded or run: the model is
built from its config.json with abstract parameters and the train step is only compiled. The
"remat" columns compile the step again with activation checkpointing (config.train.remat when
set, else True; --remat False leaves them out). XLA's default CPU scheduler optimizes for
concurrency and ignores memory, so on CPU remat saves almost nothing; run with
XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false (CPU_MEMORY_SCHEDULER) for a
memory-aware CPU schedule. MiniLM-L6, batch 32 x 512, float32, temp MiB without -> with remat:
LoRA 9,717 -> 9,427 (default) and 6,690 -> 3,633 (memory-aware); full 9,669 -> 9,548 and
7,261 -> 7,812.

The estimate, in bytes (B batch, L length, H hidden, A heads, F FFN size, N layers,
p = 4 for float32 / 2 for bfloat16 computation, dropout masks 1 byte). Below, for float32;
with bfloat16 only the operands of matmuls are kept at p = 2 (Q, K, V, the dropped attention
probabilities, the Dense inputs), the LayerNorm and GELU inputs stay float32 (mixed
precision, bertjax/models/precision.py; activation_bytes gives the exact split):

    parameters   16·trainable + 4·frozen     (float32 weight, gradient, Adam m and v;
                                              frozen: the weight alone)
    activations  N · per_layer (+ embeddings) what the backward pass keeps from the forward:

    per_layer = (3p + 2p + 2)·BLH + p·BLF + (4 + 1 + p)·BAL²         always
              + (3p)·BLH + p·BLF                                     if weight matrices train

    always: Q, K, V (3p·BLH); the softmax output, float32 here (4·BAL²), the attention dropout
    mask (BAL²) and the dropped probabilities that multiply V (p·BAL²); the two dropout masks
    after the output projections (2·BLH); the two LayerNorm inputs (2p·BLH); the GELU input
    (p·BLF). Weight gradients (dW = inputᵀ·dY) also need each Dense input: the layer input x
    for Q/K/V, the attention context, the FFN input (p·BLH each) and the GELU output (p·BLF).
    Full fine-tuning, float32: 34·BLH + 8·BLF + 9·BAL² per layer (F = 4H: 66·BLH + 9·BAL²);
    bfloat16: 22·BLH + 6·BLF + 7·BAL².
    The last layer computes one query position per example (the train step's
    `first_tokens_only`): only its K, V and input span BL there, its other terms B.

Backpropagation reaches every layer above the lowest trainable parameter, so all N layers keep
their activations for full, BitFit, LoRA and adapters (their lowest trainable parameters sit in
layer 0 or the embeddings); only head-only training keeps none. BitFit, LoRA and adapters
freeze the weight matrices, so the weight-gradient inputs are not kept; LoRA adds, per layer,
the input x (p·BLH) and per wrapped Dense its dropout mask and dropped input ((1 + p)·BLH) and
x·a (p·BL·rank); an adapter adds its input (p·BLH) and its bottleneck before and after the
activation (2p·BL·H/reduction_factor). The embeddings keep their LayerNorm input and dropout
mask ((p + 1)·BLH) when a parameter there trains (full, BitFit's biases, adapters' LayerNorms).

This is the count of a minimal implementation (the per-layer analysis of Korthikanti et al.
2022, "Reducing activation recomputation in large transformer models", generalised to any p
and F). XLA holds more: transients of the backward pass (gradients of the attention maps),
layout copies, residuals JAX's autodiff picks (two F-sized ones per GELU instead of its input)
and layout copies. Measured on CPU (jax 0.10.2), MiniLM-L6 (H 384, A 12, F 1536, N 6), batch
32 x 128, float32, the last layer computing the first tokens only: estimate/XLA 0.71 full,
0.61 BitFit, 0.64 LoRA, 0.63 adapters. Read the estimate as a lower bound and XLA's total as
the figure to plan with.

Families: BERT, RoBERTa (XLM-R, CamemBERT), DistilBERT and ELECTRA have this layer layout and
get the estimate. Where they differ it counts a little high: DistilBERT has no dropout after the
attention's output projection (BLH bytes per layer fewer); ELECTRA's embeddings are E wide
(E ≤ H) before `embeddings_project`. Other families are refused with one line (XLA's analysis
of their train step is still what `bertjax.train.steps.compiled_memory` gives).
"""

import jax
import jax.numpy as jnp
from flax.traverse_util import flatten_dict

import peft
from bertjax import cli
from bertjax.data.batching import abstract_batch
from bertjax.hub.pretrained import read_hf_config, resolve
from bertjax.models.config import ModelConfig
from bertjax.models.families import (
    FAMILIES,
    build,
    family_of,
    head_modules,
    model_config_from_hf,
    norm_modules,
)
from bertjax.models.layers import REMAT_POLICIES
from bertjax.models.precision import compute_dtype, describe_dtype
from bertjax.train.build import peft_config, remat_of
from bertjax.train.optim import make_optimizer
from bertjax.train.steps import compiled_memory, init_state, make_train_step, stacked

METHODS = ("full", "bitfit", "lora", "adapter")
CPU_MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
MIB = 2**20


QUERY_LAYERS = ("query", "q_lin")  # the families with Family.first_tokens


def param_bytes(trainable: int, frozen: int) -> int:
    """float32 weight, gradient and Adam's two moments per trainable parameter (16 bytes);
    the weight alone (4 bytes) per frozen one."""
    return 16 * trainable + 4 * frozen


def activation_bytes(
    B: int,
    L: int,
    H: int,
    A: int,
    F: int,
    N: int,
    dtype_bytes: int = 4,
    *,
    weight_grads: bool = True,
    embeddings: bool = True,
    first_tokens: bool = False,
) -> int:
    """Bytes the backward pass keeps from the forward pass of N BERT layers in training.

    Mixed precision (bertjax/models/precision.py) keeps the matmul operands a backward dot
    reads in the compute dtype, p = dtype_bytes (4 float32, 2 bfloat16), and every other
    activation in float32 (4 bytes); dropout masks take 1 byte. Per layer:
      (3p + 10)·BLH + 4·BLF + (5 + p)·BAL²  Q, K, V (p); 2 LayerNorm inputs, GELU input,
                                            softmax output (float32); 2 hidden dropout
                                            masks, the attention dropout mask; the dropped
                                            probabilities (p, the operand of ·V)
      + 3p·BLH + p·BLF                      with weight_grads: inputs of the Dense layers
                                            (x, context, FFN input; GELU output)
    embeddings adds the embedding LayerNorm input and dropout mask, 5·BLH.
    Full fine-tuning, float32: N·(34·BLH + 8·BLF + 9·BAL²) + 5·BLH; bfloat16:
    N·(22·BLH + 6·BLF + 7·BAL²) + 5·BLH. first_tokens: the last layer computes one query
    position per example (`first_tokens_only`, what the train step asks of the families with
    Family.first_tokens): there K, V and the layer input span L tokens, the rest 1.
    """
    layers = (N - 1) * _layer_bytes(B, L, L, H, A, F, dtype_bytes, weight_grads)
    last_queries = 1 if first_tokens else L
    layers += _layer_bytes(B, last_queries, L, H, A, F, dtype_bytes, weight_grads)
    return layers + (4 + 1) * B * L * H * embeddings


def _layer_bytes(B, queries, L, H, A, F, p, weight_grads: bool) -> int:
    """One layer's kept bytes (activation_bytes) where `queries` of its L positions per
    example compute outputs: K, V and the layer input span L, everything else `queries`."""
    rows, tokens = B * queries, B * L
    kept = 2 * p * tokens * H + (p + 2 * 4 + 2) * rows * H + 4 * rows * F
    kept += (4 + 1 + p) * B * A * queries * L
    if weight_grads:
        kept += p * tokens * H + 2 * p * rows * H + p * rows * F
    return kept


def lora_activation_bytes(
    B: int,
    L: int,
    H: int,
    N: int,
    dtype_bytes: int,
    targets: int,
    rank: int,
    dropout: float,
    query_targets: int = 0,
) -> int:
    """LoRA's extra kept tensors over N layers with `targets` wrapped Dense layers each: the
    layer input x once (p·BLH), per target the dropout mask and dropped input ((1 + p)·BLH,
    when dropout > 0) and x·a (p·BL·rank). Assumes the targets read x (query/key/value).
    query_targets of them are queries of a last layer computing one position per example
    (first_tokens): there they keep B rows instead of BL."""
    p = dtype_bytes

    def per_target(tokens: int) -> int:
        return (1 + p) * tokens * H * (dropout > 0) + p * tokens * rank

    if not targets:
        return 0
    layer = p * B * L * H + targets * per_target(B * L)
    last = layer - query_targets * (per_target(B * L) - per_target(B))
    return (N - 1) * layer + last


def adapter_activation_bytes(
    B: int,
    L: int,
    H: int,
    N: int,
    dtype_bytes: int,
    adapters: int,
    bottleneck: int,
    first_tokens: bool = False,
) -> int:
    """Adapters' extra kept tensors: per adapter its input (p·BLH, the down projection's
    operand) and the bottleneck before the activation (float32, 4·BL·bottleneck) and after it
    (p·BL·bottleneck, the up projection's operand); `adapters` per layer (Houlsby 2). With
    first_tokens the last layer's adapters see one position per example."""
    p = dtype_bytes

    def layer(tokens: int) -> int:
        return adapters * (p * tokens * H + (4 + p) * tokens * bottleneck)

    return (N - 1) * layer(B * L) + layer(B if first_tokens else B * L)


def estimate(
    trainable: int,
    frozen: int,
    B: int,
    L: int,
    H: int,
    A: int,
    F: int,
    N: int,
    dtype_bytes: int = 4,
    method: str = "full",
    peft_cfg=None,
    lora_targets: int | None = None,
    first_tokens: bool = False,
    query_targets: int = 0,
) -> dict[str, int]:
    """{"params", "activations", "total"} in bytes for one train step of `method`
    ("full" | "head" | "bitfit" | "lora" | "adapter"; peft_cfg the LoraConfig or
    AdapterConfig of the last two). lora_targets: LoRA-wrapped Dense layers per encoder
    layer (default: one per suffix target), query_targets of them query projections.
    first_tokens: the last layer computes the first tokens only (Family.first_tokens). See
    activation_bytes for the formula."""
    dims = (B, L, H, A, F, N, dtype_bytes)
    if method == "full":
        acts = activation_bytes(*dims, first_tokens=first_tokens)
    elif method == "head":
        acts = 0  # backpropagation never enters the encoder
    elif method == "bitfit":
        acts = activation_bytes(*dims, weight_grads=False, first_tokens=first_tokens)
    elif method == "lora":
        if lora_targets is None:
            lora_targets = 1 if isinstance(peft_cfg.targets, str) else len(peft_cfg.targets)
        acts = activation_bytes(
            *dims, weight_grads=False, embeddings=False, first_tokens=first_tokens
        )
        queries = query_targets if first_tokens else 0
        acts += lora_activation_bytes(
            B, L, H, N, dtype_bytes, lora_targets, peft_cfg.rank, peft_cfg.dropout, queries
        )
    elif method == "adapter":
        acts = activation_bytes(*dims, weight_grads=False, first_tokens=first_tokens)
        adapters = sum(peft_cfg.placed_after(s) for s in ("attention", "ffn"))
        bottleneck = peft_cfg.bottleneck(H)
        acts += adapter_activation_bytes(
            B, L, H, N, dtype_bytes, adapters, bottleneck, first_tokens
        )
    else:
        raise ValueError(f"method {method!r} unknown; use full, head, bitfit, lora, adapter")
    weights = param_bytes(trainable, frozen)
    return dict(params=weights, activations=acts, total=weights + acts)


def compiled(model, params, mask, optimizer, batch_size: int, max_length: int) -> dict | None:
    """XLA's memory analysis of bertjax.train.steps.make_train_step for this batch shape, in bytes
    (None where the backend gives none); see bertjax.train.steps.compiled_memory.

    params may be abstract (jax.ShapeDtypeStruct leaves): the step is lowered and compiled
    for the default backend, never run.
    """
    state = jax.eval_shape(lambda p: init_state(p, mask, optimizer), params)
    batch = stacked(abstract_batch(batch_size, max_length, model.num_labels), 1)  # one run
    keys = jax.random.key(0)[None]
    return compiled_memory(make_train_step(model, optimizer), state, batch, keys)


def method_peft(config, method: str):
    """The peft module config (or None) that `config` gives `method`."""
    config = config.copy_and_resolve_references()
    config.peft.method = method
    return peft_config(config)


def abstract_model(model_config: ModelConfig, num_labels: int, peft_cfg, dtype):
    """(model, params) with jax.ShapeDtypeStruct leaves: the tree from_pretrained returns."""
    model = build(model_config, num_labels, peft_cfg, dtype)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    params = params["params"]
    kind = {peft.LoraConfig: "lora", peft.AdapterConfig: "adapter"}.get(type(peft_cfg))
    if kind and not any(kind in path for path in flatten_dict(params)):
        raise ValueError(f"{peft_cfg} adds no {kind} parameters to this model")
    return model, params


def measure(
    config, batch_size: int, max_length: int, methods=METHODS, remat: bool | str = False
) -> list[dict]:
    """One row per method: parameter counts, the estimate and XLA's numbers (bytes), and
    with `remat` (True or a policy name) XLA's numbers with activation checkpointing."""
    model_config = model_config_from_hf(read_hf_config(resolve(config.model)))
    if not family_of(model_config.model_type).memory_estimate:
        covered = [name for name, family in FAMILIES.items() if family.memory_estimate]
        raise ValueError(
            f"{config.model}: no memory estimate for model_type {model_config.model_type!r}; "
            f"it covers {', '.join(covered)}"
        )
    dtype = compute_dtype(config.dtype)  # "auto": what a run here would compute in
    dtype_bytes = DTYPE_BYTES[dtype]
    num_labels = config.num_labels or 2
    optimizer = make_optimizer(config.optim, 1000)
    c = model_config
    dims = (
        batch_size,
        max_length,
        c.hidden_size,
        c.num_attention_heads,
        c.intermediate_size,
        c.num_hidden_layers,
    )
    rows = []
    for method in methods:
        peft_cfg = method_peft(config, method)
        model, params = abstract_model(c, num_labels, peft_cfg, jnp.dtype(dtype))
        head = head_modules(model)
        mask = peft.trainable_mask(params, peft_cfg or method, head=head, norms=norm_modules(model))
        trainable = peft.count(params, mask)
        frozen = peft.count(params) - trainable
        paths = flatten_dict(params)
        lora_a = [p for p in paths if p[-2:] == ("lora", "a") and p[0] not in head]
        targets = len(lora_a) // c.num_hidden_layers
        queries = sum(p[-3] in QUERY_LAYERS for p in lora_a) // c.num_hidden_layers
        first = family_of(c.model_type).first_tokens
        est = estimate(
            trainable, frozen, *dims, dtype_bytes, method, peft_cfg, targets, first, queries
        )
        xla = compiled(model, params, mask, optimizer, batch_size, max_length)
        row = dict(method=method, trainable=trainable, frozen=frozen, estimate=est, xla=xla)
        if remat:
            rematted = build(c, num_labels, peft_cfg, jnp.dtype(dtype), remat)
            row["xla_remat"] = compiled(rematted, params, mask, optimizer, batch_size, max_length)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: counts, estimate (params + activations), XLA (args, temp, total), with
    remat (temp, total) when measured, ratio estimate/XLA (without remat)."""
    with_remat = any("xla_remat" in r for r in rows)
    remat_head = "| remat temp MiB | remat total MiB " if with_remat else ""
    lines = [
        "| method | trainable | frozen | est. params MiB | est. activations MiB "
        f"| estimate MiB | XLA args MiB | XLA temp MiB | XLA total MiB {remat_head}"
        "| estimate/XLA |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * (1 + 2 * with_remat),
    ]
    for r in rows:
        est, xla, rematted = r["estimate"], r["xla"], r.get("xla_remat")
        if xla:
            ratio = f"{est['total'] / xla['total']:.2f}" if xla["total"] else "–"
            xla_cells = [f"{xla[k] / MIB:.1f}" for k in ("argument", "temp", "total")]
            if with_remat:
                xla_cells += [
                    f"{rematted[k] / MIB:.1f}" if rematted else "–" for k in ("temp", "total")
                ]
            xla_cells.append(ratio)
        else:
            xla_cells = ["–"] * (4 + 2 * with_remat)
        cells = [r["method"], f"{r['trainable']:,}", f"{r['frozen']:,}"]
        cells += [f"{est[k] / MIB:.1f}" for k in ("params", "activations", "total")]
        lines.append("| " + " | ".join(cells + xla_cells) + " |")
    return "\n".join(lines)


def command() -> None:
    """python -m bertjax.memory: flags as in this module's docstring."""
    from absl import app, flags
    from ml_collections import config_flags

    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Path to a configs/*.py file.", lock_config=True
    )
    batch_flag = flags.DEFINE_integer("batch_size", None, "Default: config.train.batch_size.")
    length_flag = flags.DEFINE_integer("max_length", None, "Default: config.data.max_length.")
    methods_flag = flags.DEFINE_list(
        "methods", list(METHODS), "Any of full,head,bitfit,lora,adapter."
    )
    remat_flag = flags.DEFINE_string(
        "remat", None, "remat columns: True, a policy name, False (default: train.remat or True)."
    )
    flags.mark_flags_as_required(["config"])

    def main(argv):
        del argv
        cli.setup_logging()
        config = config_flag.value
        batch_size = batch_flag.value or config.train.batch_size
        max_length = length_flag.value or config.data.max_length
        remat = {"True": True, "False": False}.get(remat_flag.value, remat_flag.value)
        if remat is None:
            remat = remat_of(config) or True
        if isinstance(remat, str) and remat not in REMAT_POLICIES:
            raise app.UsageError(f"--remat {remat} unknown; use True, False or {REMAT_POLICIES}")
        rows = measure(config, batch_size, max_length, methods_flag.value, remat)
        backend = jax.devices()[0].platform
        print(
            f"{config.model}: batch {batch_size} x length {max_length}, "
            f"{describe_dtype(config.dtype)}, "
            f"XLA on {backend}"
        )
        print(table(rows))

    app.run(main)


if __name__ == "__main__":
    command()
