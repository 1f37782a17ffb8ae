"""Data parallelism: one device mesh, batches split over its "data" axis, state replicated.

Every process builds the same global batch from the same seed; each device takes its rows
(`put_batch`), so one code path serves one device, several local devices and several hosts
(after `jax.distributed.initialize()`, see distributed.py).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (of every process) by default."""
    return Mesh(np.asarray(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def batch_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The batch axis (`axis`: 0, or 1 behind a member axis) split over the mesh; others whole."""
    return NamedSharding(mesh, PartitionSpec(*[None] * axis, DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, field: str) -> None:
    if batch_size % mesh.size:
        raise ValueError(
            f"{field}={batch_size} is not divisible by the {mesh.size} devices of the mesh"
        )


def put_batch(batch: dict[str, np.ndarray], mesh: Mesh | None, axis: int = 0) -> dict:
    """Host arrays (the same on every process) -> global arrays split by rows (along `axis`)
    over the mesh."""
    if mesh is None:
        return batch
    sharding = batch_sharding(mesh, axis)
    return {
        key: jax.make_array_from_callback(value.shape, sharding, lambda index, v=value: v[index])
        for key, value in batch.items()
    }


def put_replicated(tree, mesh: Mesh | None):
    """A pytree (the same on every process) copied whole onto every device of the mesh."""
    if mesh is None:
        return tree
    if jax.process_count() > 1:
        # jax 0.10 builds a broken global array from a device-resident one (its shards say
        # "2 shards each"; Orbax cannot save it): go through host memory instead.
        tree = jax.device_get(tree)
    return jax.device_put(tree, replicated(mesh))
