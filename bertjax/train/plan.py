"""The plan of a training loop, built once: step arithmetic, the batch source, the compiled
steps and their memory, evaluation groups; and the runs' initial state."""

import dataclasses
import logging
import math
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

import peft
from bertjax import runs
from bertjax.data import batching, packing
from bertjax.models.precision import describe_dtype
from bertjax.parallel import sharding
from bertjax.train import groups
from bertjax.train.build import Setup, distill_of
from bertjax.train.evaluate import MODEL_INPUTS, Evaluator, evaluator_of, model_inputs
from bertjax.train.optim import learning_rate_schedule, make_optimizer
from bertjax.train.steps import (
    TrainState,
    copy_tree,
    init_opt_state,
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


@dataclasses.dataclass(frozen=True)
class Schedule:
    """When a run of `total_steps` steps logs, evaluates and ends its epochs."""

    steps_per_epoch: int
    total_steps: int
    log_every: int
    eval_every: int | None = None
    accumulate: int = 1

    @property
    def updates(self) -> int:
        """Optimizer updates (one per `accumulate` steps; a partial last one counts)."""
        return math.ceil(self.total_steps / self.accumulate)

    def epoch(self, step: int) -> float:
        return step / max(self.steps_per_epoch, 1)

    def steps_in_epoch(self, epoch: int) -> int:
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)

    def is_epoch_end(self, step: int) -> bool:
        return step % self.steps_per_epoch == 0 or step == self.total_steps

    def is_log_point(self, step: int) -> bool:
        """Train records: every log_every steps and at each epoch's end."""
        return step % self.log_every == 0 or self.is_epoch_end(step)

    def is_eval_point(self, step: int) -> bool:
        """Evaluations: at each epoch's end, at the last step, and every eval_every steps."""
        if step == 0:
            return False
        return self.is_epoch_end(step) or bool(self.eval_every and step % self.eval_every == 0)


# Without train.eval_every a run evaluates at each epoch's end and, when that is fewer than
# this many times, as often as this over the run (a learning curve with a few points), for
# runs long enough to leave MIN_EVAL_GAP steps between evaluations.
MIN_EVALS, MIN_EVAL_GAP = 4, 5


def default_eval_every(steps_per_epoch: int, total_steps: int) -> int | None:
    """None (each epoch's end is enough) or the steps between evaluations that give a
    default run MIN_EVALS of them."""
    epoch_ends = math.ceil(total_steps / max(steps_per_epoch, 1))
    gap = math.ceil(total_steps / MIN_EVALS)
    if epoch_ends >= MIN_EVALS or gap < MIN_EVAL_GAP:
        return None
    return gap


