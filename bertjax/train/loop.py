"""The training loop: K ≥ 1 runs of one config (differing only in learning rate and seed)
trained by one jitted step, each into its own run folder.

K = 1 is a plain run. K > 1 (`sweep.py --vectorize`) stacks the runs' trainable parameters,
optimizer states (holding each run's learning rate), data and dropout keys along a member
axis over one shared frozen base. Runs keep their own data (seeded subset and order), so at a
step their batches may differ in length; padding them to one length would change the dropout
masks, so each length takes its own call and every run computes what it computes alone, up
to float rounding of the batched matmuls.
"""

import json
import logging
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import peft
from bertjax import data, runs
from bertjax.data import batching, packing
from bertjax.parallel import distributed, sharding
from bertjax.runs import events
from bertjax.runs.plots import plot_curves
from bertjax.train import checks, groups, stopping
from bertjax.train.build import Setup
from bertjax.train.evaluate import MODEL_INPUTS, majority_baseline, metrics_of, predict
from bertjax.train.optim import learning_rate_schedule, make_optimizer
from bertjax.train.steps import (
    TrainState,
    make_members_eval_step,
    make_subset_step,
    make_train_step,
    member,
    memory_stats,
    precompiled,
    stack_states,
    stacked,
)

log = logging.getLogger("bertjax")


def log_record(step, epoch, split, loss, metrics, examples_per_s, run: runs.Run, **extra):
    """One metrics.jsonl line; `elapsed` counts the run's earlier sessions too. extra: train
    records' lr and grad_norm."""
    return dict(
        step=step,
        epoch=round(epoch, 4),
        split=split,
        loss=None if loss is None else float(loss),
        metrics=metrics,
        examples_per_s=examples_per_s,
        elapsed=round(run.seconds(), 2),
        **extra,
    )


def train(config, overwrite: bool = False) -> dict:
    """Runs (or resumes) one run; returns its result (see `train_runs`)."""
    return train_runs([config], overwrite)[0]


def train_runs(configs: list, overwrite: bool = False, max_members: int | None = None) -> list:
    """Trains runs that differ only in optim.lr and train.seed as one program.

    Returns per config its summary (also in summary.json), {"interrupted_at": step,
    "signal": name, "exit_status": 130 | 143} after a signal (checkpoints/last saved), or
    {"diverged_at": step, "error": …} when its loss became non-finite (the others go on).
    A finished run (summary.json) is left as it is. max_members: at most this many runs per
    call of the step (activation memory grows with it); None: all.
    """
    for config in configs:
        checks.check_config(config)
    groups.check_group(configs)
    members = [runs.check_folder(c, overwrite) for c in configs]
    with runs.held([m.folder for m in members]):
        results = {}
        for i, m in enumerate(members):
            summary = None if overwrite else runs.finished_summary(m)
            if summary is not None:
                log.info("%s is finished (summary.json); nothing to do", m.folder)
                results[i] = summary
        todo = [i for i in range(len(members)) if i not in results]
        if todo:
            trained = _train_new([members[i] for i in todo], overwrite, max_members)
            results.update(zip(todo, trained, strict=True))
    return [results[i] for i in range(len(members))]


def _train_new(members: list[runs.Run], overwrite: bool, max_members: int | None) -> list:
    setups = groups.shared_setups(members)
    for m, setup in zip(members, setups, strict=True):
        base = dict(model=m.config.model, sha256=setup.base_hash)
        runs.start(m, setup.label_names, base, overwrite)
    distributed.barrier("started")  # process 0 wrote (or emptied) the folders
    # Seeds only initialise trainable parts (head, LoRA, adapters); a base checkpoint lacking
    # a frozen weight (e.g. a pooler) gets a seeded one, and then seeds cannot share a base.
    by_base = {}
    for i, setup in enumerate(setups):
        by_base.setdefault(setup.base_hash, []).append(i)
    if len(by_base) > 1:
        log.warning("frozen weights differ between seeds: one program per frozen base")
    results = [None] * len(members)
    for idx in by_base.values():
        group = _loop([members[i] for i in idx], [setups[i] for i in idx], max_members)
        for i, result in zip(idx, group, strict=True):
            results[i] = result
    return results


