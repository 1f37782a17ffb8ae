"""Knowledge-distillation loss: hard labels mixed with a teacher's softened predictions."""

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Distill:
    """config.distill's loss settings: alpha, the weight of the label loss; temperature T."""

    alpha: float = 0.5
    temperature: float = 2.0


def weighted_mean(per_example: jax.Array, weights: jax.Array) -> jax.Array:
    """sum(per_example · weights) / max(sum(weights), 1), as steps.loss_fn averages: padding
    examples (weight 0) count for nothing, and an all-padding batch gives 0, not NaN."""
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def soft_loss(
    logits: jax.Array, teacher_logits: jax.Array, weights: jax.Array, temperature: float
) -> jax.Array:
    """The soft-target loss against a teacher, averaged with `weights`.

    logits, teacher_logits: [examples, num_labels], or [rows, E, num_labels] of packed
    rows; weights: [examples] or [rows, E] (flattened here). Classification: T² ·
    KL(softmax(teacher / T) ‖ softmax(student / T)) per example; T² keeps its gradients the
    size of the hard loss's as T grows (Hinton et al., 2015). Regression (num_labels 1):
    the squared error to the teacher's output, T unused.
    """
    num_labels = logits.shape[-1]
    logits = logits.reshape(-1, num_labels).astype(jnp.float32)
    teacher_logits = teacher_logits.reshape(-1, num_labels).astype(jnp.float32)
    weights = weights.reshape(-1)
    if num_labels == 1:
        return weighted_mean((logits[:, 0] - teacher_logits[:, 0]) ** 2, weights)
    teacher_log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = jax.nn.log_softmax(logits / temperature, axis=-1)
    # the teacher is data: no gradient flows into its logits
    teacher_log_p = jax.lax.stop_gradient(teacher_log_p)
    kl = jnp.sum(jnp.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return temperature**2 * weighted_mean(kl, weights)


def distill_loss(
    hard_loss: jax.Array,
    logits: jax.Array,
    teacher_logits: jax.Array,
    weights: jax.Array,
    *,
    alpha: float,
    temperature: float,
) -> jax.Array:
    """α · hard_loss + (1 − α) · soft_loss: hard_loss is steps.loss_fn's value on the same
    batch (cross-entropy to the labels, or squared error for regression); shapes as in
    soft_loss. alpha = 1 gives hard_loss bitwise (the soft term is finite, times 0), alpha
    = 0 soft targets only."""
    soft = soft_loss(logits, teacher_logits, weights, temperature)
    return alpha * hard_loss + (1.0 - alpha) * soft


def on_transfer_texts(config) -> bool:
    """Whether a run distils on distill.transfer texts (its train split's labels are then
    placeholders); False for configs written before distillation existed."""
    distill = config.get("distill")
    return bool(distill and distill.get("transfer"))