def schedule_of(steps_per_epoch: int, tc, accumulate: int = 1) -> Schedule:
    """The Schedule of a config's train section (tc) for an epoch of `steps_per_epoch`:
    max_steps or epochs of them; log_every by default ~20 records an epoch, 1 to 50 apart;
    eval_every by default default_eval_every's."""
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    log_every = tc.log_every or max(1, min(50, steps_per_epoch // 20))
    eval_every = tc.eval_every or default_eval_every(steps_per_epoch, total_steps)
    return Schedule(steps_per_epoch, total_steps, log_every, eval_every, accumulate)


def check_accumulation(config, train_set) -> None:
    """Refuses a train split smaller than one batch and an optim.accumulate larger than the
    run's steps (no update would complete); warns of a partial last accumulation, whose
    micro-steps' gradients are never applied."""
    steps_per_epoch = batching.num_train_batches(train_set, config.train.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"the train split has {len(train_set)} examples, fewer than one batch "
            f"(train.batch_size={config.train.batch_size}): no train step would run; lower "
            "train.batch_size or give more training data"
        )
    schedule = schedule_of(steps_per_epoch, config.train, config.optim.accumulate)
    total, every = schedule.total_steps, schedule.accumulate
    if total < every:
        raise ValueError(
            f"optim.accumulate={every} is more than the run's {total} steps: no optimizer "
            "update would be applied; lower optim.accumulate or train longer"
        )
    if total % every:
        log.warning(
            "the last %d of %d steps are a partial accumulation (optim.accumulate=%d): their "
            "gradients are not applied; make the steps a multiple of %d to use them",
            total % every,
            total,
            every,
            every,
        )


@dataclasses.dataclass(frozen=True)
class Batches:
    """The train batches of runs trained together: one train set per seed."""

    train_sets: dict  # seed -> tokenized train split
    batch_size: int
    buckets: tuple[int, ...]
    pad_id: int
    packing: bool

    @property
    def first(self):
        return self.train_sets[min(self.train_sets)]

    def epoch(self, epoch: int, skip: int) -> dict:
        """seed -> the iterator of its batches of `epoch`, from batch `skip` on."""
        return {
            seed: batching.train_batches(
                dataset,
                self.batch_size,
                self.buckets,
                seed,
                epoch,
                pad_id=self.pad_id,
                skip=skip,
                packing=self.packing,
            )
            for seed, dataset in sorted(self.train_sets.items())
        }

    def longest(self, num_labels: int) -> dict:
        return batching.longest_batch(
            self.first, self.batch_size, self.buckets, num_labels, self.packing
        )

    def padding_stats(self) -> dict:
        return batching.padding_stats(
            self.first, self.batch_size, self.buckets, packing=self.packing
        )


def batches_of(members: list[runs.Run], setups: list[Setup]) -> Batches:
    config, setup = members[0].config, setups[0]
    train_sets = {
        m.config.train.seed: s.splits["train"] for m, s in zip(members, setups, strict=True)
    }
    if len({len(ds) for ds in train_sets.values()}) != 1:
        raise ValueError("runs trained together need train sets of one size")
    packed = packing.enabled(config.data.get("packing", False), setup.model)
    return Batches(train_sets, config.train.batch_size, setup.buckets, setup.pad_id, packed)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a loop over K members (one frozen base) fixes before its first step."""

    schedule: Schedule
    batches: Batches
    k: int
    cap: int  # members per call of the step
    seed_of: np.ndarray  # [K] each member's seed (its data and dropout)
    of_seed: dict  # seed -> indices of the members trained on its data
    rngs: jax.Array  # [K] dropout keys
    mesh: object
    train_step: object  # (state, batch [K, …], rngs) -> (state, metrics)
    subset_step: object  # (state, take, put, batch, rngs) -> (state, metrics); None for K = 1
    evaluator: Evaluator  # of every member (stacked trainables)
    eval_groups: list  # (validation split, member indices): one call for members sharing one
    peak_lrs: np.ndarray  # [K]
    unit_lrs: np.ndarray  # [update] the schedule's factor of the peak learning rate
    peak_memory_mb: float | None
    num_labels: int
    train_inputs: tuple = MODEL_INPUTS  # the train batches' fields the step takes


def eval_groups_of(setups: list[Setup]) -> list:
    """(validation split, member indices) per distinct validation split."""
    found = {}
    for i, s in enumerate(setups):
        valid = s.splits["validation"]
        found.setdefault(groups.fingerprint(valid), (valid, []))[1].append(i)
    return list(found.values())


def unit_lrs(optim_config, updates: int) -> np.ndarray:
    """[updates + 1] make_optimizer's schedule at peak 1.0, each update's factor, computed
    in one program on the CPU (evaluated at each log step, it would compile ~10 eager ops
    and wait behind the train steps)."""
    schedule = learning_rate_schedule(optim_config, updates)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        return np.asarray(jax.jit(jax.vmap(schedule))(np.arange(updates + 1)))


def initial_state(members, setups, optimizers) -> tuple[TrainState, int]:
    """The runs' states stacked over the member axis and the step to go on from: each from
    its checkpoints/last when those still training all stopped at one step, else fresh.
    A run stopped early keeps the state it stopped with (inactive)."""
    _, frozen = peft.partition(setups[0].params, setups[0].mask)
    fresh = []
    for setup, optimizer in zip(setups, optimizers, strict=True):
        trainable = peft.split(setup.params, setup.mask)
        fresh.append(dict(step=jax.device_put(np.int32(0)), trainable=trainable))
        fresh[-1]["opt_state"] = init_opt_state(optimizer, trainable)
    saved = [runs.resume(m, like) for m, like in zip(members, fresh, strict=True)]
    going = [tree for m, tree in zip(members, saved, strict=True) if m.status.stopped is None]
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
        TrainState(t["step"], t["trainable"], None, t["opt_state"], m.status.stopped is None)
        for m, t in zip(members, trees, strict=True)
    ]
    # A copy of the frozen base: the step donates its state, and finishing needs setup.params.
    state = stack_states(states).replace(frozen=copy_tree(frozen))
    return state, start


def train_inputs_of(distill) -> tuple[str, ...]:
    """The train batch fields the step takes: the model's inputs, and the teacher's logits
    when distilling (evaluation keeps MODEL_INPUTS)."""
    return MODEL_INPUTS + ((batching.SOFT_TARGETS,) if distill is not None else ())


def compiled_steps(
    model, optimizer, mesh, state, longest: dict, cap: int, rngs, distill=None
) -> tuple:
    """(train_step, subset_step or None for one member, peak MiB or None): the call used
    for `cap` members at the `longest` batch is compiled ahead for XLA's memory figure, with
    the live state (not its abstract shape), so those calls run it without compiling again.
    `distill`: the loss settings (train/distill.py) of a distillation run, else None."""
    k = len(rngs)
    train_step = make_train_step(model, optimizer, mesh, distill)
    subset_step = make_subset_step(model, optimizer, mesh, distill) if k > 1 else None
    widest = stacked({key: longest[key] for key in train_inputs_of(distill)}, cap)
    if cap == k:
        train_step, compiled = precompiled(train_step, state, widest, rngs)
    else:
        take = jax.ShapeDtypeStruct((cap,), jnp.int32)
        subset_step, compiled = precompiled(subset_step, state, take, take, widest, rngs)
    memory = memory_stats(compiled)
    return train_step, subset_step, round(memory["total"] / 2**20, 1) if memory else None


def ahead_evaluator(evaluator: Evaluator, state: TrainState, valid, idx: list, cap: int):
    """`evaluator` with its eval step compiled ahead for the run's first evaluation call: the
    first batch of `valid` and the members of the first call for members idx (≤ cap of
    them), as `loop.evaluate` makes it; other shapes compile when first met."""
    first = next(iter(evaluator.batches(valid)), None)
    if first is None:
        return evaluator
    trainables = member(state.trainable, groups.split(np.asarray(idx), cap)[0])
    inputs = sharding.put_batch(model_inputs(first), evaluator.mesh)
    call, _ = precompiled(evaluator.eval_step, trainables, state.frozen, inputs)
    return dataclasses.replace(evaluator, eval_step=call)


def import_for_finishing() -> None:
    """Imports Orbax (the first checkpoint) and matplotlib's Figure and Agg canvas (the
    curves), which every run uses but only after training (~0.6 s of a cold start-up);
    `make_plan` runs it on an idle core while the train step compiles."""
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import orbax.checkpoint  # noqa: F401


def make_plan(members: list[runs.Run], setups: list[Setup], max_members: int | None):
    """(plan, stacked state on the mesh, step to go on from) of training `members` (one
    frozen base) at most `max_members` per call of the step."""
    k, config, setup = len(members), members[0].config, setups[0]
    tc, model = config.train, setup.model
    batches = batches_of(members, setups)
    steps_per_epoch = batching.num_train_batches(batches.first, tc.batch_size)
    schedule = schedule_of(steps_per_epoch, tc, config.optim.accumulate)
    optimizers = [make_optimizer(m.config.optim, schedule.updates) for m in members]
    mesh = sharding.data_mesh()
    sharding.check_batch_size(tc.batch_size, mesh, "train.batch_size")
    sharding.check_batch_size(tc.eval_batch_size, mesh, "train.eval_batch_size")
    state, start_step = initial_state(members, setups, optimizers)
    state = sharding.put_replicated(state, mesh)
    cap = min(max_members or k, k)
    rngs = jnp.stack([jax.random.key(m.config.train.seed) for m in members])
    longest = batches.longest(model.num_labels)
    distill = distill_of(config)
    evaluator = evaluator_of(config, setup, make_members_eval_step(model, mesh), mesh)
    eval_groups = eval_groups_of(setups)
    # XLA's compile of the train step releases the GIL and leaves part of the cores idle
    # (~1.6 of 2 busy): the first evaluation's program compiles on a second thread meanwhile
    # (cold, ~0.5 s off the run's start-up), then that thread imports what the run's first
    # checkpoint and its curves will need
    with ThreadPoolExecutor(1) as pool:
        ahead = pool.submit(ahead_evaluator, evaluator, state, *eval_groups[0], cap)
        pool.submit(import_for_finishing)
        train_step, subset_step, peak_mb = compiled_steps(
            model, optimizers[0], mesh, state, longest, cap, rngs, distill
        )
        evaluator = ahead.result()
    seed_of = np.array([m.config.train.seed for m in members])
    plan = Plan(
        schedule=schedule,
        batches=batches,
        k=k,
        cap=cap,
        seed_of=seed_of,
        of_seed={s: np.flatnonzero(seed_of == s) for s in sorted(batches.train_sets)},
        rngs=rngs,
        mesh=mesh,
        train_step=train_step,
        subset_step=subset_step,
        evaluator=evaluator,
        eval_groups=eval_groups,
        peak_lrs=np.array([m.config.optim.lr for m in members]),
        unit_lrs=unit_lrs(config.optim, schedule.updates),
        peak_memory_mb=peak_mb,
        num_labels=model.num_labels,
        train_inputs=train_inputs_of(distill),
    )
    _announce(plan, members)
    return plan, state, start_step


def _announce(plan: Plan, members: list[runs.Run]) -> None:
    stats = plan.batches.padding_stats()
    lrs = sorted({m.config.optim.lr for m in members})
    seeds = sorted(plan.of_seed)
    log.info(
        "%s: %d train examples, %d steps; %d batch shapes, %.1f%% padding; train step at the "
        "longest batch: %s MiB (XLA)",
        members[0].folder if plan.k == 1 else f"{plan.k} runs (lr {lrs}, seed {seeds})",
        len(plan.batches.first),
        plan.schedule.total_steps,
        stats["num_shapes"],
        100 * stats["pad_fraction"],
        plan.peak_memory_mb,
    )
    log.info("dtype %s", describe_dtype(members[0].config.dtype))