def _initial_state(members, setups, optimizers) -> tuple[TrainState, int]:
    """The runs' states stacked over the member axis and the step to go on from: each from
    its checkpoints/last when those still training all stopped at one step, else fresh.
    A run stopped early keeps the state it stopped with (inactive)."""
    _, frozen = peft.partition(setups[0].params, setups[0].mask)
    fresh = []
    for setup, optimizer in zip(setups, optimizers, strict=True):
        trainable = peft.split(setup.params, setup.mask)
        fresh.append(dict(step=jnp.zeros((), jnp.int32), trainable=trainable))
        fresh[-1]["opt_state"] = optimizer.init(trainable)
    saved = [runs.resume(m, like) for m, like in zip(members, fresh, strict=True)]
    going = [tree for m, tree in zip(members, saved, strict=True) if m.stopped is None]
    steps = {None if tree is None else int(tree["step"]) for tree in going}
    if len(steps) <= 1 and None not in steps:
        trees = saved
        start = steps.pop() if steps else max(int(tree["step"]) for tree in saved)
        log.info("resumed %s from step %d", ", ".join(str(m.folder) for m in members), start)
    else:
        if len(steps) > 1:
            log.warning("the runs stopped at different steps %s: all restart from step 0", steps)
        for m in members:
            runs.truncate_metrics(m.folder, -1)
            runs.reset(m)
        trees, start = fresh, 0
    states = [
        TrainState(t["step"], t["trainable"], None, t["opt_state"], m.stopped is None)
        for m, t in zip(members, trees, strict=True)
    ]
    # A copy of the frozen base: the step donates its state, and finishing needs setup.params.
    state = stack_states(states).replace(frozen=jax.tree_util.tree_map(jnp.copy, frozen))
    return state, start


