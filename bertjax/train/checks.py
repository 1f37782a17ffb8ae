"""Config validation before any data or weights load: one line naming the field, value and fix."""

import difflib
import math
from typing import Any

import jax

import peft
from bertjax.hub.pretrained import check_layers

PEFT_METHODS = ("full", "head", "bitfit", "lora", "dora", "ia3", "adapter")
DTYPES = ("auto", "float32", "bfloat16")
SCHEDULES = ("linear", "constant", "cosine")
# Metrics where higher is better (the best checkpoint is the highest); mse is not one.
SELECT_METRICS = ("accuracy", "f1", "macro_f1", "micro_f1", "mcc", "pearson", "spearman")


def task_metrics(num_labels: int) -> tuple[str, ...]:
    """The SELECT_METRICS a task with `num_labels` outputs reports (1: regression)."""
    if num_labels == 1:
        return ("pearson", "spearman")
    binary = ("f1",) if num_labels == 2 else ()
    return ("accuracy", *binary, "macro_f1", "micro_f1", "mcc")


def check_select_metric(config, num_labels: int) -> None:
    """train.select_metric must be a metric this task reports: checked once the labels are
    known, before the first step (not at the first evaluation, an epoch later)."""
    metric, produced = config.train.select_metric, task_metrics(num_labels)
    if metric not in produced:
        task = "regression" if num_labels == 1 else f"classification into {num_labels} classes"
        raise ValueError(
            f"train.select_metric={metric!r} is not reported for {task}; use one of "
            f"{', '.join(produced)}"
        )


def closest(value: str, allowed) -> str | None:
    """The option a typo most likely meant: the only one `value` abbreviates ("acc" ->
    "accuracy", not the nearer-spelled "mcc"), else the closest spelling, else None."""
    starting = [option for option in allowed if option.startswith(value)] if value else []
    if len(starting) == 1:
        return starting[0]
    close = difflib.get_close_matches(value, list(allowed), 1)
    return close[0] if close else None


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        close = closest(str(value), allowed)
        hint = f" (did you mean {close!r}?)" if close else ""
        raise ValueError(f"{field}={value!r} is unknown{hint}; use one of {', '.join(allowed)}")


def _at_least_one(field: str, value: Any, what: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{field}={value!r} must be an integer >= 1{what}")


def flat_fields(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"optim.lr": 2e-05, …}: the leaves of a config (or any nested mapping) by dotted name."""
    out = {}
    for key, value in tree.items():
        if hasattr(value, "items"):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_peft(config) -> None:
    """The chosen method's own fields, checked by the peft config classes themselves."""
    method = config.peft.method
    try:
        if method == "lora":
            lora = config.peft.lora
            peft.LoraConfig(lora.rank, lora.alpha, lora.dropout, tuple(lora.targets))
        elif method == "adapter":
            peft.AdapterConfig(**config.peft.adapter.to_dict())
    except (TypeError, ValueError) as err:
        raise ValueError(f"peft.{method}: {err}") from None


def check_distill(config) -> None:
    """config.distill's values (the teacher and transfer texts are checked when they load)."""
    distill = config.get("distill")
    if distill is None:
        return
    temperature, alpha = distill.temperature, distill.alpha
    number = isinstance(temperature, int | float) and not isinstance(temperature, bool)
    if not number or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"distill.temperature={temperature!r} must be a number > 0, e.g. 2.0")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(
            f"distill.alpha={alpha!r} must be in [0, 1]: the weight of the label loss "
            "(0: the teacher's targets only)"
        )
    if distill.get("transfer") is not None and distill.get("teacher") is None:
        raise ValueError(
            f"distill.transfer={distill.transfer!r} needs a teacher to label its texts; set "
            "--config.distill.teacher or unset distill.transfer"
        )
    if distill.get("transfer") is not None and alpha != 0:
        raise ValueError(
            f"distill.alpha={alpha!r}, but distill.transfer texts have no labels to weigh; "
            "set --config.distill.alpha=0 (soft targets only)"
        )


def check_config(config) -> None:
    """Raises ValueError (one line) for the first config field that cannot work."""
    _choice("peft.method", config.peft.method, PEFT_METHODS)
    _choice("dtype", config.dtype, DTYPES)
    _choice("optim.schedule", config.optim.schedule, SCHEDULES)
    _choice("train.select_metric", config.train.select_metric, SELECT_METRICS)
    lr = config.optim.lr
    if not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"optim.lr={lr!r} must be a number > 0, e.g. --config.optim.lr=2e-5")
    warmup = config.optim.warmup_ratio
    if not 0 <= warmup < 1:
        raise ValueError(
            f"optim.warmup_ratio={warmup!r} must be in [0, 1): the fraction of steps spent "
            "warming up"
        )
    for field, value in flat_fields(config).items():
        if field.rsplit(".", 1)[-1].endswith("dropout") and not 0 <= value < 1:
            raise ValueError(f"{field}={value!r} must be in [0, 1): a drop probability")
    devices = jax.device_count()
    for field in ("batch_size", "eval_batch_size"):
        value = config.train[field]
        _at_least_one(f"train.{field}", value)
        if value % devices:
            raise ValueError(
                f"train.{field}={value} is not divisible by the {devices} devices; "
                f"use a multiple of {devices}"
            )
    max_steps = config.train.get("max_steps")
    if max_steps is not None:
        _at_least_one("train.max_steps", max_steps, " (or unset it to train for train.epochs)")
    else:
        _at_least_one("train.epochs", config.train.epochs, " (or set train.max_steps)")
    _at_least_one("optim.accumulate", config.optim.accumulate)
    if config.train.get("log_every") is not None:
        _at_least_one("train.log_every", config.train.log_every, " (or unset it: automatic)")
    _at_least_one("data.max_length", config.data.max_length)
    for field in ("max_train_examples", "max_eval_examples"):  # no "all but N" reading
        if config.data.get(field) is not None:
            _at_least_one(f"data.{field}", config.data[field], " (or unset it: all examples)")
    if config.train.get("eval_every") is not None:
        _at_least_one("train.eval_every", config.train.eval_every, " (or unset it)")
    check_peft(config)
    if config.get("model_layers") is not None:
        check_layers(config.model_layers, None, "model_layers")
    check_distill(config)
