"""Evaluates a trained run's best checkpoint, or predicts labels for new texts.

    python eval.py --ckpt runs/sst2_lora [--split test|validation] [--data.path DIR]
    python eval.py --ckpt runs/sst2_lora --predict texts.txt [--out predictions.tsv]

Prints a metrics table and, as the last line, the metrics as one JSON object. --predict
reads one text per line (a tab between the two texts of a pair) and writes a TSV with the
predicted label name and every label's probability.
"""

import json
import sys

from absl import app, flags

from bertjax import distributed, inference, xla_cache

_CKPT = flags.DEFINE_string("ckpt", None, "Run folder written by train.py.", required=True)
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"], "Split to evaluate.")
_DATA_PATH = flags.DEFINE_string("data.path", None, "Local data folder instead of the run's.")
_PREDICT = flags.DEFINE_string("predict", None, "Text file to predict labels for.")
_OUT = flags.DEFINE_string(
    "out", None, "Predictions TSV (default: <predict file>.predictions.tsv)."
)


def main(argv):
    del argv
    xla_cache.enable()
    try:
        distributed.maybe_initialize()
        if _PREDICT.value:
            out = _OUT.value or f"{_PREDICT.value}.predictions.tsv"
            print(inference.predict_file(_CKPT.value, _PREDICT.value, out))
            return
        metrics = inference.evaluate_run(_CKPT.value, _SPLIT.value, _DATA_PATH.value)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    width = max(map(len, metrics))
    print(f"{'metric':<{width}}  {_SPLIT.value}")
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
    print(json.dumps(metrics))


if __name__ == "__main__":
    app.run(main)
