"""The training run: data → model → jitted steps → evaluation, checkpoints and logs."""

import dataclasses
import json
import logging
import math
import signal
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import peft
from bertjax import batching, checkpoint, data, runs, sharding
from bertjax.evaluate import evaluate, model_inputs
from bertjax.optim import make_optimizer
from bertjax.plots import plot_curves
from bertjax.pretrained import from_pretrained, load_tokenizer
from bertjax.steps import compiled_memory, init_state, make_eval_step, make_train_step

log = logging.getLogger("bertjax")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def peft_config(config):
    """The peft method config for config.peft.method (None for full/head/bitfit)."""
    method = config.peft.method
    if method in ("lora", "dora"):
        lora = config.peft.lora
        targets = lora.targets if isinstance(lora.targets, str) else tuple(lora.targets)
        return peft.LoraConfig(
            lora.rank, lora.alpha, lora.dropout, targets, use_dora=method == "dora"
        )
    if method == "ia3":
        ia3 = config.peft.ia3
        return peft.IA3Config(
            *(v if isinstance(v, str) else tuple(v) for v in (ia3.targets, ia3.feedforward))
        )
    if method == "adapter":
        return peft.AdapterConfig(**config.peft.adapter.to_dict())
    if method not in ("full", "head", "bitfit"):
        raise ValueError(
            f"peft.method {method!r} unknown; use full, head, bitfit, lora, dora, ia3, adapter"
        )
    return None


def mask_method(config):
    if config.peft.method == "bitfit":
        return peft.BitFitConfig(head=config.peft.bitfit.head)
    return peft_config(config) or config.peft.method


@dataclasses.dataclass
class Setup:
    """Everything a run (or its evaluation) rebuilds from the config."""

    model: object
    params: dict
    mask: dict
    splits: dict
    label_names: list
    pad_id: int
    buckets: tuple
    base_hash: str


def build(config, label_names=None) -> Setup:
    """Tokenizer, data splits, labels and the model with its trainable mask."""
    if config.dtype not in DTYPES:
        raise ValueError(f"dtype {config.dtype!r} unknown; use {' or '.join(DTYPES)}")
    tokenizer = load_tokenizer(config.model)
    splits, names = data.prepare(
        config.data, tokenizer, config.train.seed, label_names, config.num_labels
    )
    num_labels = config.num_labels or len(names)
    if num_labels != len(names):
        raise ValueError(
            f"config.num_labels={num_labels} but the data's labels are {names[:10]} "
            f"({len(names)}); fix --config.num_labels or data.label_field"
        )
    model, params = from_pretrained(
        config.model,
        num_labels,
        peft=peft_config(config),
        dtype=DTYPES[config.dtype],
        seed=config.train.seed,
    )
    mask = peft.trainable_mask(params, mask_method(config))
    _, frozen = peft.partition(params, mask)
    return Setup(
        model,
        params,
        mask,
        splits,
        names,
        tokenizer.pad_token_id,
        batching.bucket_lengths(config.data.max_length),
        checkpoint.tree_hash(frozen),
    )


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)


def log_record(step, epoch, split, loss, metrics, examples_per_s, start):
    """One metrics.jsonl line."""
    return dict(
        step=step,
        epoch=round(epoch, 4),
        split=split,
        loss=None if loss is None else float(loss),
        metrics=metrics,
        examples_per_s=examples_per_s,
        elapsed=round(time.time() - start, 2),
    )


