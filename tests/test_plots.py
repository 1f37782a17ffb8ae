"""plot_curves: its axes hold the records (limits and lines read from the figure), the PNG has
the train line where it belongs, a short run with one evaluation still reads, each metric has its
majority-class line, x ends at the last step, values sit in the legend (issue #28)."""

import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np

from bertjax.runs import plots
from bertjax.runs.plots import plot_curves


def _records(with_validation: bool) -> list[dict]:
    records = [
        dict(
            step=s,
            epoch=s / 50,
            split="train",
            loss=1.0 / (1 + s / 20),
            metrics={},
            examples_per_s=500.0,
            elapsed=s * 0.1,
        )
        for s in range(5, 151, 5)
    ]
    if with_validation:
        records += [
            dict(
                step=50 * e,
                epoch=float(e),
                split="validation",
                loss=0.6 - 0.1 * e,
                metrics={"accuracy": 0.7 + 0.05 * e, "macro_f1": 0.65 + 0.06 * e},
                examples_per_s=2000.0,
                elapsed=5.0 * e,
            )
            for e in (1, 2, 3)
        ]
        records.append(
            dict(
                step=150,
                epoch=3.0,
                split="test",
                loss=0.3,
                metrics={"accuracy": 0.84},
                examples_per_s=2000.0,
                elapsed=16.0,
            )
        )
    return records


def _check_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert 300 <= height <= 1000 and 800 <= width <= 2000, image.shape
    assert np.unique(image[..., :3].reshape(-1, 3), axis=0).shape[0] > 10  # not blank


