"""Pure, jit-compiled train and eval steps; gradients only for the trainable partition."""

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

import peft
from bertjax.data import packing
from bertjax.models.families import family_of_model
from bertjax.parallel import sharding
from bertjax.train.distill import Distill, distill_loss


@flax.struct.dataclass
class TrainState:
    """step: optimizer micro-steps taken; trainable/frozen: the two halves of the params
    (`peft.partition`); opt_state: optimizer state of the trainable half only; active: False
    for a member the step leaves exactly as it is (stopped early or diverged)."""

    step: jax.Array
    trainable: Any
    frozen: Any
    opt_state: Any
    active: Any = True

    @property
    def params(self):
        return peft.combine(self.frozen, self.trainable)


def init_state(params, mask, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh state of one run, stacked as a group of K = 1 (see `make_train_step`); copies
    `params`, since the train step donates (deletes) its input."""
    trainable, frozen = peft.partition(copy_tree(params), mask)
    step = jax.device_put(np.int32(0))
    state = TrainState(step, trainable, None, init_opt_state(optimizer, trainable))
    return stack_states([state]).replace(frozen=frozen)


def copy_tree(tree):
    """A copy of every array in `tree` (for a state the step will donate), made without
    compiling anything (jnp.copy compiles one program per leaf shape)."""
    return jax.device_put(tree, may_alias=False)


def init_opt_state(optimizer: optax.GradientTransformation, trainable):
    """optimizer.init(trainable) as one compiled program (eagerly, each leaf shape compiles
    its own zeros)."""
    return jax.jit(optimizer.init)(trainable)


def loss_fn(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean cross-entropy (num_labels ≥ 2) or squared error (num_labels == 1).

    logits [examples, num_labels]; labels, weights: [examples], or [rows, E] of packed rows
    (flattened here; weight 0 for padding rows and empty slots).
    """
    labels, weights = labels.reshape(-1), weights.reshape(-1)
    if logits.shape[-1] == 1:
        per_example = (logits[:, 0] - labels.astype(jnp.float32)) ** 2
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


PACKED_INPUTS = ("segment_ids", "position_ids", "cls_index")


def _logits(model, params, batch, deterministic: bool, rng=None) -> jax.Array:
    """Logits [examples, num_labels]: [batch, …] of plain batches, [rows · E, …] of packed
    ones (bertjax/data/packing.py), whose extra inputs go to the models that take them; the
    last layer computes only the first tokens where the family can (Family.first_tokens)."""
    rngs = None if deterministic else {"dropout": rng}
    packed = {}
    if packing.supported(model):
        packed = {key: batch[key] for key in PACKED_INPUTS if key in batch}
    if family_of_model(model).first_tokens:
        packed["first_tokens_only"] = True
    logits = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        deterministic=deterministic,
        rngs=rngs,
        **packed,
    ).logits
    return logits.reshape(-1, logits.shape[-1])


def _jit(fn, mesh: Mesh | None, inputs: tuple, outputs, **kwargs):
    """jax.jit; with a mesh, "batch" arguments are split by rows over it ("members" ones by
    their second axis, the first being the member axis), the rest replicated."""
    if mesh is None:
        return jax.jit(fn, **kwargs)
    make = {
        "batch": lambda: sharding.batch_sharding(mesh),
        "members": lambda: sharding.batch_sharding(mesh, axis=1),
        "replicated": lambda: sharding.replicated(mesh),
    }
    shardings = jax.tree_util.tree_map(lambda kind: make[kind](), (inputs, outputs))
    return jax.jit(fn, in_shardings=shardings[0], out_shardings=shardings[1], **kwargs)


# The member axis: trainable state, optimizer state (holding each run's learning rate), step,
# data and dropout key are stacked; the frozen base is shared.
MEMBER_AXES = TrainState(step=0, trainable=0, frozen=None, opt_state=0, active=0)


