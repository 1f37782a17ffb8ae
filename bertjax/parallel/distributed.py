"""Several processes, one run: start-up from the environment, process 0, barriers, agreement."""

import logging
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

ADDRESS, COUNT, PROCESS_ID = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
SWITCH = "BERTJAX_DISTRIBUTED"  # =1: let JAX detect the cluster (SLURM, Open MPI, TPU, k8s)
log = logging.getLogger("bertjax")


def _int(name: str, value: str, low: int, high: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name}={value!r} is not an integer {bounds}")
    return number


def settings(environ=None) -> dict | None:
    """The jax.distributed.initialize() arguments the environment asks for; None: one process.

    JAX itself reads only JAX_COORDINATOR_ADDRESS; the count and id come from here, or (with
    BERTJAX_DISTRIBUTED=1 and neither set) from the cluster JAX detects.
    """
    environ = os.environ if environ is None else environ
    address, count, pid = (environ.get(name) or None for name in (ADDRESS, COUNT, PROCESS_ID))
    detect = environ.get(SWITCH) == "1"
    if address is not None and ":" not in address:
        raise ValueError(f"{ADDRESS}={address!r} needs a port: host:port, e.g. 10.0.0.1:1234")
    if count is None and pid is None:
        if address is not None and not detect:
            raise ValueError(
                f"{ADDRESS} is set but {COUNT} and {PROCESS_ID} are not; set both on every "
                f"process (or {SWITCH}=1 where JAX detects the cluster: SLURM, Open MPI, "
                "Cloud TPU, Kubernetes)"
            )
        return dict(coordinator_address=address) if detect else None
    missing = [n for n, v in ((ADDRESS, address), (COUNT, count), (PROCESS_ID, pid)) if v is None]
    if missing:
        raise ValueError(
            f"{' and '.join(missing)} unset: a multi-process start needs {ADDRESS}, {COUNT} and "
            f"{PROCESS_ID} together on every process"
        )
    num_processes = _int(COUNT, count, 1)
    process_id = _int(PROCESS_ID, pid, 0, num_processes - 1)
    return dict(coordinator_address=address, num_processes=num_processes, process_id=process_id)


def maybe_initialize() -> bool:
    """jax.distributed.initialize() as the environment asks (see settings); True if it ran.

    Call before anything else touches JAX. CPU processes exchange their collectives over
    gloo (JAX's default since 0.4.36; set here where an older default left them off).
    """
    args = settings()
    if args is None:
        return False
    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**args)
    except ValueError as err:  # JAX found no cluster to fill in what the environment left out
        raise ValueError(
            f"{SWITCH}=1 but JAX detected no cluster (SLURM, Open MPI, Cloud TPU, Kubernetes) "
            f"({err}); set {ADDRESS}, {COUNT} and {PROCESS_ID} on every process"
        ) from None
    log.info(
        "process %d of %d: %d of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_primary() -> bool:
    """True on process 0, the one that writes the run folder's files (always, alone)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process got here (a no-op alone); `name` must match across them."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def agreed_stop(flag: bool, step: int, every: int) -> bool:
    """Whether to stop after `step`, the same answer on every process. Alone: `flag`, at
    once. With several: True where any process has `flag` set at a step divisible by
    `every` (an all-gather there, a host sync the loop already makes at its log steps;
    no sync in between), so a signal stops them all at the same step."""
    if jax.process_count() == 1:
        return bool(flag)
    if step % every:
        return False
    flags = multihost_utils.process_allgather(np.asarray(flag, np.int32))
    return bool(np.any(flags))
