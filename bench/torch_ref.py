"""PyTorch reference of the benchmarks; runs in bench/.venv-torch, prints JSON on its last line.

    bench/.venv-torch/bin/python bench/torch_ref.py step --model DIR --method full
    bench/.venv-torch/bin/python bench/torch_ref.py epoch --model DIR --data DIR --method lora
    bench/.venv-torch/bin/python bench/torch_ref.py eval --model DIR --data DIR

Called by bench/step.py, bench/epoch.py and bench/eval.py (create the venv with
bench/reference_env.sh). transformers BertForSequenceClassification in train mode (dropout on),
AdamW over the trainable parameters only (no decay on biases/LayerNorm), global-norm clipping 1.0,
linear schedule; BitFit by requires_grad, LoRA with Hugging Face peft, Houlsby adapters below.
--dtype bfloat16: torch.autocast("cpu", torch.bfloat16) around forward+loss and evaluation
(weights, gradients and AdamW stay float32), the PyTorch counterpart of our dtype=bfloat16.
torch.set_num_threads(os.cpu_count()), as many threads as XLA's CPU pool (--threads overrides).
"""

import argparse
import contextlib
import csv
import json
import os
import statistics
import sys
import time
import warnings
from collections import OrderedDict

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class Adapter(nn.Module):
    """x + up(gelu(down(x))), as peft/adapter.py: down ~ N(0, 1e-2), up = 0 (identity at start)."""

    def __init__(self, hidden: int, bottleneck: int):
        super().__init__()
        self.down, self.up = nn.Linear(hidden, bottleneck), nn.Linear(bottleneck, hidden)
        self.act = nn.GELU()
        nn.init.normal_(self.down.weight, std=1e-2)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x):
        return x + self.up(self.act(self.down(x)))


def add_houlsby_adapters(model, reduction: int) -> None:
    """dense → dropout → adapter → LayerNorm(· + residual) in BertSelfOutput and BertOutput,
    the placement of bertjax's ResidualOutput; wrapping `dropout` keeps transformers' forward."""
    hidden = model.config.hidden_size
    for layer in model.bert.encoder.layer:
        for out in (layer.attention.output, layer.output):
            adapter = Adapter(hidden, hidden // reduction)
            out.dropout = nn.Sequential(OrderedDict(dropout=out.dropout, adapter=adapter))


def build_model(path: str, method: str, lora_dropout: float = 0.0):
    """(model, trainable named parameters) for full | bitfit | lora | adapter (bertjax's masks)."""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(path, num_labels=2)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=lora_dropout,
            target_modules=["query", "value"],
            modules_to_save=["classifier"],
        )
        model = get_peft_model(model, config)
    elif method == "adapter":
        add_houlsby_adapters(model, 16)
    rules = {
        "full": lambda name: True,
        "bitfit": lambda name: name.endswith("bias") or name.startswith("classifier"),
        "adapter": lambda name: (
            ".adapter." in name or "LayerNorm" in name or name.startswith("classifier")
        ),
    }
    if method in rules:
        for name, p in model.named_parameters():
            p.requires_grad_(rules[method](name))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    model.train()
    return model, trainable


def make_optimizer(trainable, lr, weight_decay, warmup_steps, total_steps):
    """AdamW (decay off for biases and LayerNorm, as bertjax.train.optim.decay_mask) + linear
    schedule."""
    no_decay = [p for n, p in trainable if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in trainable if not (n.endswith("bias") or "LayerNorm" in n)]
    groups = [
        dict(params=decay, weight_decay=weight_decay),
        dict(params=no_decay, weight_decay=0.0),
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr, eps=1e-8)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    return optimizer, schedule


def autocast(dtype: str, device: str = "cpu"):
    """torch.autocast to bfloat16 (matmuls in bf16, softmax/LayerNorm/loss kept in float32 by
    autocast's op lists) around forward+loss and evaluation; "float32": no-op."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16)


def train_step(model, params, optimizer, schedule, batch, dtype="float32", device="cpu"):
    with autocast(dtype, device):
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def matmul_peak(size=2048, chain=8, repeats=3) -> float:
    """GFLOP/s of a chain of float32 [size, size] matmuls, as common.jax_matmul_peak."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((size, size), np.float32))
    w = torch.from_numpy(rng.standard_normal((size, size), np.float32) / np.float32(np.sqrt(size)))
    times = []
    for _ in range(repeats + 1):  # the first is warm-up
        start = time.perf_counter()
        y = x
        for _ in range(chain):
            y = y @ w
        times.append(time.perf_counter() - start)
    return chain * 2 * size**3 / min(times[1:]) / 1e9


def step_bench(args) -> dict:
    model, trainable = build_model(args.model, args.method)
    params = [p for _, p in trainable]
    optimizer, schedule = make_optimizer(trainable, 1e-4, 0.01, 0, 1000)
    rng = np.random.default_rng(0)  # the same batch as bench/step.py
    ids = torch.from_numpy(rng.integers(1000, 30000, (args.batch, args.seq)).astype(np.int64))
    batch = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=torch.zeros_like(ids),
        labels=torch.from_numpy(rng.integers(0, 2, args.batch).astype(np.int64)),
    )
    train_step(model, params, optimizer, schedule, batch, args.dtype)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        train_step(model, params, optimizer, schedule, batch, args.dtype)
        times.append(time.perf_counter() - start)
    return dict(
        step_s=statistics.median(times),
        trainable=sum(p.numel() for p in params),
        peak_gflops=matmul_peak() if args.peak else None,
        attn=model.config._attn_implementation,
    )


