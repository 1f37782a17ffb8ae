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


def plot_curves(
    records: list[dict],
    out_png: Path,
    title: str = "",
    *,
    baseline: dict | None = None,
    last_step: int | None = None,
) -> Path:
    """curves.png of a run (see curves_figure); process 0 alone writes it."""
    out_png = Path(out_png)
    if not distributed.is_primary():  # process 0 alone writes the run folder's files
        return out_png
    return _save(curves_figure(records, title, baseline=baseline, last_step=last_step), out_png)


def curves_figure(
    records: list[dict],
    title: str = "",
    *,
    baseline: dict | None = None,
    last_step: int | None = None,
):
    """Left: train loss at every logged step (and validation loss). Right: validation
    metrics at every evaluation, x in steps like the left panel, each metric's best and last
    value in its legend entry (text on the axes collided once there were a few metrics), and
    a dashed "majority class" line in the metric's colour for each metric of `baseline`.

    records: metrics.jsonl lines, each with step, epoch, split ("train" | "validation" |
    "test"), optional loss and a metrics dict. Works before any validation row exists.
    baseline: {metric: value} of always predicting the majority class (summary.json's
    majority_baseline["validation"]); last_step: the x axes end there (default: the last
    record's step).
    """
    fig = _figure(figsize=(11, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    _draw_losses(ax_loss, records)
    _draw_metrics(ax_metric, validation_series(records), baseline or {})
    if last_step is None:
        last_step = max((r["step"] for r in records if r.get("split") != "test"), default=0)
    if last_step:
        ax_loss.set_xlim(0, last_step)
        ax_metric.set_xlim(0, last_step)
    if title:
        fig.suptitle(title)
    return fig


def _draw_losses(ax, records: list[dict]) -> None:
    train = [r for r in _rows(records, "train") if r.get("loss") is not None]
    val_loss = [r for r in _rows(records, "validation") if r.get("loss") is not None]
    if train:
        steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
        ax.plot(steps, losses, marker="." if len(train) < 50 else None, label="train")
    if val_loss:
        # not clipped: a point at the last step sits on the axis' edge
        steps, losses = [r["step"] for r in val_loss], [r["loss"] for r in val_loss]
        ax.plot(steps, losses, "o", label="validation", clip_on=False)
    losses = [r["loss"] for r in train + val_loss]
    if losses:
        ax.set_ylim(*padded_limits(losses, lo=0.0))
        ax.legend()
    ax.set(xlabel="step", ylabel="loss", title="loss")


def value_label(name: str, points: list[tuple[int, float]]) -> str:
    """A metric's legend entry: its value when it has one point, else its best (highest)
    value, where, and its last value."""
    if len(points) == 1:
        return f"{name}: {points[0][1]:.3f}"
    best_step, best = max(points, key=lambda p: p[1])
    return f"{name}: best {best:.3f} @ {best_step}, last {points[-1][1]:.3f}"


def _draw_metrics(ax, series: dict, baseline: dict) -> None:
    values, handles = [], []
    for k, (name, points) in enumerate(series.items()):
        # shrinking markers of distinct shapes: metrics with equal values stay visible
        style = dict(marker="osD^v<>ph"[k % 9], markersize=max(10 - 1.5 * k, 3), clip_on=False)
        (line,) = ax.plot(*zip(*points, strict=True), label=name, **style)
        handles.append((line, value_label(name, points)))
        values += [y for _, y in points]
        if baseline.get(name) is not None:
            majority_line(ax, baseline[name], color=line.get_color())
            values.append(baseline[name])
    if majority_lines(ax):  # one grey entry stands for the lines of every colour
        from matplotlib.lines import Line2D

        handles.append((Line2D([], [], color="gray", linestyle="--"), "majority class (dashed)"))
    ax.set(xlabel="step", title="validation")
    if values:
        ax.set_ylim(*padded_limits(values))
        ax.legend(*zip(*handles, strict=True), fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax.transAxes)


MAJORITY_LABEL = "majority class"


def majority_line(ax, value: float, color: str = "gray"):
    """A dashed horizontal line at `value`, the majority class's value of a metric."""
    return ax.axhline(value, color=color, linestyle="--", linewidth=1, label=MAJORITY_LABEL)


def majority_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_label() == MAJORITY_LABEL]


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
        majority_line(ax, baseline).set_label(f"{MAJORITY_LABEL} ({baseline:.3f})")
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
