"""Stopping a run: signals (SIGINT/SIGTERM, and the test hook that sends one at a known
step) and early stopping when the validation metric stops improving."""

import logging
import math
import os
import signal
from pathlib import Path

from bertjax import runs

log = logging.getLogger("bertjax")
SELF_SIGNAL = "BERTJAX_SELF_SIGNAL"  # tests: "SIGINT@train:5" sends SIGINT after step 5


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


def beats(value: float, best: dict) -> bool:
    """Whether an evaluation's select_metric `value` is a new best: any value when there is
    none yet (so a run whose metric is NaN, a correlation on constant labels, still has a
    best checkpoint to finish from); else a number above the best, or any number above NaN."""
    if best["step"] < 0:
        return True
    if math.isnan(value):
        return False
    return math.isnan(best["value"]) or value > best["value"]


def update_best(status: runs.Status, value: float, step: int, metrics: dict) -> bool:
    """Records an evaluation's `value` as the best when it `beats` it; whether it did."""
    if not beats(value, status.best):
        return False
    status.best = dict(value=value, step=step, metrics=metrics)
    return True


def divergence(loss: float, step: int, last: Path) -> str | None:
    """Why a run stops when its mean train `loss` is not finite (None while it is); `last`:
    its checkpoints/last, the last good state."""
    if math.isfinite(loss):
        return None
    return (
        f"loss is {loss} at step {step}; stopped, the last good checkpoint is {last} "
        "(try a lower --config.optim.lr)"
    )


def early_stopping(run: runs.Run, value: float, best_before: float, step: int, tc) -> None:
    """Counts the evaluations whose select_metric `value` did not beat the best before them
    by more than early_stopping_min_delta; at early_stopping_patience of them in a row,
    run.status.stopped says where and why. Off when the patience is None or 0."""
    patience, delta = tc.early_stopping_patience, tc.early_stopping_min_delta
    if not patience:
        return
    status = run.status
    if value > best_before + delta:
        status.stale_evals = 0
        return
    status.stale_evals += 1
    if status.stale_evals >= patience:
        status.stopped = dict(
            step=step,
            reason=f"{tc.select_metric} did not improve by more than {delta} for {patience} "
            f"evaluations (best {status.best['value']:.4f} at step {status.best['step']})",
        )