def train(config, overwrite: bool = False, interrupt_at: int | None = None) -> dict:
    """Runs (or resumes) training as configured; returns the summary written to the run.

    interrupt_at: behave as if SIGINT arrived after this step (tests of resume).
    """
    run = runs.open_run(config, overwrite)
    setup = build(config)
    runs.write_json(run / runs.LABELS_FILE, setup.label_names)
    runs.write_json(run / runs.BASE_FILE, dict(model=config.model, sha256=setup.base_hash))
    train_set, valid_set = setup.splits["train"], setup.splits["validation"]
    tc = config.train
    steps_per_epoch = batching.num_train_batches(train_set, tc.batch_size)
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    optimizer = make_optimizer(config.optim, math.ceil(total_steps / config.optim.accumulate))
    mesh = sharding.data_mesh()
    sharding.check_batch_size(tc.batch_size, mesh, "train.batch_size")
    sharding.check_batch_size(tc.eval_batch_size, mesh, "train.eval_batch_size")
    state = init_state(setup.params, setup.mask, optimizer)
    num_labels = setup.model.num_labels
    train_step = make_train_step(setup.model, optimizer, mesh)
    eval_step = make_eval_step(setup.model, mesh)
    memory = compiled_memory(
        train_step,
        jax.eval_shape(lambda: state),
        batching.abstract_batch(tc.batch_size, setup.buckets[-1], num_labels),
        jax.random.key(0),
    )
    peak_memory_mb = round(memory["total"] / 2**20, 1) if memory else None
    log.info("train step at the longest bucket: %s MiB of device memory (XLA)", peak_memory_mb)
    rng = jax.random.key(tc.seed)
    stats = batching.padding_stats(train_set, tc.batch_size, setup.buckets)
    log.info(
        "%s: %d train / %d validation examples, %d steps; %d batch shapes, %.1f%% padding "
        "(%.1f%% unbucketed)",
        run,
        len(train_set),
        len(valid_set),
        total_steps,
        stats["num_shapes"],
        100 * stats["pad_fraction"],
        100 * stats["pad_fraction_unbucketed"],
    )

    best = dict(value=-math.inf, step=-1, metrics={})
    if checkpoint.exists(run / "checkpoints" / "last"):
        like = dict(step=state.step, trainable=state.trainable, opt_state=state.opt_state)
        saved, meta = checkpoint.restore(run / "checkpoints" / "last", like)
        state = state.replace(**saved)
        best = meta["best"]
        runs.truncate_metrics(run, int(state.step))
        log.info("resumed %s from step %d", run, int(state.step))
    else:
        runs.truncate_metrics(run, -1)
    state = sharding.put_replicated(state, mesh)

    def save_last():
        meta = dict(step=int(state.step), best=best)
        checkpoint.save(
            run / "checkpoints" / "last",
            dict(step=state.step, trainable=state.trainable, opt_state=state.opt_state),
            meta,
        )

    def run_eval(step, epoch):
        nonlocal best
        metrics, _ = evaluate(
            eval_step,
            state.trainable,
            state.frozen,
            valid_set,
            tc.eval_batch_size,
            setup.buckets,
            setup.pad_id,
            num_labels,
            mesh=mesh,
        )
        loss = metrics.pop("loss")
        runs.append_metrics(run, log_record(step, epoch, "validation", loss, metrics, None, start))
        value = metrics[tc.select_metric]
        if value > best["value"]:
            best = dict(value=value, step=step, metrics=metrics)
            checkpoint.save(
                run / "checkpoints" / "best",
                dict(trainable=state.trainable),
                dict(step=step, metrics=metrics),
            )
        save_last()
        return metrics

    start = time.time()
    step = int(state.step)
    epoch_times = []
    with StopFlag() as stop:
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            batches = batching.train_batches(
                train_set,
                tc.batch_size,
                setup.buckets,
                tc.seed,
                epoch,
                pad_id=setup.pad_id,
                skip=skip,
            )
            bar = tqdm(
                total=steps_per_epoch,
                initial=skip,
                desc=f"epoch {epoch + 1}",
                unit="step",
                disable=None,
            )
            epoch_start, window, window_start = time.time(), [], time.time()
            for batch in batches:
                state, metrics = train_step(
                    state, sharding.put_batch(model_inputs(batch), mesh), rng
                )
                step += 1
                window.append(metrics["loss"])
                if step % tc.log_every == 0 or step % steps_per_epoch == 0:
                    loss = float(jnp.mean(jnp.stack(window)))  # the only host sync
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"loss is {loss} at step {step}; stopped, the last good checkpoint "
                            f"is {run / 'checkpoints' / 'last'} (try a lower --config.optim.lr)"
                        )
                    speed = len(window) * tc.batch_size / (time.time() - window_start)
                    runs.append_metrics(
                        run,
                        log_record(
                            step, step / steps_per_epoch, "train", loss, {}, round(speed, 1), start
                        ),
                    )
                    bar.set_postfix(loss=f"{loss:.4f}", ex_s=f"{speed:.0f}")
                    window, window_start = [], time.time()
                bar.update(1)
                if tc.eval_every and step % tc.eval_every == 0 and step % steps_per_epoch:
                    run_eval(step, step / steps_per_epoch)
                if stop.signal or step == interrupt_at or step >= total_steps:
                    break
            bar.close()
            if stop.signal or step == interrupt_at:
                if step % steps_per_epoch == 0:  # the epoch is complete: evaluate it first
                    run_eval(step, step / steps_per_epoch)
                save_last()
                log.warning(
                    "%s at step %d: saved %s; re-run the same command to resume",
                    stop.signal or "interrupt",
                    step,
                    run / "checkpoints" / "last",
                )
                return dict(interrupted_at=step)
            epoch_times.append(time.time() - epoch_start)
            metrics = run_eval(step, step / steps_per_epoch)
            log.info("step %d validation: %s", step, json.dumps(metrics))
    return finish(config, run, setup, eval_step, best, start, epoch_times, mesh, peak_memory_mb)


