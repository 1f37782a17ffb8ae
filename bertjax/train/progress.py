"""Progress as log lines where stderr is not a terminal (CI, nohup, SLURM) and tqdm is silent."""

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger("bertjax")
EVERY_S = 10.0  # seconds between two progress lines (the first comes after as long)


def progress_line(
    what: str, done: int, total: int, examples: int, seconds: float, initial: int = 0
) -> str:
    """'validation @ 100: 12/40 batches, 310.5 examples/s, ETA 0:00:27' (ETA from the mean
    time per step so far; `initial` steps were done before, e.g. by the session a resumed run
    continues, and took none of `seconds`)."""
    speed = examples / seconds if seconds > 0 else 0.0
    eta = round(seconds / (done - initial) * (total - done)) if done > initial else 0
    minutes, secs = divmod(eta, 60)
    return (
        f"{what}: {done}/{total} steps, {speed:.1f} examples/s, "
        f"ETA {minutes // 60}:{minutes % 60:02d}:{secs:02d}"
    )


class Progress:
    """Logs `progress_line` at most every `every_s` seconds while steps complete; silent on
    a terminal (where tqdm shows a bar) unless `enabled` says otherwise.

    The training loop calls `update(step, examples_so_far)` after each step."""

    def __init__(
        self,
        what: str,
        total: int,
        *,
        every_s: float = EVERY_S,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        initial: int = 0,
    ):
        self.what, self.total, self.every_s, self.clock = what, total, every_s, clock
        self.initial = initial  # steps done before this meter started (a resumed epoch)
        self.enabled = not sys.stderr.isatty() if enabled is None else enabled
        self.start = self.last = clock()

    def update(self, done: int, examples: int) -> str | None:
        """The line logged now, or None (too soon since the last one, or disabled)."""
        now = self.clock()
        if not self.enabled or now - self.last < self.every_s:
            return None
        self.last = now
        line = progress_line(self.what, done, self.total, examples, now - self.start, self.initial)
        log.info(line)
        return line
