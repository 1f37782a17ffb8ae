"""AdamW with Hugging Face's defaults: warmup + decay schedule, no decay on biases/LayerNorm."""

import jax
import optax
from flax.traverse_util import flatten_dict, unflatten_dict


def learning_rate_schedule(optim_cfg, total_steps: int, lr: float = 1.0) -> optax.Schedule:
    """Linear warmup over warmup_ratio·total_steps to `lr`, then "linear" | "constant" |
    "cosine" decay. The default peak 1.0 gives the unit schedule that make_optimizer scales."""
    warmup = int(optim_cfg.warmup_ratio * total_steps)
    decay_steps = max(total_steps - warmup, 1)
    decays = {
        "linear": optax.linear_schedule(lr, 0.0, decay_steps),
        "constant": optax.constant_schedule(lr),
        "cosine": optax.cosine_decay_schedule(lr, decay_steps),
    }
    if optim_cfg.schedule not in decays:
        raise ValueError(
            f"optim.schedule {optim_cfg.schedule!r} unknown; choose from {sorted(decays)}"
        )
    if warmup == 0:
        return decays[optim_cfg.schedule]
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), decays[optim_cfg.schedule]], [warmup]
    )


def decay_mask(params):
    """True where weight decay applies: not biases, not LayerNorm parameters."""
    flat = flatten_dict(dict(params))
    return unflatten_dict(
        {p: p[-1] != "bias" and not any("LayerNorm" in s for s in p) for p in flat}
    )


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
    """clip → AdamW(lr · unit schedule, decay mask), accumulated over optim.accumulate
    micro-batches.

    The peak learning rate is data, not code: `optim_cfg.lr` is only the initial value of
    `lr` in the optimizer state (optax.inject_hyperparams), so runs with different learning
    rates share one compiled step (each run's state is initialised by its own optimizer).
    Build it for the trainable tree only: frozen leaves then have no optimizer state.
    """
    unit = learning_rate_schedule(optim_cfg, total_steps)

    def adamw(lr):
        parts = [optax.clip_by_global_norm(optim_cfg.grad_clip)] if optim_cfg.grad_clip else []
        schedule = lambda count: lr * unit(count)
        parts.append(optax.adamw(schedule, weight_decay=optim_cfg.weight_decay, mask=decay_mask))
        return optax.chain(*parts)

    tx = optax.inject_hyperparams(adamw)(lr=optim_cfg.lr)
    if optim_cfg.accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=optim_cfg.accumulate)
    return tx


def count_moments(opt_state) -> int:
    """Scalars held by Adam's first and second moments in `opt_state`."""
    total = 0
    for state in jax.tree_util.tree_leaves(
        opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState)
    ):
        if isinstance(state, optax.ScaleByAdamState):
            total += sum(x.size for x in jax.tree_util.tree_leaves((state.mu, state.nu)))
    return total
