"""Multi-host start-up: jax.distributed when asked for by the environment."""

import os

import jax


def maybe_initialize() -> None:
    """Calls jax.distributed.initialize() when BERTJAX_DISTRIBUTED=1.

    On Cloud TPU pods and SLURM/Open MPI clusters JAX finds the coordinator itself; elsewhere
    set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID as well.
    """
    if os.environ.get("BERTJAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()