def _figure_of(monkeypatch, records, out, **kwargs):
    """plot_curves' figure as it is saved (plots._save closes it afterwards)."""
    figures = []
    save = plots._save

    def keep(fig, out_png, dpi=120):
        figures.append(fig)
        return save(fig, out_png, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    assert plot_curves(records, out, title="sst2_lora", **kwargs) == out
    _check_png(out)
    return figures[0]


def test_plot_curves_axes_hold_the_records(tmp_path, monkeypatch):
    """Train loss 1 / (1 + s/20) at s = 5 … 150 spans 2/17 … 0.8 (validation 0.5 … 0.3 lies
    inside): margins of 10% of the span, 0.06824, each side. Metrics 0.71 … 0.85: span 0.14,
    so the 0.05 minimum margin. x: 0 to the last step, 150, on both panels (issue #28)."""
    fig = _figure_of(monkeypatch, _records(True), tmp_path / "curves.png")
    ax_loss, ax_metric = fig.axes
    margin = 0.1 * (0.8 - 2 / 17)
    np.testing.assert_allclose(ax_loss.get_ylim(), (2 / 17 - margin, 0.8 + margin))
    np.testing.assert_allclose(ax_metric.get_ylim(), (0.71 - 0.05, 0.85 + 0.05))
    np.testing.assert_allclose(ax_loss.get_xlim(), (0, 150))
    np.testing.assert_allclose(ax_metric.get_xlim(), (0, 150))
    train, validation = ax_loss.get_lines()
    np.testing.assert_allclose(train.get_xydata()[[0, -1]], [[5, 1 / 1.25], [150, 1 / 8.5]])
    np.testing.assert_allclose(validation.get_xydata(), [[50, 0.5], [100, 0.4], [150, 0.3]])
    lines = {line.get_label(): line.get_xydata() for line in ax_metric.get_lines()}
    np.testing.assert_allclose(lines["accuracy"], [[50, 0.75], [100, 0.8], [150, 0.85]])
    np.testing.assert_allclose(lines["macro_f1"], [[50, 0.71], [100, 0.77], [150, 0.83]])
    assert fig._suptitle.get_text() == "sst2_lora"


def test_plot_curves_png_draws_the_train_line_in_the_left_panel(tmp_path):
    """The train loss line is matplotlib's first colour (#1f77b4); read back from the PNG it
    lies in the left panel and falls from left to right (loss 0.8 → 0.12)."""
    image = mpimg.imread(plot_curves(_records(False), tmp_path / "sub" / "curves.png"))[..., :3]
    blue = np.all(np.abs(image - np.array([31, 119, 180]) / 255) < 0.02, axis=-1)
    rows, cols = np.nonzero(blue)
    width = image.shape[1]
    # the right panel has no validation; the line ends on the left panel's right edge (x ends
    # at the last step, issue #28), which tight_layout puts a pixel or two past the middle
    assert len(cols) > 100 and cols.max() < 0.52 * width
    first, last = cols < np.percentile(cols, 10), cols > np.percentile(cols, 90)
    assert rows[first].mean() < rows[last].mean()  # image rows grow downwards: loss falls


def test_validation_is_plotted_against_steps():
    """The metrics panel shares the loss panel's x: steps, not epochs (eval_every runs have
    several evaluations per epoch)."""
    records = _records(True)
    series = plots.validation_series(records)
    assert series == {
        "accuracy": [(50 * e, 0.7 + 0.05 * e) for e in (1, 2, 3)],
        "macro_f1": [(50 * e, 0.65 + 0.06 * e) for e in (1, 2, 3)],
    }


def test_limits_of_a_single_point_or_a_flat_line():
    """matplotlib would draw one accuracy of 1.0 on a 0.96-1.04 axis; here the axis spans at
    least 0.1, clipped where the quantity cannot go (loss >= 0)."""
    assert plots.padded_limits([1.0]) == (0.95, 1.05)
    assert plots.padded_limits([0.7, 0.7, 0.7]) == (0.7 - 0.05, 0.7 + 0.05)
    assert plots.padded_limits([0.01], lo=0.0) == (0.0, 0.060000000000000005)
    low, high = plots.padded_limits([0.2, 0.8])
    assert np.isclose(low, 0.2 - 0.06) and np.isclose(high, 0.8 + 0.06)


def test_short_run_with_one_evaluation(tmp_path):
    """8 steps, two train-loss records and one evaluation (the quick start's shape)."""
    records = [
        dict(step=5, epoch=0.625, split="train", loss=0.694, metrics={}),
        dict(step=8, epoch=1.0, split="train", loss=0.691, metrics={}),
        dict(
            step=8,
            epoch=1.0,
            split="validation",
            loss=0.693,
            metrics={"accuracy": 0.5, "micro_f1": 0.5, "f1": 0.0, "mcc": 0.0},
        ),
    ]
    _check_png(plot_curves(records, tmp_path / "curves.png", title="tiny"))


def test_start_up_imports_no_matplotlib_and_plots_need_no_pyplot(tmp_path):
    """Issue #25: a command's start-up does not pay for matplotlib (imported by the plotting
    functions), and a plot is drawn on a bare Figure: PNG written, pyplot never imported (so
    no backend and no display is ever involved)."""
    code = (
        "import sys\n"
        "import bertjax.train.command\n"
        "print('matplotlib' in sys.modules)\n"
        "from bertjax.runs.plots import plot_curves\n"
        f"plot_curves([dict(step=1, split='train', loss=0.5)], {str(tmp_path / 'c.png')!r})\n"
        "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["False", "True False"]
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _majority_lines(ax) -> dict[str, tuple]:
    """{colour: (y values, x values in axes units)} of the lines labelled "majority class"."""
    return {
        line.get_color(): (tuple(line.get_ydata()), tuple(line.get_xdata()))
        for line in ax.get_lines()
        if line.get_label() == "majority class"
    }


def test_majority_class_line_for_each_metric_and_x_to_the_last_step(tmp_path, monkeypatch):
    """Issue #28: a dashed "majority class" line in each metric's colour at its baseline value
    (accuracy 0.6, macro_f1 0.375; mcc has no curve, so no line), spanning the whole axis, and
    both x axes from 0 to the run's last step (200, past the last record at 150). The y axis
    holds the baselines: 0.375 … 0.85, span 0.475, so the 0.05 minimum margin."""
    baseline = {"accuracy": 0.6, "macro_f1": 0.375, "mcc": 0.0}
    fig = _figure_of(
        monkeypatch, _records(True), tmp_path / "c.png", baseline=baseline, last_step=200
    )
    ax_loss, ax_metric = fig.axes
    np.testing.assert_allclose(ax_loss.get_xlim(), (0, 200))
    np.testing.assert_allclose(ax_metric.get_xlim(), (0, 200))
    colour = {line.get_label(): line.get_color() for line in ax_metric.get_lines()}
    assert _majority_lines(ax_metric) == {
        colour["accuracy"]: ((0.6, 0.6), (0, 1)),
        colour["macro_f1"]: ((0.375, 0.375), (0, 1)),
    }
    dashed = [line for line in ax_metric.get_lines() if line.get_label() == "majority class"]
    assert {line.get_linestyle() for line in dashed} == {"--"}
    np.testing.assert_allclose(ax_metric.get_ylim(), (0.375 - 0.05, 0.85 + 0.05))
    assert _majority_lines(ax_loss) == {}


def test_values_are_in_the_legend_not_on_the_axes(tmp_path, monkeypatch):
    """Values written beside points collided with each other and ran past the axis; each
    metric's best and last value is in its legend entry instead (accuracy 0.75, 0.8, 0.85 at
    steps 50, 100, 150: best 0.85 at 150), so no text sits on the axes and the legend's
    entries, drawn by the renderer, do not overlap."""
    from matplotlib.text import Annotation

    baseline = {"accuracy": 0.6, "macro_f1": 0.375}
    fig = _figure_of(monkeypatch, _records(True), tmp_path / "c.png", baseline=baseline)
    _, ax_metric = fig.axes
    assert [c for c in ax_metric.get_children() if isinstance(c, Annotation)] == []
    texts = ax_metric.get_legend().get_texts()
    assert [t.get_text() for t in texts] == [
        "accuracy: best 0.850 @ 150, last 0.850",
        "macro_f1: best 0.830 @ 150, last 0.830",
        "majority class (dashed)",
    ]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :]), (i, boxes)


