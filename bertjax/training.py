"""The training loop: K ≥ 1 runs of one config (differing only in learning rate and seed)
trained by one jitted step, each into its own run folder.

K = 1 is a plain run. K > 1 (`sweep.py --vectorize`) stacks the runs' trainable parameters,
optimizer states (holding each run's learning rate), data and dropout keys along a member
axis over one shared frozen base. Runs keep their own data (seeded subset and order), so at a
step their batches may differ in length; padding them to one length would change the dropout
masks, so each length takes its own call and every run computes what it computes alone, up
to float rounding of the batched matmuls.
"""

import hashlib
import json
import logging
import math
import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import peft
from bertjax import batching, checks, data, distributed, packing, runs, sharding
from bertjax.build import Setup, build
from bertjax.evaluate import MODEL_INPUTS, metrics_of, predict
from bertjax.optim import make_optimizer
from bertjax.plots import plot_curves
from bertjax.steps import (
    TrainState,
    compiled_memory,
    make_members_eval_step,
    make_subset_step,
    make_train_step,
    member,
    stack_states,
)

log = logging.getLogger("bertjax")
MEMBER_FIELDS = ("optim.lr", "train.seed")  # what may differ between runs trained together
NAMING_FIELDS = ("name", "workdir")
SELF_SIGNAL = "BERTJAX_SELF_SIGNAL"  # tests: "SIGINT@train:5" sends SIGINT after step 5


def group_key(config) -> str:
    """Configs with equal keys can train together: they differ only in MEMBER_FIELDS and
    naming."""
    resolved = runs.without(runs.config_dict(config), NAMING_FIELDS + MEMBER_FIELDS)
    return json.dumps(resolved, sort_keys=True)


def check_group(configs: list) -> None:
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError("runs trained together may differ only in optim.lr and train.seed")
    if len(configs) > 1:
        check_vectorizable(configs[0])


def check_vectorizable(config) -> None:
    if config.peft.method == "full":
        raise ValueError(
            "--vectorize needs a PEFT method (head, bitfit, lora, adapter): full fine-tuning "
            "would hold a copy of the whole model per run; drop --vectorize"
        )


class StopFlag:
    """SIGINT/SIGTERM become a flag the loop checks after each step, evaluation and save
    (a second one stops at once). `at(phase, step)` sends the signal that $BERTJAX_SELF_SIGNAL
    names ("SIGINT@eval:8") at that point: a real signal at a known step, for tests."""

    def __init__(self):
        self.signal = None
        name, _, where = os.environ.get(SELF_SIGNAL, "").partition("@")
        self._self_signal = (name, where) if name else None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.signal:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s: stopping after the current step (again to stop at once)", self.signal)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def at(self, phase: str, step: int) -> None:
        if self._self_signal and self._self_signal[1] == f"{phase}:{step}":
            os.kill(os.getpid(), signal.Signals[self._self_signal[0]])

    def result(self, step: int) -> dict:
        """What a stopped run returns. exit_status: 128 + the signal number, as a shell
        reports a process the signal ended (SIGINT for a stop agreed with another process
        that got the signal)."""
        name = self.signal or "SIGINT"
        return dict(interrupted_at=step, signal=name, exit_status=128 + signal.Signals[name])