def _train_step(model, optimizer: optax.GradientTransformation, distill: Distill | None = None):
    """One run's step(state, batch, rng) -> (state, metrics), not jitted."""

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        dropout_rng = jax.random.fold_in(rng, state.step)

        def objective(trainable):
            params = peft.combine(state.frozen, trainable)
            logits = _logits(model, params, batch, deterministic=False, rng=dropout_rng)
            loss = loss_fn(logits, batch["labels"], batch["weights"])
            if distill is not None:  # soft targets: batch["teacher_logits"] (train/distill.py)
                soft, weights = batch["teacher_logits"], batch["weights"]
                loss = distill_loss(loss, logits, soft, weights, **dataclasses.asdict(distill))
            return loss

        loss, grads = jax.value_and_grad(objective)(state.trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
        new = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state)
        return _per_member(lambda n, old: jnp.where(state.active, n, old), new, state), metrics

    return train_step


def _members_step(model, optimizer: optax.GradientTransformation, distill=None):
    """One run's step under vmap over the member axis (the frozen base shared). A single
    member (a plain run) takes the step without vmap, on its state and batch taken out of
    the member axis: the same computation with a third less to trace (vmap's batching
    interpreter wraps every primitive), and XLA sees no size-1 batch dimensions."""
    step = _train_step(model, optimizer, distill)
    batched = jax.vmap(step, in_axes=(MEMBER_AXES, 0, 0), out_axes=(MEMBER_AXES, 0))

    def members_step(state: TrainState, batches: dict, rngs: jax.Array):
        if rngs.shape[0] > 1:
            return batched(state, batches, rngs)
        first = _per_member(lambda x: x[0], state)
        new, metrics = step(first, _first(batches), rngs[0])
        return _per_member(lambda x: x[None], new), _with_member_axis(metrics)

    return members_step


def _first(tree):
    """The only member of a tree stacked over one member."""
    return jax.tree_util.tree_map(lambda x: x[0], tree)


def _with_member_axis(tree):
    return jax.tree_util.tree_map(lambda x: x[None], tree)


def make_train_step(
    model,
    optimizer: optax.GradientTransformation,
    mesh: Mesh | None = None,
    distill: Distill | None = None,
):
    """train_step(state, batches, rngs) -> (state, metrics) for K ≥ 1 runs at once.

    state: TrainState stacked over K members along a leading axis (`stack_states`), frozen
    shared; batches: model inputs [K, batch, len]; rngs: [K] keys; metrics: loss [K] and
    grad_norm [K] (before clipping). A member whose `state.active` is False keeps its step,
    trainable and optimizer state as they were. It is one run's step (under `vmap` for
    K > 1), jitted with the state donated. Only
    `state.trainable` is differentiated: frozen weights enter as constants of the backward
    pass, so XLA never computes their weight gradients. With a `mesh`, every member's batch
    is split by rows over its devices (data parallel) and the state is replicated; XLA
    inserts the gradient all-reduce. `distill`: the loss mixes in soft targets, the
    batches' "teacher_logits" [K, batch, num_labels] (bertjax/train/distill.py).
    """
    step = _members_step(model, optimizer, distill)
    return _jit(
        step,
        mesh,
        ("replicated", "members", "replicated"),
        ("replicated", "replicated"),
        donate_argnums=0,
    )


def make_subset_step(
    model,
    optimizer: optax.GradientTransformation,
    mesh: Mesh | None = None,
    distill: Distill | None = None,
):
    """subset_step(state, take, put, batches, rngs) -> (state, metrics): the K-member step
    for the members `take` [s] only (batches [s, batch, len]); results go back to `put` [s],
    where an index ≥ K (a padding slot repeating a member of take) is dropped. metrics [s].

    For members whose batches differ in length at a step: each length takes its own call.
    """
    step = _members_step(model, optimizer, distill)

    def subset_step(state, take, put, batches, rngs):
        taken = _per_member(lambda x: x[take], state)
        new, metrics = step(taken, batches, rngs[take])
        placed = _per_member(lambda old, value: old.at[put].set(value, mode="drop"), state, new)
        return placed, metrics

    replicated = ("replicated",) * 3
    return _jit(
        subset_step,
        mesh,
        (*replicated, "members", "replicated"),
        ("replicated", "replicated"),
        donate_argnums=0,
    )


