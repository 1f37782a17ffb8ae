"""Optimizers that really freeze: frozen leaves get no gradient and no optimizer state."""

import jax
import optax


def labels(mask):
    """ "train"/"frozen" labels for optax.multi_transform from a bool mask."""
    return jax.tree_util.tree_map(lambda m: "train" if m else "frozen", mask)


def freeze(optimizer: optax.GradientTransformation, mask) -> optax.GradientTransformation:
    """`optimizer` on the leaves where mask is True; frozen leaves get zero updates and no
    state. (`optax.masked` would pass their gradients through unchanged: it does not freeze.)

    For speed, prefer differentiating only the trainable partition (`peft.partition`), so
    no weight gradient of a frozen matrix is computed at all; this is for code that cannot.
    """
    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels(mask))
