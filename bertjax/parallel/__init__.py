"""Several devices and processes: the data mesh, sharded batches, multi-host agreement."""