def _per_member(fn, *states: TrainState) -> TrainState:
    """fn over the leaves of the members' parts of `states` (all but the shared frozen base)."""
    parts = [s.replace(frozen=None) for s in states]
    return jax.tree_util.tree_map(fn, *parts).replace(frozen=states[0].frozen)


def stack_states(states: list[TrainState]) -> TrainState:
    """K single-run states (one frozen base) -> one state stacked over the member axis."""
    frozen = states[0].frozen
    parts = [s.replace(frozen=None) for s in states]
    return stack_trees(*parts).replace(frozen=frozen)


@jax.jit
def stack_trees(*trees):
    """Trees of equal structure stacked leaf by leaf along a new leading axis, as one compiled
    program (eager jnp.stack compiles one per leaf shape)."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def run_state(state: TrainState, i: int) -> TrainState:
    """Run i's own state out of a stacked one (its step, trainable and optimizer state)."""
    return _per_member(lambda x: x[i], state)


@jax.jit
def member(tree, i):
    """Member i (an int) or members i (an index array) of a stacked tree: one compiled
    program per tree and index shape (eager indexing compiles one per leaf shape)."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def make_eval_step(model, mesh: Mesh | None = None):
    """eval_step(trainable, frozen, batch) -> logits [batch, num_labels] (float32)."""

    def eval_step(trainable, frozen, batch):
        return _logits(model, peft.combine(frozen, trainable), batch, deterministic=True)

    return _jit(eval_step, mesh, ("replicated", "replicated", "batch"), "replicated")


def make_members_eval_step(model, mesh: Mesh | None = None):
    """eval_step(trainables [s, …], frozen, batch) -> logits [batch, s · num_labels]: the
    members' logits side by side, so `evaluate.predict` handles s members at once."""

    def one(trainable, frozen, batch):
        return _logits(model, peft.combine(frozen, trainable), batch, deterministic=True)

    members = jax.vmap(one, in_axes=(0, None, None))

    def eval_step(trainables, frozen, batch):
        leaves = jax.tree_util.tree_leaves(trainables)
        if leaves and leaves[0].shape[0] == 1:  # one member: no vmap
            logits = _with_member_axis(one(_first(trainables), frozen, batch))
        else:
            logits = members(trainables, frozen, batch)  # [s, batch, num_labels]
        return jnp.transpose(logits, (1, 0, 2)).reshape(logits.shape[1], -1)

    return _jit(eval_step, mesh, ("replicated", "replicated", "batch"), "replicated")


def stacked(batch: dict, k: int) -> dict:
    """Abstract model inputs (ShapeDtypeStructs) of one run -> those of K runs [K, …]."""
    return {key: jax.ShapeDtypeStruct((k, *x.shape), x.dtype) for key, x in batch.items()}


def compiled_memory(jitted_step, *args) -> dict | None:
    """XLA's memory analysis (`memory_stats`) of a jitted step for these (possibly abstract)
    arguments. Compiles, never runs."""
    return memory_stats(jitted_step.lower(*args).compile())


def memory_stats(compiled) -> dict | None:
    """XLA's memory analysis of a compiled program, in bytes: argument, output, alias, temp,
    generated_code and total = argument + output - alias (donated buffers) + temp (on CPU,
    XLA's own peak figure leaves temporaries out). None where the backend gives none."""
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    names = ("argument", "output", "alias", "temp", "generated_code")
    out = {name: int(getattr(stats, f"{name}_size_in_bytes")) for name in names}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def precompiled(jitted, *args):
    """(call, compiled): `compiled` is `jitted` compiled ahead of time for these (possibly
    abstract) arguments; call(*a) runs that program when every argument has the same shapes
    and dtypes, and `jitted` otherwise. So a shape compiled for its memory analysis is not
    compiled a second time by its first call."""
    compiled = jitted.lower(*args).compile()
    signature = _signature(args)

    def call(*a):
        return compiled(*a) if _signature(a) == signature else jitted(*a)

    return call, compiled


def _signature(args) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple((np.shape(x), str(x.dtype)) for x in leaves)