def read_split(folder, split, tokenizer, max_length):
    with open(os.path.join(folder, f"{split}.tsv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    enc = tokenizer([r["sentence"] for r in rows], truncation=True, max_length=max_length)
    return [
        dict(input_ids=ids, token_type_ids=types, label=int(r["label"]))
        for ids, types, r in zip(enc["input_ids"], enc["token_type_ids"], rows, strict=True)
    ]


def predict(model, examples, collate, batch_size, dtype="float32"):
    """(logits [n, 2], seconds, computed tokens): dynamic padding in dataset order, no_grad."""
    model.eval()
    logits, computed = [], 0
    start = time.perf_counter()
    with torch.no_grad(), autocast(dtype):
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size])
            batch.pop("labels")
            computed += batch["input_ids"].numel()
            logits.append(model(**batch).logits.float())
    seconds = time.perf_counter() - start
    model.train()
    return torch.cat(logits).numpy(), seconds, computed


def epoch_bench(args) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    train = read_split(args.data, "train", tokenizer, args.max_length)
    dev = read_split(args.data, "dev", tokenizer, args.max_length)
    model, trainable = build_model(args.model, args.method, lora_dropout=args.lora_dropout)
    collate = DataCollatorWithPadding(tokenizer)
    generator = torch.Generator().manual_seed(0)
    # Trainer's group_by_length: megabatches of 50 batches sorted by length (similar lengths
    # per batch, little padding, batches no longer random mixes of lengths).
    sampler = (
        LengthGroupedSampler(
            args.batch, lengths=[len(e["input_ids"]) for e in train], generator=generator
        )
        if args.group_by_length
        else None
    )
    loader = torch.utils.data.DataLoader(
        train,
        batch_size=args.batch,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=True,  # len // batch steps, as bertjax's train_plan
        collate_fn=collate,
        generator=generator,
    )
    steps = len(loader)
    params = [p for _, p in trainable]
    optimizer, schedule = make_optimizer(
        trainable, args.lr, 0.01, int(args.warmup_ratio * steps), steps
    )
    computed = real = 0
    shapes = set()
    start = time.perf_counter()
    for batch in loader:
        computed += batch["input_ids"].numel()
        real += int(batch["attention_mask"].sum())
        shapes.add(tuple(batch["input_ids"].shape))
        loss = train_step(model, params, optimizer, schedule, batch, args.dtype)
    epoch_s = time.perf_counter() - start
    logits, eval_s, _ = predict(model, dev, collate, args.eval_batch, args.dtype)
    accuracy = float(np.mean(logits.argmax(-1) == np.array([e["label"] for e in dev])))
    return dict(
        epoch_s=epoch_s,
        eval_s=eval_s,
        steps=steps,
        computed_tokens=computed,
        real_tokens=real,
        num_shapes=len(shapes),
        accuracy=accuracy,
        last_loss=loss.item(),
        trainable=sum(p.numel() for p in params),
        dtype=args.dtype,
    )


def eval_bench(args) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    examples = read_split(args.data, args.split, tokenizer, args.max_length)
    model, _ = build_model(args.model, "full")
    collate = DataCollatorWithPadding(tokenizer)
    predict(model, examples[: args.eval_batch], collate, args.eval_batch, args.dtype)  # warm-up
    times = []
    for _ in range(args.repeats):
        logits, seconds, computed = predict(model, examples, collate, args.eval_batch, args.dtype)
        times.append(seconds)
    real = sum(len(e["input_ids"]) for e in examples)
    return dict(
        eval_s=statistics.median(times),
        computed_tokens=computed,
        real_tokens=real,
        logits=logits.tolist(),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["step", "epoch", "eval"])
    parser.add_argument("--model", required=True, help="HF BERT folder")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: --model)")
    parser.add_argument("--data", help="folder with train.tsv/dev.tsv (epoch, eval)")
    parser.add_argument("--split", default="dev", help="eval: the {split}.tsv of --data")
    parser.add_argument("--method", default="full", choices=["full", "bitfit", "lora", "adapter"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eval_batch", type=int, default=128)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup_ratio", type=float, default=0.1)
    parser.add_argument("--lora_dropout", type=float, default=0.1)
    parser.add_argument(
        "--group_by_length", type=int, default=0, help="epoch: 1 = Trainer's group_by_length"
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: torch.autocast('cpu', torch.bfloat16) around forward+loss and eval",
    )
    parser.add_argument("--threads", type=int, default=0, help="0: os.cpu_count()")
    parser.add_argument("--peak", type=int, default=0, help="1: also measure the matmul peak")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or os.cpu_count())
    transformers.logging.set_verbosity_error()  # no load report for the fresh classifier
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside HF peft
    result = {"step": step_bench, "epoch": epoch_bench, "eval": eval_bench}[args.mode](args)
    result.update(
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        transformers=transformers.__version__,
    )
    brief = {k: v for k, v in result.items() if k != "logits"}
    log(f"torch_ref {args.mode} {args.method}: {json.dumps(brief)}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
