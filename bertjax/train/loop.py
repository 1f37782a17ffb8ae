"""The training loop: K ≥ 1 runs of one config (differing only in learning rate and seed)
trained by one jitted step, each into its own run folder.

K = 1 is a plain run. K > 1 (`sweep.py --vectorize`) stacks the runs' trainable parameters,
optimizer states (holding each run's learning rate), data and dropout keys along a member
axis over one shared frozen base. Runs keep their own data (seeded subset and order), so at a
step their batches may differ in length; padding them to one length would change the dropout
masks, so each length takes its own call and every run computes what it computes alone, up
to float rounding of the batched matmuls.
"""

import contextlib
import dataclasses
import gc
import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import peft
from bertjax import runs
from bertjax.parallel import distributed, sharding
from bertjax.runs import events
from bertjax.runs.events import log_record
from bertjax.train import checks, distill, groups, progress, stopping, teacher
from bertjax.train.build import Setup
from bertjax.train.evaluate import MODEL_INPUTS, metrics_of
from bertjax.train.finish import finish
from bertjax.train.plan import Plan, check_accumulation, make_plan
from bertjax.train.steps import TrainState, member

log = logging.getLogger("bertjax")
__all__ = ["log_record", "train", "train_runs"]


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
            with settled_heap():
                trained = _train_new([members[i] for i in todo], overwrite, max_members)
            results.update(zip(todo, trained, strict=True))
    return [results[i] for i in range(len(members))]


@contextlib.contextmanager
def settled_heap():
    """Inside, `settle_heap()` may freeze what is alive; after, it is collectable again (a
    library caller goes on), unless the caller had frozen objects itself, and the garbage
    frozen with it is collected (else it waits in the oldest generation: ~7,000 objects and
    ~10 MB more per in-process run)."""
    frozen_before = gc.get_freeze_count()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()
            gc.collect()


def settle_heap() -> None:
    """Every object the cyclic garbage collector tracks into its permanent generation: what
    loading and compiling leave alive (modules, datasets, weights, programs) stays to the end
    of the run, and each later full collection would scan all of it again (~1 s of a whole
    run's time; bench/RESULTS.md, session 16). No collection first (it would cost as much):
    garbage frozen with them waits for `settled_heap`'s end."""
    gc.freeze()


def _train_new(members: list[runs.Run], overwrite: bool, max_members: int | None) -> list:
    settle_heap()  # the imports
    setups = groups.shared_setups(members)
    settle_heap()  # the data, tokenizer and weights
    check_accumulation(members[0].config, setups[0].splits["train"])
    for m, setup in zip(members, setups, strict=True):
        # sha256: frozen weights and tokenizer; weights_sha256: the weights alone (what runs
        # written before the tokenizer joined the fingerprint recorded)
        base = dict(model=m.config.model, sha256=setup.base_hash, weights_sha256=setup.weights_hash)
        runs.start(m, setup.label_names, base, overwrite)
    distributed.barrier("started")  # process 0 wrote (or emptied) the folders
    teacher.add_soft_targets(members, setups)  # distillation: the teacher's logits, cached
    if distill.on_transfer_texts(members[0].config):
        check_accumulation(members[0].config, setups[0].splits["train"])  # transfer texts
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


@dataclasses.dataclass
class Progress:
    """The loop's moving parts: the stacked state, its step, the step checkpoints/last was
    saved at, the members the state trains (as last put on the device) and whether every
    process agreed to stop."""

    state: TrainState
    step: int
    saved_step: int
    active: np.ndarray
    halt: bool = False


def _loop(members: list[runs.Run], setups: list[Setup], max_members: int | None) -> list:
    """Trains members (one frozen base) to the end, a signal, divergence or early stopping;
    their results."""
    plan, state, start = make_plan(members, setups, max_members)
    settle_heap()  # the compiled programs
    active = np.array([m.status.stopped is None for m in members])  # as make_plan made it
    run = Progress(state, start, start, active)
    with stopping.StopFlag() as stop, events.writers(members, start) as writers:
        unevaluated = any(members[i].status.last_eval_step != start for i in live(members))
        if plan.schedule.is_eval_point(start) and unevaluated:
            evaluate_and_save(plan, members, run, writers, stop)  # stopped before evaluating
            follow_members(plan, members, run)
        while run.step < plan.schedule.total_steps and live(members) and not run.halt:
            run_epoch(plan, members, run, writers, stop)
        return finish_all(plan, members, setups, run, writers, stop)


