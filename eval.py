"""Evaluates a trained run's best checkpoint, or predicts labels for new texts.

    python eval.py --ckpt runs/sst2_lora [--split test|validation] [--data.path DIR]
    python eval.py --ckpt runs/sst2_lora --predict texts.txt [--out predictions.tsv]

Prints a metrics table and, as the last line, the metrics as one JSON object. --predict
reads one text per line (a tab between the two texts of a pair), prints each line's label
name and every label's probability, and writes them to a TSV in the run folder (never into
the texts' folder unless --out says so).
"""

import json

from absl import app, flags

from bertjax import cli
from bertjax.parallel import distributed
from bertjax.train import inference, xla_cache

_CKPT = flags.DEFINE_string("ckpt", None, "Run folder written by train.py.", required=True)
_SPLIT = flags.DEFINE_enum("split", "validation", ["validation", "test"], "Split to evaluate.")
_DATA_PATH = flags.DEFINE_string("data.path", None, "Local data folder instead of the run's.")
_PREDICT = flags.DEFINE_string("predict", None, "Text file to predict labels for.")
_OUT = flags.DEFINE_string(
    "out", None, "Predictions TSV (default: <ckpt>/<predict file name>.predictions.tsv)."
)


def main(argv):
    del argv
    cli.setup_logging()
    xla_cache.enable()
    try:
        distributed.maybe_initialize()
        if _PREDICT.value:
            out = _OUT.value or inference.default_predictions_file(_CKPT.value, _PREDICT.value)
            file, predictions = inference.predict_file(_CKPT.value, _PREDICT.value, out)
            for p in predictions:
                probs = "  ".join(f"{name} {v:.3f}" for name, v in p["probabilities"].items())
                print(f"{p['label']}\t{probs}\t{p['text'][:70]}")
            print(f"wrote {file}")
            return
        metrics = inference.evaluate_run(_CKPT.value, _SPLIT.value, _DATA_PATH.value)
    except (ValueError, OSError) as err:
        cli.fail(err)
    width = max(map(len, metrics))
    print(f"{'metric':<{width}}  {_SPLIT.value}")
    for name, value in metrics.items():
        print(f"{name:<{width}}  {value:.4f}")
    print(json.dumps(metrics))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
