"""Fine-tunes a BERT-family encoder as a config file says. Intentionally kept short.

    python train.py --config configs/sst2_lora.py [--config.optim.lr=1e-4 ...] [--overwrite]

Writes runs/<config name>/ (or --config.workdir): config.json, labels.json, metrics.jsonl,
curves.png, summary.json and Orbax checkpoints/{best,last}. Re-running the same command
resumes from checkpoints/last.
"""

import json
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from bertjax import distributed, training, xla_cache

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file.", lock_config=True
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Empty an existing run folder first.")
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    logging.getLogger("bertjax").setLevel(logging.INFO)
    xla_cache.enable()
    try:
        distributed.maybe_initialize()
        summary = training.train(_CONFIG.value, overwrite=_OVERWRITE.value)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        sys.exit(f"error: {err}")
    print(json.dumps(summary))


if __name__ == "__main__":
    app.run(main)
