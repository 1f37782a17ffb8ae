"""Vectorized runs: learning rates × seeds of one PEFT config trained by one vmapped step.

The frozen base is shared; trainable trees, optimizer states, learning rates and dropout keys
are stacked along a leading member axis. Members keep their own data (seeded subset and
order), so at a given step their batches may have different bucket lengths. Padding them to a
common length would change the dropout masks (random bits depend on the array shape), so
members are instead grouped by batch length and each group takes its step at its own length:
every member computes exactly what its separate `training.train` run computes, up to float
rounding of the batched matmuls. Each member writes a normal run folder.
"""

import dataclasses
import hashlib
import json
import logging
import math
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import peft
from bertjax import batching, checkpoint, runs, training
from bertjax.evaluate import MODEL_INPUTS, metrics_of, predict
from bertjax.optim import make_optimizer
from bertjax.steps import TrainState, compiled_memory, make_eval_step, make_train_step

log = logging.getLogger("bertjax")
MEMBER_FIELDS = (("optim", "lr"), ("train", "seed"))  # what may differ inside a group
STATE_AXES = TrainState(step=0, trainable=0, frozen=None, opt_state=0)


def group_key(config) -> str:
    """Configs with equal keys can train as one group: they differ only in lr, seed, name
    and workdir."""
    resolved = runs.config_dict(config)
    for field in ("name", "workdir"):
        resolved.pop(field, None)
    for section, field in MEMBER_FIELDS:
        resolved[section].pop(field)
    return json.dumps(resolved, sort_keys=True)


def check_vectorizable(config) -> None:
    if config.peft.method == "full":
        raise ValueError(
            "--vectorize needs a PEFT method (head, bitfit, lora, adapter): full fine-tuning "
            "would hold a copy of the whole model per run; drop --vectorize"
        )


def _slots(n: int, cap: int) -> int:
    """Members in a vmapped call, rounded up to a power of two (≤ cap): few compiled shapes."""
    return min(1 << (n - 1).bit_length(), cap)