def test_value_label_names_the_best_and_the_last_point():
    """The best is the highest value (the earliest of equal ones), the last is the last point."""
    points = [(10, 0.5), (20, 0.75), (30, 0.75), (40, 0.625)]
    assert plots.value_label("f1", points) == "f1: best 0.750 @ 20, last 0.625"
    assert plots.value_label("mcc", [(8, 0.0)]) == "mcc: 0.000"


def test_one_evaluation_run_reads_with_its_baseline(tmp_path, monkeypatch):
    """The quick start's shape: 8 steps, one evaluation at the last step. x ends at 8 (not
    8 · 1.45), each metric has its majority line (accuracy 0.5 = micro_f1 0.5, f1 0.0 = mcc
    0.0: four lines at two heights) and its value in the legend."""
    records = [
        dict(step=5, epoch=0.625, split="train", loss=0.694, metrics={}),
        dict(step=8, epoch=1.0, split="train", loss=0.691, metrics={}),
        dict(
            step=8,
            epoch=1.0,
            split="validation",
            loss=0.693,
            metrics={"accuracy": 0.5, "micro_f1": 0.5, "f1": 0.0, "mcc": 0.0},
        ),
    ]
    baseline = {"accuracy": 0.5, "micro_f1": 0.5, "f1": 0.0, "mcc": 0.0}
    fig = _figure_of(monkeypatch, records, tmp_path / "c.png", baseline=baseline)
    ax_loss, ax_metric = fig.axes
    np.testing.assert_allclose(ax_loss.get_xlim(), (0, 8))
    np.testing.assert_allclose(ax_metric.get_xlim(), (0, 8))
    heights = sorted(
        line.get_ydata()[0]
        for line in ax_metric.get_lines()
        if line.get_label() == "majority class"
    )
    assert heights == [0.0, 0.0, 0.5, 0.5]
    assert [t.get_text() for t in ax_metric.get_legend().get_texts()] == [
        "accuracy: 0.500",
        "f1: 0.000",
        "mcc: 0.000",
        "micro_f1: 0.500",
        "majority class (dashed)",
    ]


def test_learning_curves_draw_the_same_majority_line(tmp_path, monkeypatch):
    """plot_mean_curves' baseline is the same dashed line (grey, labelled with its value)."""
    figures = []
    save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, out, dpi=120: figures.append(fig) or save(fig, out, dpi)
    )
    lines = [("lora", np.array([1, 2]), np.array([0.7, 0.8]), np.array([0.01, 0.02]))]
    plots.plot_mean_curves(lines, tmp_path / "m.png", "accuracy", "t", baseline=0.55)
    axes = figures[0].axes[0]
    (majority,) = [line for line in axes.get_lines() if line.get_linestyle() == "--"]
    assert majority.get_label() == "majority class (0.550)"
    assert tuple(majority.get_ydata()) == (0.55, 0.55)


def test_a_run_draws_its_validation_baseline_to_its_last_step(
    tmp_path, monkeypatch, tiny_bert_vocab_dir, shared_data
):
    """finish hands plot_curves summary.json's validation majority baseline and the run's
    planned steps: 64 training examples in batches of 8, one epoch, 8 steps."""
    from bertjax.train import finish
    from bertjax.train import loop as training
    from tests.conftest import run_config

    calls = []
    draw = finish.plot_curves
    monkeypatch.setattr(
        finish, "plot_curves", lambda *args, **kwargs: calls.append(kwargs) or draw(*args, **kwargs)
    )
    config = run_config(tmp_path / "run", tiny_bert_vocab_dir, shared_data / "sst2")
    summary = training.train(config)
    (kwargs,) = calls
    assert kwargs["last_step"] == 64 // 8
    assert kwargs["baseline"] == summary["majority_baseline"]["validation"]
    assert set(kwargs["baseline"]) >= {"accuracy"}
    _check_png(tmp_path / "run" / "curves.png")
