"""Every PNG the package writes: a run's curves, learning curves over seeds, sweep heatmaps."""

from pathlib import Path

import numpy as np

from bertjax.parallel import distributed


def _rows(records: list[dict], split: str) -> list[dict]:
    return [r for r in records if r.get("split") == split]


def _figure(**kwargs):
    """A bare matplotlib Figure: it draws with Agg into files, never a display, and needs
    neither pyplot nor a backend choice. Imported here, not at module level, because a run
    draws once at its end and matplotlib costs ~0.35 s of every start-up (issue #25)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig, out_png: Path, dpi: int = 120) -> Path:
    out_png = Path(out_png)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    return out_png


def padded_limits(values: list[float], lo: float | None = None, hi: float | None = None):
    """(low, high) y-limits with room around the values, at least 0.1 apart, so one point
    or a flat line does not spread noise over the axis (matplotlib's default for a single
    value is ±4% of it); clipped to [lo, hi] where given."""
    low, high = min(values), max(values)
    margin = max(0.1 * (high - low), 0.05)
    low, high = low - margin, high + margin
    return (low if lo is None else max(low, lo), high if hi is None else min(high, hi))


def validation_series(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), …]} of the validation records, metrics sorted by name."""
    val = _rows(records, "validation")
    names = sorted({name for r in val for name in r.get("metrics", {})})
    return {
        name: [(r["step"], r["metrics"][name]) for r in val if name in r.get("metrics", {})]
        for name in names
    }


def plot_curves(records: list[dict], out_png: Path, title: str = "") -> Path:
    """Left: train loss at every logged step (and validation loss). Right: validation
    metrics at every evaluation, x in steps like the left panel, each point annotated with
    its value so a run with one evaluation is still read at a glance.

    records: metrics.jsonl lines, each with step, epoch, split ("train" | "validation" |
    "test"), optional loss and a metrics dict. Works before any validation row exists.
    """
    out_png = Path(out_png)
    if not distributed.is_primary():  # process 0 alone writes the run folder's files
        return out_png
    train = [r for r in _rows(records, "train") if r.get("loss") is not None]
    val = _rows(records, "validation")
    val_loss = [r for r in val if r.get("loss") is not None]

    fig = _figure(figsize=(11, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        ax_loss.plot(steps, losses, marker="." if len(train) < 50 else None, label="train")
    if val_loss:
        ax_loss.plot(
            [r["step"] for r in val_loss], [r["loss"] for r in val_loss], "o", label="validation"
        )
    losses = [r["loss"] for r in train + val_loss]
    if losses:
        ax_loss.set_ylim(*padded_limits(losses, lo=0.0))
        ax_loss.legend()
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")

    series = validation_series(records)
    names, values = list(series), []
    for k, (name, points) in enumerate(series.items()):
        # shrinking markers of distinct shapes: metrics with equal values stay visible
        style = dict(marker="osD^v<>ph"[k % 9], markersize=max(10 - 1.5 * k, 3))
        ax_metric.plot(*zip(*points, strict=True), label=name, **style)
        values += [y for _, y in points]
    # each evaluation's values written beside it (all of them while there are few): metrics
    # with the same value share one label
    annotated = val if len(val) <= 4 else val[-1:]
    for r in annotated:
        same: dict[str, list[str]] = {}
        for name in names:
            if name in r.get("metrics", {}):
                same.setdefault(f"{r['metrics'][name]:.3f}", []).append(name)
        for text, group in same.items():
            ax_metric.annotate(
                f"{' = '.join(group)}: {text}",
                (r["step"], float(text)),
                textcoords="offset points",
                xytext=(8, -3),
                fontsize="x-small",
            )
    ax_metric.set(xlabel="step", title="validation")
    if values:
        ax_metric.set_ylim(*padded_limits(values))
        ax_metric.legend(fontsize="small", loc="upper left")
    else:
        ax_metric.text(
            0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_metric.transAxes
        )
    last_step = max((r["step"] for r in train + val), default=0)
    if last_step:
        ax_loss.set_xlim(0, last_step * 1.05)
        ax_metric.set_xlim(0, last_step * (1.45 if annotated else 1.05))  # room for labels
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


def plot_mean_curves(
    lines: list[tuple], out_png: Path, ylabel: str, title: str, baseline: float | None = None
) -> Path:
    """lines: (label, epochs [n], mean [n], std [n]) each: a line with markers and a ±std
    band (learning curves of groups of runs over seeds); baseline: a dashed horizontal line
    (the majority class's value of the metric)."""
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, epochs, mean, std in lines:
        if not len(epochs):
            continue
        (line,) = ax.plot(epochs, mean, marker="o", label=label)
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    if baseline is not None and ax.lines:
        ax.axhline(baseline, color="gray", linestyle="--", label=f"majority class ({baseline:.3f})")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if ax.lines:
        ax.legend(fontsize="small")
    return _save(fig, out_png)


def plot_heatmap(
    values: np.ndarray,
    row_labels: list[str],
    col_labels: list[str] | None,
    axis_names: tuple[str, str | None],
    winner: tuple[int, int] | None,
    title: str,
    out_png: Path,
) -> Path:
    """values: [rows, cols] (nan: no value), each square annotated; the winner outlined.
    col_labels None: one column without ticks."""
    fig = _figure(figsize=(1.4 * values.shape[1] + 2.5, 0.7 * values.shape[0] + 1.8))
    ax = fig.subplots()
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    fig.colorbar(image, ax=ax)
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_ylabel(axis_names[0])
    if col_labels:
        ax.set_xticks(range(len(col_labels)), col_labels)
        ax.set_xlabel(axis_names[1])
    else:
        ax.set_xticks([])
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0
    for (i, j), v in np.ndenumerate(values):
        text = "–" if np.isnan(v) else f"{v:.3f}"
        ax.text(j, i, text, ha="center", va="center", color="black" if v > middle else "white")
    if winner is not None:
        from matplotlib.patches import Rectangle

        i, j = winner
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
    ax.set_title(title)
    return _save(fig, out_png, dpi=110)