def finish(
    config,
    run: Path,
    setup: Setup,
    eval_step,
    best: dict,
    start: float,
    epoch_times: list[float],
    mesh=None,
    peak_memory_mb: float | None = None,
) -> dict:
    """Test metrics from the best checkpoint, summary.json and curves.png."""
    _, frozen = peft.partition(setup.params, setup.mask)
    trainable_like = peft.split(setup.params, setup.mask)
    saved, _ = checkpoint.restore(run / "checkpoints" / "best", dict(trainable=trainable_like))
    test_metrics = None
    test = setup.splits.get("test")
    if test is not None and data.has_labels(test):
        test_metrics, _ = evaluate(
            eval_step,
            saved["trainable"],
            frozen,
            test,
            config.train.eval_batch_size,
            setup.buckets,
            setup.pad_id,
            setup.model.num_labels,
            mesh=mesh,
        )
        runs.append_metrics(
            run,
            log_record(
                best["step"],
                best["step"]
                / max(
                    batching.num_train_batches(setup.splits["train"], config.train.batch_size), 1
                ),
                "test",
                test_metrics.pop("loss"),
                test_metrics,
                None,
                start,
            ),
        )
    records = runs.read_metrics(run)
    speeds = [r["examples_per_s"] for r in records if r["split"] == "train" and r["examples_per_s"]]
    summary = dict(
        name=config.name,
        model=config.model,
        method=config.peft.method,
        dataset=config.data.name or config.data.path,
        best_step=best["step"],
        validation=best["metrics"],
        test=test_metrics,
        select_metric=config.train.select_metric,
        total_params=peft.count(setup.params),
        trainable_params=peft.count(setup.params, setup.mask),
        train_examples=len(setup.splits["train"]),
        wall_time_s=round(time.time() - start, 2),
        seconds_per_epoch=round(float(np.mean(epoch_times)), 2) if epoch_times else None,
        examples_per_s=round(float(np.median(speeds)), 1) if speeds else None,
        peak_memory_mb=peak_memory_mb,
    )
    runs.write_json(run / runs.SUMMARY_FILE, summary)
    plot_curves(records, run / runs.CURVES_FILE, title=config.name)
    return summary