def _parts(idx: np.ndarray, cap: int) -> list[np.ndarray]:
    return np.array_split(idx, -(-len(idx) // cap))


def plan_calls(groups: list[np.ndarray], k: int, cap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(take, put) member indices of each vmapped call of one step.

    groups: members whose batches share a length; each is split into calls of ≤ cap members,
    padded to `_slots` by repeating a member in `take` whose result `put` drops (index k).
    """
    calls = []
    for idx in groups:
        for part in _parts(idx, cap):
            pad = _slots(len(part), cap) - len(part)
            take = np.concatenate([part, np.full(pad, part[0])]).astype(np.int32)
            put = np.concatenate([part, np.full(pad, k)]).astype(np.int32)
            calls.append((take, put))
    return calls


def _take(state: TrainState, idx: jax.Array) -> TrainState:
    pick = lambda x: x[idx]
    return state.replace(
        step=state.step[idx],
        trainable=jax.tree_util.tree_map(pick, state.trainable),
        opt_state=jax.tree_util.tree_map(pick, state.opt_state),
    )


def _put(state: TrainState, idx: jax.Array, new: TrainState) -> TrainState:
    """Writes members `new` back at idx; an index ≥ K (a padding slot) is dropped."""
    put = lambda x, y: x.at[idx].set(y, mode="drop")
    return state.replace(
        step=put(state.step, new.step),
        trainable=jax.tree_util.tree_map(put, state.trainable, new.trainable),
        opt_state=jax.tree_util.tree_map(put, state.opt_state, new.opt_state),
    )


def make_group_step(model, optim_cfg, total_updates: int):
    """group_step(state, losses, take, put, batch, rngs, lrs) -> (state, losses).

    state: TrainState stacked over K members (frozen shared); losses [K]; take [s] members
    to step (padding slots repeat one), put [s] where results go (padding: K, dropped);
    batch: model inputs [s, batch, len]; rngs [K] keys; lrs [K] float32.

    Each member's optimizer is `make_optimizer` with its own (traced) lr, so its warmup and
    decay schedule is computed exactly as in a separate run.
    """

    def member_step(state, batch, rng, lr):
        member_cfg = types.SimpleNamespace(**{**optim_cfg.to_dict(), "lr": lr})
        optimizer = make_optimizer(member_cfg, total_updates)
        return make_train_step(model, optimizer)(state, batch, rng)

    step = jax.vmap(member_step, in_axes=(STATE_AXES, 0, 0, 0), out_axes=(STATE_AXES, 0))

    def group_step(state, losses, take, put, batch, rngs, lrs):
        new, metrics = step(_take(state, take), batch, rngs[take], lrs[take])
        return _put(state, put, new), losses.at[put].set(metrics["loss"], mode="drop")

    return jax.jit(group_step, donate_argnums=0)


def _peak_memory_mb(group_step, state, rngs, lrs, cap, batch_size, setup) -> float | None:
    """XLA's compiled memory (MiB) of the widest group call (cap members) at the longest
    bucket: the whole group's, which every member's summary reports as its peak memory."""
    longest = batching.abstract_batch(batch_size, setup.buckets[-1], setup.model.num_labels)
    stacked = {
        key: jax.ShapeDtypeStruct((cap, *longest[key].shape), longest[key].dtype)
        for key in MODEL_INPUTS
    }
    losses = jax.ShapeDtypeStruct(lrs.shape, jnp.float32)  # [K]
    take = put = jax.ShapeDtypeStruct((cap,), jnp.int32)
    abstract_state = jax.eval_shape(lambda: state)
    memory = compiled_memory(group_step, abstract_state, losses, take, put, stacked, rngs, lrs)
    return round(memory["total"] / 2**20, 1) if memory else None


def make_stacked_eval_step(model):
    """eval_step(trainables [s, …], frozen, batch) -> logits [batch, s * num_labels]: the
    members' logits side by side, so `evaluate.predict` handles s members at once."""
    vmapped = jax.vmap(make_eval_step(model), in_axes=(0, None, None))

    def eval_step(trainables, frozen, batch):
        logits = vmapped(trainables, frozen, batch)  # [s, batch, num_labels]
        return jnp.transpose(logits, (1, 0, 2)).reshape(logits.shape[1], -1)

    return jax.jit(eval_step)


def evaluate_members(eval_step, trainables, frozen, dataset, batch_size, buckets, pad_id, nl):
    """Metrics (incl. "loss") per member of `trainables` [s, …], as `evaluate.evaluate`."""
    s = jax.tree_util.tree_leaves(trainables)[0].shape[0]
    logits = predict(eval_step, trainables, frozen, dataset, batch_size, buckets, pad_id, s * nl)
    logits = logits.reshape(len(dataset), s, nl)
    labels = np.asarray(dataset["label"])
    return [metrics_of(logits[:, j], labels, nl) for j in range(s)]


def fingerprint(dataset) -> str:
    """sha256 of a tokenized split's token ids and labels (equal splits share evaluation)."""
    table = dataset.with_format("arrow")[:]
    digest = hashlib.sha256()
    for name in sorted(table.column_names):
        column = table.column(name).combine_chunks()
        if hasattr(column, "value_lengths"):
            digest.update(column.value_lengths().to_numpy(zero_copy_only=False).tobytes())
            column = column.flatten()
        digest.update(name.encode() + column.to_numpy(zero_copy_only=False).tobytes())
    return digest.hexdigest()


@dataclasses.dataclass
class _Member:
    config: object
    run: Path
    setup: training.Setup
    best: dict
    diverged_at: int | None = None


def train_group(
    configs: list, max_members: int | None = None, interrupt_at: int | None = None
) -> list[dict]:
    """Trains configs that differ only in optim.lr and train.seed as one vmapped program.

    Returns one summary per config (as `training.train`), {"interrupted_at": step}, or
    {"diverged_at": step} for a member whose loss became non-finite (the others go on).
    max_members: at most this many members per vmapped call (activation memory grows with
    it); None: all. Resume: when every member has `checkpoints/last` at the same step the
    group continues from there; otherwise (a crash between members' saves) it restarts.
    """
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError("a vectorized group may differ only in optim.lr and train.seed")
    check_vectorizable(configs[0])
    folders = [runs.open_run(c) for c in configs]
    setups = {}
    for config in configs:
        if config.train.seed not in setups:
            setups[config.train.seed] = training.build(config)
    first = {}
    for setup in setups.values():  # one device copy of the frozen base, however many seeds
        base = first.setdefault(setup.base_hash, setup)
        if base is not setup:
            _, frozen = peft.partition(base.params, base.mask)
            setup.params = peft.combine(frozen, peft.split(setup.params, setup.mask))
    members = []
    for config, run in zip(configs, folders, strict=True):
        setup = setups[config.train.seed]
        runs.write_json(run / runs.LABELS_FILE, setup.label_names)
        runs.write_json(run / runs.BASE_FILE, dict(model=config.model, sha256=setup.base_hash))
        members.append(_Member(config, run, setup, dict(value=-math.inf, step=-1, metrics={})))
    # Seeds only initialise trainable parts (head, LoRA, adapters); a base checkpoint lacking
    # a frozen weight (e.g. a pooler) gets a seeded one, and then seeds cannot share a base.
    by_base = {}
    for i, m in enumerate(members):
        by_base.setdefault(m.setup.base_hash, []).append(i)
    if len(by_base) > 1:
        log.warning("frozen weights differ between seeds: one vectorized group per frozen base")
    results = [None] * len(members)
    for idx in by_base.values():
        for i, result in zip(
            idx, _train([members[i] for i in idx], max_members, interrupt_at), strict=True
        ):
            results[i] = result
    return results


def _stack(trees: list):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _index(tree, i):
    """Member i (an int) or members i (an index array) of a stacked tree."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def _initial_state(members: list[_Member], optimizer) -> TrainState:
    """Fresh stacked state, or the members' `last` checkpoints when all are at one step."""
    setup = members[0].setup
    _, frozen = peft.partition(setup.params, setup.mask)
    fresh = []
    for m in members:
        trainable = peft.split(m.setup.params, m.setup.mask)
        fresh.append(dict(step=jnp.zeros((), jnp.int32), trainable=trainable))
        fresh[-1]["opt_state"] = optimizer.init(trainable)
    lasts = [m.run / "checkpoints" / "last" for m in members]
    trees = fresh
    if all(checkpoint.exists(p) for p in lasts):
        restored = [checkpoint.restore(p, like) for p, like in zip(lasts, fresh, strict=True)]
        if len({meta["step"] for _, meta in restored}) == 1:
            trees = [tree for tree, _ in restored]
            for m, (_, meta) in zip(members, restored, strict=True):
                m.best = meta["best"]
            step = restored[0][1]["step"]
            log.info("resumed a vectorized group of %d runs from step %d", len(members), step)
        else:
            log.warning("members saved at different steps: restarting the group from scratch")
    elif any(checkpoint.exists(p) for p in lasts):
        log.warning("only some members have checkpoints: restarting the group from scratch")
    start = int(trees[0]["step"])
    for m in members:
        runs.truncate_metrics(m.run, start if trees is not fresh else -1)
    stacked = _stack(trees)
    # Copies: the step donates its state, and setup.params is still needed by finish().
    return TrainState(
        stacked["step"],
        stacked["trainable"],
        jax.tree_util.tree_map(jnp.copy, frozen),
        stacked["opt_state"],
    )


def _train(members: list[_Member], max_members: int | None, interrupt_at: int | None) -> list[dict]:
    k, config, setup = len(members), members[0].config, members[0].setup
    cap = min(max_members or k, k)
    tc = config.train
    seeds = sorted({m.config.train.seed for m in members})
    train_sets = {m.config.train.seed: m.setup.splits["train"] for m in members}
    steps_per_epoch = batching.num_train_batches(train_sets[seeds[0]], tc.batch_size)
    if len({len(ds) for ds in train_sets.values()}) != 1:
        raise ValueError("vectorized members need train sets of one size")
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    updates = math.ceil(total_steps / config.optim.accumulate)
    optimizer = make_optimizer(config.optim, updates)  # init only: its state has no lr in it
    state = _initial_state(members, optimizer)
    group_step = make_group_step(setup.model, config.optim, updates)
    eval_step = make_stacked_eval_step(setup.model)
    num_labels = setup.model.num_labels
    lrs = jnp.asarray([m.config.optim.lr for m in members], jnp.float32)
    rngs = jnp.stack([jax.random.key(m.config.train.seed) for m in members])
    of_seed = {
        s: np.array([i for i, m in enumerate(members) if m.config.train.seed == s]) for s in seeds
    }
    peak_memory_mb = _peak_memory_mb(group_step, state, rngs, lrs, cap, tc.batch_size, setup)
    eval_groups = {}  # members sharing one validation set are evaluated together
    for i, m in enumerate(members):
        valid = m.setup.splits["validation"]
        eval_groups.setdefault(fingerprint(valid), (valid, []))[1].append(i)
    log.info(
        "vectorized group: %d runs (lr %s, seed %s), %d steps, %d train examples",
        k,
        sorted({m.config.optim.lr for m in members}),
        seeds,
        total_steps,
        len(train_sets[seeds[0]]),
    )

    def live(idx):
        return [i for i in idx if members[i].diverged_at is None]

    def save_last():
        for i in live(range(k)):
            tree = dict(
                step=state.step[i],
                trainable=_index(state.trainable, i),
                opt_state=_index(state.opt_state, i),
            )
            meta = dict(step=int(state.step[i]), best=members[i].best)
            checkpoint.save(members[i].run / "checkpoints" / "last", tree, meta)

    def run_eval(step, epoch):
        parts = [
            (valid, part)
            for valid, idx in eval_groups.values()
            if live(idx)
            for part in _parts(np.asarray(live(idx)), cap)
        ]
        for valid, idx in parts:
            trainables = _index(state.trainable, idx)
            results = evaluate_members(
                eval_step,
                trainables,
                state.frozen,
                valid,
                tc.eval_batch_size,
                setup.buckets,
                setup.pad_id,
                num_labels,
            )
            for j, (i, metrics) in enumerate(zip(idx, results, strict=True)):
                m = members[i]
                loss = metrics.pop("loss")
                record = training.log_record(step, epoch, "validation", loss, metrics, None, start)
                runs.append_metrics(m.run, record)
                value = metrics[tc.select_metric]
                if value > m.best["value"]:
                    m.best = dict(value=value, step=step, metrics=metrics)
                    checkpoint.save(
                        m.run / "checkpoints" / "best",
                        dict(trainable=_index(trainables, j)),
                        dict(step=step, metrics=metrics),
                    )
        save_last()

    def log_window(step, window, window_start):
        losses = np.asarray(jnp.mean(jnp.stack(window), axis=0))  # the only host sync
        elapsed = time.time() - window_start  # after the sync: the steps have run
        speed = round(len(window) * tc.batch_size / elapsed, 1)  # per member
        for i in live(range(k)):
            m = members[i]
            if not math.isfinite(losses[i]):
                m.diverged_at = step
                log.error(
                    "%s: loss is %s at step %d; stopped this run, the last good checkpoint is "
                    "%s (try a lower lr)",
                    m.run,
                    losses[i],
                    step,
                    m.run / "checkpoints" / "last",
                )
                continue
            record = training.log_record(
                step, step / steps_per_epoch, "train", losses[i], {}, speed, start
            )
            runs.append_metrics(m.run, record)

    start = time.time()
    step = int(state.step[0])
    epoch_times = []
    with training.StopFlag() as stop:
        while step < total_steps and live(range(k)):
            epoch, skip = divmod(step, steps_per_epoch)
            batches = {
                s: batching.train_batches(
                    train_sets[s],
                    tc.batch_size,
                    setup.buckets,
                    s,
                    epoch,
                    pad_id=setup.pad_id,
                    skip=skip,
                )
                for s in seeds
            }
            bar = tqdm(
                total=steps_per_epoch,
                initial=skip,
                desc=f"epoch {epoch + 1} ×{k}",
                unit="step",
                disable=None,
            )
            epoch_start, window, window_start = time.time(), [], time.time()
            for _ in range(steps_per_epoch - skip):
                batch = {s: next(batches[s]) for s in seeds}
                losses = jnp.zeros(k, jnp.float32)
                by_length = {}
                for s in seeds:
                    by_length.setdefault(batch[s]["input_ids"].shape[1], []).append(s)
                groups = [np.concatenate([of_seed[s] for s in g]) for g in by_length.values()]
                for take, put in plan_calls(groups, k, cap):
                    seed_of = [members[i].config.train.seed for i in take]
                    stacked = {
                        key: np.stack([batch[s][key] for s in seed_of]) for key in MODEL_INPUTS
                    }
                    state, losses = group_step(state, losses, take, put, stacked, rngs, lrs)
                step += 1
                window.append(losses)
                if step % tc.log_every == 0 or step % steps_per_epoch == 0:
                    log_window(step, window, window_start)
                    window, window_start = [], time.time()
                bar.update(1)
                if tc.eval_every and step % tc.eval_every == 0 and step % steps_per_epoch:
                    run_eval(step, step / steps_per_epoch)
                if stop.signal or step == interrupt_at or step >= total_steps:
                    break
                if not live(range(k)):
                    break
            bar.close()
            if stop.signal or step == interrupt_at:
                if step % steps_per_epoch == 0:
                    run_eval(step, step / steps_per_epoch)
                save_last()
                log.warning(
                    "%s at step %d: saved each member's checkpoints/last; re-run to resume",
                    stop.signal or "interrupt",
                    step,
                )
                return [dict(interrupted_at=step) for _ in members]
            epoch_times.append(time.time() - epoch_start)
            run_eval(step, step / steps_per_epoch)
    plain_eval = make_eval_step(setup.model)
    return [
        dict(diverged_at=m.diverged_at)
        if m.diverged_at is not None
        else training.finish(
            *(m.config, m.run, m.setup, plain_eval, m.best, start, epoch_times),
            peak_memory_mb=peak_memory_mb,
        )
        for m in members
    ]
