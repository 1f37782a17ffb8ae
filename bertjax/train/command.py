"""Fine-tunes a BERT-family encoder as a config file says (train.py, or bertjax-train installed).

    python train.py --config configs/sst2_lora.py [--config.optim.lr=1e-4 ...] [--overwrite]
    python train.py --config configs/sst2_lora.py --help   # every config field, its value, meaning

Writes runs/<config name>/ (or --config.workdir, whose folder name then names the run):
config.json, labels.json, metrics.jsonl, curves.png, summary.json and Orbax
checkpoints/{best,last}. Re-running the same command resumes from checkpoints/last.
"""

import functools
import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from bertjax import cli
from bertjax.parallel import distributed
from bertjax.train import checks, xla_cache
from bertjax.train import loop as training


def name_after_workdir(config, command_line: list[str]) -> None:
    """A run given its folder (--config.workdir) is named after it in summary.json and the
    plot, unless --config.name names it: `--config.workdir=runs/reviews` on configs/sst2.py
    is "reviews", not "sst2"."""
    named = any(arg.split("=", 1)[0] in ("--config.name", "-config.name") for arg in command_line)
    if config.get("workdir") and not named:
        config.name = Path(config.workdir).name or config.name


def main(argv, config_flag, overwrite_flag) -> None:
    del argv
    cli.stop_on_signals()
    cli.setup_logging()
    try:
        distributed.maybe_initialize()  # before anything asks JAX for its devices
        name_after_workdir(config_flag.value, sys.argv[1:])
        checks.check_config(config_flag.value)
        xla_cache.enable()
        result = training.train(config_flag.value, overwrite=overwrite_flag.value)
    except (ValueError, OSError) as err:
        cli.fail(err)
    if "error" in result:  # diverged
        cli.fail(result["error"])
    if "exit_status" in result:  # stopped by a signal, checkpoints/last saved
        sys.exit(result["exit_status"])
    print(json.dumps(result))


def run() -> None:
    """The command: flags defined here (not at import), so importing this module defines none."""
    config_flag = config_flags.DEFINE_config_file(
        "config", None, "Path to a configs/*.py file.", lock_config=True
    )
    overwrite_flag = flags.DEFINE_bool("overwrite", False, "Empty an existing run folder first.")
    flags.mark_flags_as_required(["config"])
    command = sys.modules[__name__]
    app.run(
        functools.partial(main, config_flag=config_flag, overwrite_flag=overwrite_flag),
        flags_parser=functools.partial(cli.parse_flags, command=command),
    )