def log_record(step, epoch, split, loss, metrics, examples_per_s, run: runs.Run):
    """One metrics.jsonl line; `elapsed` counts the run's earlier sessions too."""
    return dict(
        step=step,
        epoch=round(epoch, 4),
        split=split,
        loss=None if loss is None else float(loss),
        metrics=metrics,
        examples_per_s=examples_per_s,
        elapsed=round(run.seconds(), 2),
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
    check_group(configs)
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


def _setups(members: list[runs.Run]) -> list[Setup]:
    """Each run's Setup (built once per seed), all on one copy of the frozen base."""
    by_seed, first = {}, {}
    for m in members:
        seed = m.config.train.seed
        if seed not in by_seed:
            setup = by_seed[seed] = build(m.config)
            base = first.setdefault(setup.base_hash, setup)
            if base is not setup:
                _, frozen = peft.partition(base.params, base.mask)
                setup.params = peft.combine(frozen, peft.split(setup.params, setup.mask))
    return [by_seed[m.config.train.seed] for m in members]


def _train_new(members: list[runs.Run], overwrite: bool, max_members: int | None) -> list:
    setups = _setups(members)
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


def _fingerprint(dataset) -> str:
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


def _slots(n: int, cap: int) -> int:
    """Runs in one call, rounded up to a power of two (≤ cap): few compiled shapes."""
    return min(1 << (n - 1).bit_length(), cap)


def _parts(idx: np.ndarray, cap: int) -> list[np.ndarray]:
    return np.array_split(idx, -(-len(idx) // cap))


def plan_calls(groups: list[np.ndarray], k: int, cap: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(take, put) member indices of each call of one step.

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


def _initial_state(members, setups, optimizers) -> TrainState:
    """The runs' states stacked over the member axis: each from its checkpoints/last when
    all stopped at one step, else fresh."""
    _, frozen = peft.partition(setups[0].params, setups[0].mask)
    fresh = []
    for setup, optimizer in zip(setups, optimizers, strict=True):
        trainable = peft.split(setup.params, setup.mask)
        fresh.append(dict(step=jnp.zeros((), jnp.int32), trainable=trainable))
        fresh[-1]["opt_state"] = optimizer.init(trainable)
    saved = [runs.resume(m, like) for m, like in zip(members, fresh, strict=True)]
    steps = {None if tree is None else int(tree["step"]) for tree in saved}
    if len(steps) == 1 and None not in steps:
        trees = saved
        log.info("resumed %s from step %d", ", ".join(str(m.folder) for m in members), *steps)
    else:
        if len(steps) > 1:
            log.warning("the runs stopped at different steps %s: all restart from step 0", steps)
            for m in members:
                runs.truncate_metrics(m.folder, -1)
                m.best, m.last_eval_step = runs.Run(m.config, m.folder).best, -1
                m.past_seconds, m.epoch_seconds = 0.0, []
        trees = fresh
    states = [TrainState(t["step"], t["trainable"], None, t["opt_state"]) for t in trees]
    # A copy of the frozen base: the step donates its state, and finishing needs setup.params.
    return stack_states(states).replace(frozen=jax.tree_util.tree_map(jnp.copy, frozen))


def _loop(members: list[runs.Run], setups: list[Setup], max_members: int | None) -> list:
    """Trains members (one frozen base) to the end, a signal or divergence; their results."""
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
    mesh = sharding.data_mesh()
    sharding.check_batch_size(tc.batch_size, mesh, "train.batch_size")
    sharding.check_batch_size(tc.eval_batch_size, mesh, "train.eval_batch_size")
    state = sharding.put_replicated(_initial_state(members, setups, optimizers), mesh)
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
    widest = {
        key: jax.ShapeDtypeStruct((cap, *longest[key].shape), longest[key].dtype)
        for key in MODEL_INPUTS
    }
    if cap == k:
        memory = compiled_memory(train_step, jax.eval_shape(lambda: state), widest, rngs)
    else:
        take = jax.ShapeDtypeStruct((cap,), jnp.int32)
        memory = compiled_memory(
            subset_step, jax.eval_shape(lambda: state), take, take, widest, rngs
        )
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
        eval_groups.setdefault(_fingerprint(valid), (valid, []))[1].append(i)

    def live() -> list[int]:
        return [i for i, m in enumerate(members) if m.diverged is None]

    def save_last(step: int) -> None:
        for i in live():
            tree = dict(
                step=state.step[i],
                trainable=member(state.trainable, i),
                opt_state=member(state.opt_state, i),
            )
            runs.save_last(members[i], tree, step)
        stop.at("save", step)

    def evaluate(step: int) -> None:
        stop.at("eval", step)
        for valid, idx in eval_groups.values():
            for part in _parts(np.asarray([i for i in idx if i in live()]), cap):
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
                    runs.append_metrics(m.folder, record)
                    value = metrics[tc.select_metric]
                    if value > m.best["value"]:
                        m.best = dict(value=value, step=step, metrics=metrics)
                        runs.save_best(m, step, metrics, member(trainables, j))
                    m.last_eval_step = step
                    if k == 1:
                        log.info("step %d validation: %s", step, json.dumps(metrics))
        save_last(step)

    def log_window(step: int, window: list, started: float) -> None:
        losses = np.asarray(jnp.mean(jnp.stack(window), axis=0))  # the only host sync
        speed = round(len(window) * tc.batch_size / (time.time() - started), 1)  # per run
        for i in live():
            m = members[i]
            if not math.isfinite(losses[i]):
                m.diverged = (
                    f"loss is {losses[i]} at step {step}; stopped, the last good checkpoint is "
                    f"{m.checkpoints / 'last'} (try a lower --config.optim.lr)"
                )
                log.error("%s: %s", m.folder, m.diverged)
                continue
            record = log_record(step, step / steps_per_epoch, "train", losses[i], {}, speed, m)
            runs.append_metrics(m.folder, record)

    def take_step(state, batch: dict):
        """One step of every member; losses [K] (on device)."""
        lengths = {}
        for s in seeds:
            lengths.setdefault(batch[s]["input_ids"].shape, []).append(s)
        if len(lengths) == 1:  # one length: one call of the whole stacked state
            stacked = {
                key: np.stack([batch[m.config.train.seed][key] for m in members])
                for key in MODEL_INPUTS
            }
            if cap == k:
                state, metrics = train_step(state, sharding.put_batch(stacked, mesh, axis=1), rngs)
                return state, metrics["loss"]
        losses = jnp.zeros(k, jnp.float32)
        groups = [np.concatenate([of_seed[s] for s in g]) for g in lengths.values()]
        for take, put in plan_calls(groups, k, cap):
            stacked = {
                key: np.stack([batch[members[i].config.train.seed][key] for i in take])
                for key in MODEL_INPUTS
            }
            state, metrics = subset_step(
                state, take, put, sharding.put_batch(stacked, mesh, axis=1), rngs
            )
            losses = losses.at[put].set(metrics["loss"], mode="drop")
        return state, losses

    def interrupted(step: int) -> dict:
        if saved_step != step:
            save_last(step)
        log.warning(
            "%s at step %d: saved checkpoints/last; re-run the same command to resume",
            stop.signal or "a signal to another process",
            step,
        )
        return stop.result(step)

    step = saved_step = int(state.step[0])
    stopping = False
    with StopFlag() as stop:
        if _is_eval_point(step, steps_per_epoch, total_steps, tc.eval_every) and any(
            m.last_eval_step != step for m in members
        ):
            evaluate(step)  # the run stopped before evaluating this step
        while step < total_steps and live() and not stopping:
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
            epoch_start, window, window_start, previous = time.time(), [], time.time(), None
            for _ in range(steps_per_epoch - skip):
                state, losses = take_step(state, {s: next(batches[s]) for s in seeds})
                step += 1
                if previous is not None:  # the step before: done by now, so no stall
                    shown = np.asarray(previous)[live()].mean()
                    bar.set_postfix(loss=f"{shown:.4f}", refresh=False)
                previous = losses
                window.append(losses)
                bar.update(1)
                stop.at("train", step)
                if step % log_every == 0 or step % steps_per_epoch == 0 or step == total_steps:
                    log_window(step, window, window_start)
                    window, window_start = [], time.time()
                if step % steps_per_epoch == 0 or step == total_steps:
                    for m in members:
                        m.epoch_seconds.append(round(time.time() - epoch_start, 2))
                if _is_eval_point(step, steps_per_epoch, total_steps, tc.eval_every) and live():
                    evaluate(step)
                    saved_step = step
                # Processes agree at log steps (no host sync in between): a signal to one
                # stops all at the same step.
                stopping = distributed.agreed_stop(stop.signal is not None, step, log_every)
                if stopping or step >= total_steps or not live():
                    break
            bar.close()
        frozen = peft.partition(setup.params, setup.mask)[1]
        results = []
        for m, s in zip(members, setups, strict=True):
            if m.diverged is not None:
                results.append(dict(diverged_at=step, error=m.diverged))
            elif not stopping:
                summary = _finish(m, s, frozen, eval_step, mesh, steps_per_epoch, peak_memory_mb)
                stopping = distributed.agreed_stop(stop.signal is not None, 0, 1)
                results.append(None if stopping else summary)  # a signal mid-test: redo
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
    run: runs.Run, setup: Setup, frozen, eval_step, mesh, steps_per_epoch, peak_memory_mb
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
    )
    runs.write_json(run.folder / runs.SUMMARY_FILE, summary)
    plot_curves(records, run.folder / runs.CURVES_FILE, title=config.name)
    return summary
