"""Runs a grid of fine-tuning runs and reports the best cell. Intentionally kept short.

    python sweep.py --config configs/imdb_bitfit.py \
        --grid optim.lr=3e-4,1e-4,5e-5,3e-5 --grid train.batch_size=8,16,32,64,128 \
        [--seeds 1,2,3,4,5] [--vectorize] [--workdir runs/imdb_bitfit_sweep] [--config.x.y=...]

A dataset config takes a method preset and rate (bertjax/studies/presets.py), e.g.
--config configs/mrpc.py:method=lora_q_r4,lr=5e-3; the studies behind RESULTS.md run through
`python -m bertjax.studies run NAME` (--dry_run prints their sweep.py commands).
Without --grid: the BERT miniatures' grid (lr 3e-4, 1e-4, 5e-5, 3e-5 × batch size 8, 16, 32,
64, 128). Each cell is a normal run folder under the sweep folder (--workdir, else
--config.workdir, else runs/<config name>_sweep), where the report goes: sweep.md, sweep.csv,
heatmap.png. Re-running the same command skips finished cells and resumes a half-finished one.
--vectorize trains the learning rates × seeds that share a batch size (and everything else)
as one vmapped program: PEFT methods only; full fine-tuning is refused.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.parallel import distributed
from bertjax.studies import sweep
from bertjax.train import checks, xla_cache

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file.", lock_config=True
)
_GRID = flags.DEFINE_multi_string(
    "grid", [], "key=v1,v2,... (repeatable), e.g. optim.lr=3e-4,1e-4; default: lr × batch size."
)
_SEEDS = flags.DEFINE_string("seeds", None, "Comma-separated train.seed values, e.g. 1,2,3.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Sweep folder (default: --config.workdir, else runs/<name>_sweep)."
)
_VECTORIZE = flags.DEFINE_bool(
    "vectorize", False, "Train learning rates × seeds of one batch size as one vmapped program."
)
_MAX_MEMBERS = flags.DEFINE_integer(
    "max_members", None, "With --vectorize: at most this many runs per vmapped call (memory)."
)
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    cli.stop_on_signals()
    cli.setup_logging()
    xla_cache.enable()
    config = _CONFIG.value
    try:
        distributed.maybe_initialize()  # before anything asks JAX for its devices
        checks.check_config(config)
        grid = sweep.parse_grid(config, _GRID.value) if _GRID.value else None
        seeds = sweep.parse_seeds(_SEEDS.value) if _SEEDS.value else None
        result = sweep.run_sweep(
            config, grid, seeds, _WORKDIR.value, _VECTORIZE.value, _MAX_MEMBERS.value
        )
    except (ValueError, OSError) as err:
        cli.fail(err)
    if result["interrupted"]:
        print(f"interrupted; re-run the same command to resume ({result['report']} so far)")
        sys.exit(result["interrupted"])
    print(result["report"])
    if result["failed"]:
        cli.fail(f"{len(result['failed'])} run(s) failed, the others finished: {result['report']}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