def live(members: list[runs.Run]) -> list[int]:
    """Indices of the members still training."""
    return [i for i, m in enumerate(members) if m.training]


def run_epoch(plan: Plan, members, run: Progress, writers, stop) -> None:
    """The rest of the epoch `run.step` is in (or less: a signal, the end, no member left)."""
    schedule = plan.schedule
    epoch, skip = divmod(run.step, schedule.steps_per_epoch)
    batches = plan.batches.epoch(epoch, skip)
    bar = tqdm(
        total=schedule.steps_in_epoch(epoch),
        initial=skip,
        desc=f"epoch {epoch + 1}" + (f" ×{plan.k}" if plan.k > 1 else ""),
        unit="step",
        smoothing=0.05,
        disable=None,
    )
    meter = progress.Progress(  # off a tty
        f"epoch {epoch + 1}", schedule.steps_in_epoch(epoch), initial=skip
    )
    epoch_start, window, window_start, previous = time.time(), {}, time.time(), None
    for done in range(skip + 1, schedule.steps_per_epoch + 1):
        run.state, metrics = take_step(plan, run.state, {s: next(b) for s, b in batches.items()})
        run.step += 1
        step = run.step
        if previous is not None:  # the step before: done by now, so no stall
            bar.set_postfix(loss=f"{np.asarray(previous)[live(members)].mean():.4f}", refresh=False)
        previous = metrics["loss"]
        for key, value in metrics.items():
            window.setdefault(key, []).append(value)
        bar.update(1)
        meter.update(done, (done - skip) * plan.batches.batch_size)
        stop.at("train", step)
        if schedule.is_log_point(step):
            log_window(plan, members, step, window, time.time() - window_start, writers)
            window, window_start = {}, time.time()
        if schedule.is_epoch_end(step):
            for i in live(members):
                members[i].status.epoch_seconds.append(round(time.time() - epoch_start, 2))
        if schedule.is_eval_point(step) and live(members):
            evaluate_and_save(plan, members, run, writers, stop)
            run.saved_step = step
        follow_members(plan, members, run)
        # Processes agree at log steps (no host sync in between): a signal to one stops all
        # at the same step.
        run.halt = distributed.agreed_stop(stop.signal is not None, step, schedule.log_every)
        if run.halt or step >= schedule.total_steps or not live(members):
            break
    bar.close()


