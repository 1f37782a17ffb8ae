"""JAX's persistent compilation cache for the command-line tools.

A run compiles its train step (4-7 s for a 6-layer model on a CPU), its eval step, and ~90
small programs of eager ops (5-50 ms each, 1.6 s in all); with the cache, resumed runs,
sweeps, eval.py and later runs of the same shapes reuse them instead of compiling again.
Every program is cached, the small ones too (JAX's default skips those under 1 s): a warm
run then spends ~0.2 s instead of ~1.6 s on them (bench/RESULTS.md).
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
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return Path(folder)
