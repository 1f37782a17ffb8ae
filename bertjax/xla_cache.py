"""JAX's persistent compilation cache for the command-line tools.

A run compiles one train step per bucket length (about 10 s each for a 6-layer model on a CPU);
with the cache, resumed runs, sweeps, eval.py and the summary's memory analysis reuse those
programs instead of compiling them again.
"""

import os
from pathlib import Path

import jax

DEFAULT_DIR = Path.home() / ".cache" / "bertjax" / "xla"


def enable(folder: str | os.PathLike | None = None) -> Path:
    """Caches compiled programs in `folder` ($BERTJAX_XLA_CACHE, else ~/.cache/bertjax/xla);
    BERTJAX_XLA_CACHE=off leaves the cache off."""
    folder = folder or os.environ.get("BERTJAX_XLA_CACHE") or DEFAULT_DIR
    if str(folder) == "off":
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return Path(folder)
