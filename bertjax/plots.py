"""Training curves of one run (its metrics.jsonl records) as a PNG."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display

import matplotlib.pyplot as plt  # noqa: E402

from bertjax import distributed  # noqa: E402


def _rows(records: list[dict], split: str) -> list[dict]:
    return [r for r in records if r.get("split") == split]


def plot_curves(records: list[dict], out_png: Path, title: str = "") -> Path:
    """Left: train loss (and validation loss) vs step. Right: validation metrics vs epoch.

    records: metrics.jsonl lines, each with step, epoch, split ("train" | "validation" |
    "test"), optional loss and a metrics dict. Works before any validation row exists.
    """
    out_png = Path(out_png)
    if not distributed.is_primary():  # process 0 alone writes the run folder's files
        return out_png
    train = [r for r in _rows(records, "train") if r.get("loss") is not None]
    val = _rows(records, "validation")
    val_loss = [r for r in val if r.get("loss") is not None]

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if val_loss:
        ax_loss.plot(
            [r["step"] for r in val_loss], [r["loss"] for r in val_loss], "o", label="validation"
        )
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    if train or val_loss:
        ax_loss.legend()

    names = sorted({name for r in val for name in r.get("metrics", {})})
    for name in names:
        points = [(r["epoch"], r["metrics"][name]) for r in val if name in r.get("metrics", {})]
        ax_metric.plot(*zip(*points, strict=True), marker="o", label=name)
    ax_metric.set(xlabel="epoch", title="validation")
    if names:
        ax_metric.legend()
    else:
        ax_metric.text(
            0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_metric.transAxes
        )

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