def _loop(members: list[runs.Run], setups: list[Setup], max_members: int | None) -> list:
    """Trains members (one frozen base) to the end, a signal, divergence or early stopping;
    their results."""
    k, config, setup = len(members), members[0].config, setups[0]
    tc, model = config.train, setup.model
    cap = min(max_members or k, k)
    seeds = sorted({m.config.train.seed for m in members})
    train_sets = {
        m.config.train.seed: s.splits["train"] for m, s in zip(members, setups, strict=True)
    }
    if len({len(ds) for ds in train_sets.values()}) != 1:
        raise ValueError("runs trained together need train sets of one size")
    steps_per_epoch = batching.num_train_batches(train_sets[seeds[0]], tc.batch_size)
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    log_every = tc.log_every or max(1, min(50, steps_per_epoch // 20))
    updates = math.ceil(total_steps / config.optim.accumulate)
    optimizers = [make_optimizer(m.config.optim, updates) for m in members]
    peak_lrs = np.array([m.config.optim.lr for m in members])
    unit_lr = learning_rate_schedule(config.optim, updates)  # as make_optimizer's
    mesh = sharding.data_mesh()
    sharding.check_batch_size(tc.batch_size, mesh, "train.batch_size")
    sharding.check_batch_size(tc.eval_batch_size, mesh, "train.eval_batch_size")
    state, start_step = _initial_state(members, setups, optimizers)
    state = sharding.put_replicated(state, mesh)
    train_step = make_train_step(model, optimizers[0], mesh)
    subset_step = make_subset_step(model, optimizers[0], mesh) if k > 1 else None
    eval_step = make_members_eval_step(model, mesh)
    rngs = jnp.stack([jax.random.key(m.config.train.seed) for m in members])
    of_seed = {
        s: np.array([i for i, m in enumerate(members) if m.config.train.seed == s]) for s in seeds
    }
    num_labels = model.num_labels
    packed = packing.enabled(config.data.get("packing", False), model)

    longest = batching.longest_batch(
        train_sets[seeds[0]], tc.batch_size, setup.buckets, num_labels, packed
    )
    widest = stacked({key: longest[key] for key in MODEL_INPUTS}, cap)
    # Compiled ahead for XLA's memory figure, with the live state (not its abstract shape):
    # the step's calls at this shape run this program instead of compiling it again.
    if cap == k:
        train_step, compiled = precompiled(train_step, state, widest, rngs)
    else:
        take = jax.ShapeDtypeStruct((cap,), jnp.int32)
        subset_step, compiled = precompiled(subset_step, state, take, take, widest, rngs)
    memory = memory_stats(compiled)
    peak_memory_mb = round(memory["total"] / 2**20, 1) if memory else None
    stats = batching.padding_stats(
        train_sets[seeds[0]], tc.batch_size, setup.buckets, packing=packed
    )
    lrs = sorted({m.config.optim.lr for m in members})
    log.info(
        "%s: %d train examples, %d steps; %d batch shapes, %.1f%% padding; train step at the "
        "longest batch: %s MiB (XLA)",
        members[0].folder if k == 1 else f"{k} runs (lr {lrs}, seed {seeds})",
        len(train_sets[seeds[0]]),
        total_steps,
        stats["num_shapes"],
        100 * stats["pad_fraction"],
        peak_memory_mb,
    )

    eval_groups = {}  # members sharing one validation set are evaluated together
    for i, s in enumerate(setups):
        valid = s.splits["validation"]
        eval_groups.setdefault(groups.fingerprint(valid), (valid, []))[1].append(i)

    def live() -> list[int]:
        return [i for i, m in enumerate(members) if m.training]

    def logged(i: int, record: dict) -> None:
        runs.append_metrics(members[i].folder, record)
        writers[i].record(record)

    def save_last(step: int, idx: list[int]) -> None:
        for i in idx:
            tree = dict(
                step=state.step[i],
                trainable=member(state.trainable, i),
                opt_state=member(state.opt_state, i),
            )
            runs.save_last(members[i], tree, step)
        stop.at("save", step)

    def evaluate(step: int) -> None:
        """Validation of the members still training, their best and last checkpoints and
        early stopping."""
        stop.at("eval", step)
        evaluated = live()
        for valid, idx in eval_groups.values():
            for part in groups.split(np.asarray([i for i in idx if i in evaluated]), cap):
                if not len(part):
                    continue
                trainables = member(state.trainable, part)
                logits = predict(
                    eval_step,
                    trainables,
                    state.frozen,
                    valid,
                    tc.eval_batch_size,
                    setup.buckets,
                    setup.pad_id,
                    len(part) * num_labels,
                    mesh=mesh,
                    desc=f"validation @ {step}",
                    packing=packed,
                ).reshape(len(valid), len(part), num_labels)
                labels = np.asarray(valid["label"])
                for j, i in enumerate(part):
                    m, metrics = members[i], metrics_of(logits[:, j], labels, num_labels)
                    loss = metrics.pop("loss")
                    record = log_record(
                        step, step / steps_per_epoch, "validation", loss, metrics, None, m
                    )
                    logged(i, record)
                    value, best_before = metrics[tc.select_metric], m.best["value"]
                    if value > best_before:
                        m.best = dict(value=value, step=step, metrics=metrics)
                        runs.save_best(m, step, metrics, member(trainables, j))
                    stopping.early_stopping(m, value, best_before, step, tc)
                    if m.stopped is not None:
                        log.warning("%s: stopped early at step %d: %s", m.folder, step, m.stopped)
                    m.last_eval_step = step
                    if k == 1:
                        log.info("step %d validation: %s", step, json.dumps(metrics))
        save_last(step, evaluated)

    def log_window(step: int, window: list, started: float) -> None:
        means = jax.device_get({key: jnp.mean(jnp.stack(window[key]), 0) for key in window})
        speed = round(len(window["loss"]) * tc.batch_size / (time.time() - started), 1)  # per run
        with jax.default_device(jax.local_devices(backend="cpu")[0]):  # not behind the train steps
            unit = float(unit_lr((step - 1) // config.optim.accumulate))
        for i in live():
            m, loss = members[i], means["loss"][i]
            if not math.isfinite(loss):
                m.diverged = (
                    f"loss is {loss} at step {step}; stopped, the last good checkpoint is "
                    f"{m.checkpoints / 'last'} (try a lower --config.optim.lr)"
                )
                log.error("%s: %s", m.folder, m.diverged)
                continue
            extra = dict(lr=float(peak_lrs[i] * unit), grad_norm=float(means["grad_norm"][i]))
            epoch = step / steps_per_epoch
            logged(i, log_record(step, epoch, "train", loss, {}, speed, m, **extra))

    def take_step(state, batch: dict):
        """One step of every member; its metrics (loss and grad_norm [K], on device)."""
        lengths = {}  # by the shapes of every input (packed rows also differ in examples per row)
        for s in seeds:
            shapes = tuple(batch[s][key].shape for key in MODEL_INPUTS)
            lengths.setdefault(shapes, []).append(s)
        if len(lengths) == 1:  # one length: one call of the whole stacked state
            stacked = {
                key: np.stack([batch[m.config.train.seed][key] for m in members])
                for key in MODEL_INPUTS
            }
            if cap == k:
                return train_step(state, sharding.put_batch(stacked, mesh, axis=1), rngs)
        metrics = {key: jnp.zeros(k, jnp.float32) for key in ("loss", "grad_norm")}
        same_length = [np.concatenate([of_seed[s] for s in g]) for g in lengths.values()]
        for take, put in groups.plan_calls(same_length, k, cap):
            stacked = {
                key: np.stack([batch[members[i].config.train.seed][key] for i in take])
                for key in MODEL_INPUTS
            }
            state, part = subset_step(
                state, take, put, sharding.put_batch(stacked, mesh, axis=1), rngs
            )
            for key in metrics:
                metrics[key] = metrics[key].at[put].set(part[key], mode="drop")
        return state, metrics

    def interrupted(step: int) -> dict:
        if saved_step != step:
            save_last(step, live())
        log.warning(
            "%s at step %d: saved checkpoints/last; re-run the same command to resume",
            stop.signal or "a signal to another process",
            step,
        )
        return stop.result(step)

    def still_training(state: TrainState) -> TrainState:
        """The state with `active` following the members' records (early stops, divergence);
        compared on the host, since reading state.active would wait for the step."""
        nonlocal active
        now = np.array([m.training for m in members])
        if (now == active).all():
            return state
        active = now
        return state.replace(active=sharding.put_replicated(jnp.asarray(now), mesh))

    step = saved_step = start_step
    halt = False  # stop now: agreed by every process
    active = np.array([m.stopped is None for m in members])  # as _initial_state made it
    with stopping.StopFlag() as stop, events.writers(members, start_step) as writers:
        if _is_eval_point(step, steps_per_epoch, total_steps, tc.eval_every) and any(
            members[i].last_eval_step != step for i in live()
        ):
            evaluate(step)  # the run stopped before evaluating this step
            state = still_training(state)
        while step < total_steps and live() and not halt:
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
                    packing=packed,
                )
                for s in seeds
            }
            bar = tqdm(
                total=min(steps_per_epoch, total_steps - epoch * steps_per_epoch),
                initial=skip,
                desc=f"epoch {epoch + 1}" + (f" ×{k}" if k > 1 else ""),
                unit="step",
                smoothing=0.05,
                disable=None,
            )
            epoch_start, window, window_start, previous = time.time(), {}, time.time(), None
            for _ in range(steps_per_epoch - skip):
                state, metrics = take_step(state, {s: next(batches[s]) for s in seeds})
                step += 1
                if previous is not None:  # the step before: done by now, so no stall
                    shown = np.asarray(previous)[live()].mean()
                    bar.set_postfix(loss=f"{shown:.4f}", refresh=False)
                previous = metrics["loss"]
                for key, value in metrics.items():
                    window.setdefault(key, []).append(value)
                bar.update(1)
                stop.at("train", step)
                if step % log_every == 0 or step % steps_per_epoch == 0 or step == total_steps:
                    log_window(step, window, window_start)
                    window, window_start = {}, time.time()
                if step % steps_per_epoch == 0 or step == total_steps:
                    for i in live():
                        members[i].epoch_seconds.append(round(time.time() - epoch_start, 2))
                if _is_eval_point(step, steps_per_epoch, total_steps, tc.eval_every) and live():
                    evaluate(step)
                    saved_step = step
                state = still_training(state)
                # Processes agree at log steps (no host sync in between): a signal to one
                # stops all at the same step.
                halt = distributed.agreed_stop(stop.signal is not None, step, log_every)
                if halt or step >= total_steps or not live():
                    break
            bar.close()
        frozen = peft.partition(setup.params, setup.mask)[1]
        results = []
        for i, (m, s) in enumerate(zip(members, setups, strict=True)):
            if m.diverged is not None:
                results.append(dict(diverged_at=step, error=m.diverged))
            elif not halt:
                summary = _finish(
                    m, s, frozen, eval_step, mesh, steps_per_epoch, peak_memory_mb, writers[i]
                )
                halt = distributed.agreed_stop(stop.signal is not None, 0, 1)
                results.append(None if halt else summary)  # a signal mid-test: redo
            else:
                results.append(None)
        if None in results:
            result = interrupted(step)
            results = [result if r is None else r for r in results]
    return results


def _is_eval_point(step: int, steps_per_epoch: int, total_steps: int, eval_every) -> bool:
    """Evaluations: at each epoch's end, at the last step, and every eval_every steps."""
    if step == 0:
        return False
    return (
        step % steps_per_epoch == 0
        or step == total_steps
        or bool(eval_every and step % eval_every == 0)
    )


def _finish(
    run: runs.Run,
    setup: Setup,
    frozen,
    eval_step,
    mesh,
    steps_per_epoch,
    peak_memory_mb,
    writer: events.Events,
) -> dict:
    """Test metrics of the best checkpoint, summary.json and curves.png of one run."""
    config = run.config
    trainable = runs.restore_best(run, peft.split(setup.params, setup.mask))
    test_metrics = None
    test = setup.splits.get("test")
    if test is not None and data.has_labels(test):
        stacked = jax.tree_util.tree_map(lambda x: x[None], trainable)
        logits = predict(
            eval_step,
            stacked,
            frozen,
            test,
            config.train.eval_batch_size,
            setup.buckets,
            setup.pad_id,
            setup.model.num_labels,
            mesh=mesh,
            desc="test",
            packing=packing.enabled(config.data.get("packing", False), setup.model),
        )
        test_metrics = metrics_of(logits, np.asarray(test["label"]), setup.model.num_labels)
        loss = test_metrics.pop("loss")
        step = run.best["step"]
        record = log_record(
            step, step / max(steps_per_epoch, 1), "test", loss, test_metrics, None, run
        )
        runs.append_metrics(run.folder, record)
        writer.record(record)
    records = runs.read_metrics(run.folder)
    speeds = [r["examples_per_s"] for r in records if r["split"] == "train" and r["examples_per_s"]]
    summary = dict(
        name=config.name,
        model=config.model,
        method=config.peft.method,
        dataset=data.dataset_name(config.data),
        best_step=run.best["step"],
        validation=run.best["metrics"],
        test=test_metrics,
        select_metric=config.train.select_metric,
        total_params=peft.count(setup.params),
        trainable_params=peft.count(setup.params, setup.mask),
        train_examples=len(setup.splits["train"]),
        wall_time_s=round(run.seconds(), 2),
        seconds_per_epoch=round(float(np.mean(run.epoch_seconds)), 2)
        if run.epoch_seconds
        else None,
        examples_per_s=round(float(np.median(speeds)), 1) if speeds else None,
        peak_memory_mb=peak_memory_mb,
        stopped_early=run.stopped,
        majority_baseline=majority_baseline(
            setup.splits["train"]["label"],
            {
                name: np.asarray(setup.splits[name]["label"])
                for name in ("validation", "test")
                if setup.splits.get(name) is not None and data.has_labels(setup.splits[name])
            },
            setup.model.num_labels,
        ),
    )
    runs.write_json(run.folder / runs.SUMMARY_FILE, summary)
    plot_curves(records, run.folder / runs.CURVES_FILE, title=config.name)
    return summary
