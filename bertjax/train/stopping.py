"""Stopping a run: signals (SIGINT/SIGTERM, and the test hook that sends one at a known
step) and early stopping when the validation metric stops improving."""

import logging
import os
import signal

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


def early_stopping(run: runs.Run, value: float, best_before: float, step: int, tc) -> None:
    """Counts the evaluations whose select_metric `value` did not beat the best before them
    by more than early_stopping_min_delta; at early_stopping_patience of them in a row,
    run.stopped says where and why. Off when the patience is None or 0."""
    patience, delta = tc.early_stopping_patience, tc.early_stopping_min_delta
    if not patience:
        return
    if value > best_before + delta:
        run.stale_evals = 0
        return
    run.stale_evals += 1
    if run.stale_evals >= patience:
        run.stopped = dict(
            step=step,
            reason=f"{tc.select_metric} did not improve by more than {delta} for {patience} "
            f"evaluations (best {run.best['value']:.4f} at step {run.best['step']})",
        )
