"""Pure, jit-compiled train and eval steps; gradients only for the trainable partition."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

import peft
from bertjax import sharding


@flax.struct.dataclass
class TrainState:
    """step: optimizer micro-steps taken; trainable/frozen: the two halves of the params
    (`peft.partition`); opt_state: optimizer state of the trainable half only."""

    step: jax.Array
    trainable: Any
    frozen: Any
    opt_state: Any

    @property
    def params(self):
        return peft.combine(self.frozen, self.trainable)


def init_state(params, mask, optimizer: optax.GradientTransformation) -> TrainState:
    """A fresh state; copies `params`, since the train step donates (deletes) its input."""
    trainable, frozen = peft.partition(jax.tree_util.tree_map(jnp.copy, params), mask)
    return TrainState(jnp.zeros((), jnp.int32), trainable, frozen, optimizer.init(trainable))


def loss_fn(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Weighted mean cross-entropy (num_labels ≥ 2) or squared error (num_labels == 1).

    logits [batch, num_labels]; labels [batch]; weights [batch] (0 for padding rows).
    """
    if logits.shape[-1] == 1:
        per_example = (logits[:, 0] - labels.astype(jnp.float32)) ** 2
    else:
        per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _logits(model, params, batch, deterministic: bool, rng=None) -> jax.Array:
    rngs = None if deterministic else {"dropout": rng}
    return model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        deterministic=deterministic,
        rngs=rngs,
    ).logits


def _jit(fn, mesh: Mesh | None, inputs: tuple[str, ...], outputs, **kwargs):
    """jax.jit; with a mesh, "batch" arguments are split by rows over it, the rest replicated."""
    if mesh is None:
        return jax.jit(fn, **kwargs)
    make = {"batch": sharding.batch_sharding, "replicated": sharding.replicated}
    shardings = jax.tree_util.tree_map(lambda kind: make[kind](mesh), (inputs, outputs))
    return jax.jit(fn, in_shardings=shardings[0], out_shardings=shardings[1], **kwargs)


def make_train_step(model, optimizer: optax.GradientTransformation, mesh: Mesh | None = None):
    """train_step(state, batch, rng) -> (state, metrics), jitted with the state donated.

    Only `state.trainable` is differentiated: frozen weights enter as constants of the
    backward pass, so XLA never computes their weight gradients. With a `mesh`, the batch is
    split over its devices (data parallel) and the state is replicated; XLA inserts the
    gradient all-reduce.
    """

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        dropout_rng = jax.random.fold_in(rng, state.step)

        def objective(trainable):
            params = peft.combine(state.frozen, trainable)
            logits = _logits(model, params, batch, deterministic=False, rng=dropout_rng)
            return loss_fn(logits, batch["labels"], batch["weights"])

        loss, grads = jax.value_and_grad(objective)(state.trainable)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
        return state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state), metrics

    return _jit(
        train_step,
        mesh,
        ("replicated", "batch", "replicated"),
        ("replicated", "replicated"),
        donate_argnums=0,
    )


def make_eval_step(model, mesh: Mesh | None = None):
    """eval_step(trainable, frozen, batch) -> logits [batch, num_labels] (float32)."""

    def eval_step(trainable, frozen, batch):
        return _logits(model, peft.combine(frozen, trainable), batch, deterministic=True)

    return _jit(eval_step, mesh, ("replicated", "replicated", "batch"), "replicated")


def compiled_memory(jitted_step, *args) -> dict | None:
    """XLA's memory analysis of a jitted step for these (possibly abstract) arguments, in
    bytes: argument, output, alias, temp, generated_code and total = argument + output -
    alias (donated buffers) + temp (on CPU, XLA's own peak figure leaves temporaries out).
    None where the backend gives no analysis. Compiles, never runs."""
    stats = jitted_step.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    names = ("argument", "output", "alias", "temp", "generated_code")
    out = {name: int(getattr(stats, f"{name}_size_in_bytes")) for name in names}
    out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out