def take_step(plan: Plan, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One step of every member (batch: seed -> its batch); the state and the step's
    metrics (loss and grad_norm [K], on device)."""
    shapes = {s: tuple(b[key].shape for key in MODEL_INPUTS) for s, b in batch.items()}
    calls = groups.step_calls(shapes, plan.of_seed, plan.k, plan.cap)
    seed_of = plan.seed_of
    if calls is None:  # one length: one call of the whole stacked state
        inputs = {key: np.stack([batch[s][key] for s in seed_of]) for key in plan.train_inputs}
        return plan.train_step(state, sharding.put_batch(inputs, plan.mesh, axis=1), plan.rngs)
    metrics = {key: jnp.zeros(plan.k, jnp.float32) for key in ("loss", "grad_norm")}
    for take, put in calls:
        inputs = {
            key: np.stack([batch[seed_of[i]][key] for i in take]) for key in plan.train_inputs
        }
        inputs = sharding.put_batch(inputs, plan.mesh, axis=1)
        state, part = plan.subset_step(state, take, put, inputs, plan.rngs)
        for key in metrics:
            metrics[key] = metrics[key].at[put].set(part[key], mode="drop")
    return state, metrics


def log_window(plan: Plan, members, step: int, window: dict, seconds: float, writers) -> list:
    """Train records of the live members over the steps since the last (window: key -> the
    steps' [K] device metrics); a member whose mean loss is not finite diverges instead.
    The records written."""
    means = {key: np.mean(values, 0) for key, values in jax.device_get(window).items()}
    speed = round(len(window["loss"]) * plan.batches.batch_size / seconds, 1)  # per run
    update = min((step - 1) // plan.schedule.accumulate, len(plan.unit_lrs) - 1)
    unit = float(plan.unit_lrs[update])
    written = []
    for i in live(members):
        m, loss = members[i], float(means["loss"][i])
        m.status.diverged = stopping.divergence(loss, step, m.checkpoints / "last")
        if m.status.diverged is not None:
            log.error("%s: %s", m.folder, m.status.diverged)
            continue
        extra = dict(lr=float(plan.peak_lrs[i] * unit), grad_norm=float(means["grad_norm"][i]))
        epoch = plan.schedule.epoch(step)
        written.append(log_record(step, epoch, "train", loss, {}, speed, m, **extra))
        writers[i].write(written[-1])
    return written


def evaluate_and_save(plan: Plan, members, run: Progress, writers, stop) -> None:
    """Validation of the live members, then their checkpoints/last."""
    stop.at("eval", run.step)
    evaluated = evaluate(plan, members, run.state, run.step, writers)
    save_last(members, run.state, run.step, evaluated, stop)


def evaluate(plan: Plan, members, state: TrainState, step: int, writers) -> list[int]:
    """Validation records of the members still training, their best checkpoints and early
    stopping; the members evaluated (members sharing a validation set in calls of ≤ cap)."""
    evaluated = live(members)
    for valid, idx in plan.eval_groups:
        for part in groups.split(np.asarray([i for i in idx if i in evaluated]), plan.cap):
            if len(part):
                _evaluate_part(plan, members, state, step, valid, part, writers)
    return evaluated


def _evaluate_part(plan: Plan, members, state, step: int, valid, part, writers) -> None:
    trainables = member(state.trainable, part)
    n, num_labels = len(part), plan.num_labels
    logits = plan.evaluator.logits(
        trainables, state.frozen, valid, n * num_labels, desc=f"validation @ {step}"
    ).reshape(len(valid), n, num_labels)
    labels = np.asarray(valid["label"])
    for j, i in enumerate(part):
        metrics = metrics_of(logits[:, j], labels, num_labels)
        loss = metrics.pop("loss")
        epoch = plan.schedule.epoch(step)
        writers[i].write(log_record(step, epoch, "validation", loss, metrics, None, members[i]))
        judge(members[i], step, metrics, member(trainables, j))
        if plan.k == 1:
            log.info("step %d validation: %s", step, json.dumps(metrics))


def judge(run: runs.Run, step: int, metrics: dict, trainable) -> None:
    """An evaluation's consequences for `run`: a new best (saved to checkpoints/best),
    early stopping, the step of its last evaluation."""
    status, tc = run.status, run.config.train
    value, best_before = metrics[tc.select_metric], status.best["value"]
    if stopping.update_best(status, value, step, metrics):
        runs.save_best(run, step, metrics, trainable)
    stopping.early_stopping(run, value, best_before, step, tc)
    if status.stopped is not None:
        log.warning("%s: stopped early at step %d: %s", run.folder, step, status.stopped)
    status.last_eval_step = step


def save_last(members, state: TrainState, step: int, idx: list[int], stop) -> None:
    """checkpoints/last of the members `idx` at `step`."""
    for i in idx:
        tree = dict(
            step=state.step[i],
            trainable=member(state.trainable, i),
            opt_state=member(state.opt_state, i),
        )
        runs.save_last(members[i], tree, step)
    stop.at("save", step)


def follow_members(plan: Plan, members, run: Progress) -> None:
    """Puts the members still training (early stops, divergence) into the state's `active`
    when they changed; compared on the host, since reading state.active would wait for the
    step."""
    now = np.array([m.training for m in members])
    if (now == run.active).all():
        return
    run.active = now
    run.state = run.state.replace(active=sharding.put_replicated(jnp.asarray(now), plan.mesh))


def finish_all(plan: Plan, members, setups, run: Progress, writers, stop) -> list:
    """Each member's result: its summary (finished), its divergence, or, after a signal
    (also one mid-finishing), the interruption (checkpoints/last saved)."""
    frozen = peft.partition(setups[0].params, setups[0].mask)[1]
    results = []
    for i, (m, s) in enumerate(zip(members, setups, strict=True)):
        if m.status.diverged is not None:
            results.append(dict(diverged_at=run.step, error=m.status.diverged))
        elif not run.halt:
            summary = finish(m, s, frozen, plan, writers[i])
            run.halt = distributed.agreed_stop(stop.signal is not None, 0, 1)
            results.append(None if run.halt else summary)  # a signal mid-test: redo
        else:
            results.append(None)
    if None in results:
        if run.saved_step != run.step:
            save_last(members, run.state, run.step, live(members), stop)
        log.warning(
            "%s at step %d: saved checkpoints/last; re-run the same command to resume",
            stop.signal or "a signal to another process",
            run.step,
        )
        result = stop.result(run.step)
        results = [result if r is None else r for r in results]
    return results
