"""plot_curves: its axes hold the records (limits and lines read from the figure), the PNG has
the train line where it belongs; a short run with one evaluation still reads."""

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


def _figure_of(monkeypatch, records, out):
    """plot_curves' figure as it is saved (plots._save closes it afterwards)."""
    figures = []
    save = plots._save

    def keep(fig, out_png, dpi=120):
        figures.append(fig)
        return save(fig, out_png, dpi)

    monkeypatch.setattr(plots, "_save", keep)
    assert plot_curves(records, out, title="sst2_lora") == out
    _check_png(out)
    return figures[0]


def test_plot_curves_axes_hold_the_records(tmp_path, monkeypatch):
    """Train loss 1 / (1 + s/20) at s = 5 … 150 spans 2/17 … 0.8 (validation 0.5 … 0.3 lies
    inside): margins of 10% of the span, 0.06824, each side. Metrics 0.71 … 0.85: span 0.14,
    so the 0.05 minimum margin. x: the last step 150, +5% (+45% on the right for labels)."""
    fig = _figure_of(monkeypatch, _records(True), tmp_path / "curves.png")
    ax_loss, ax_metric = fig.axes
    margin = 0.1 * (0.8 - 2 / 17)
    np.testing.assert_allclose(ax_loss.get_ylim(), (2 / 17 - margin, 0.8 + margin))
    np.testing.assert_allclose(ax_metric.get_ylim(), (0.71 - 0.05, 0.85 + 0.05))
    np.testing.assert_allclose(ax_loss.get_xlim(), (0, 157.5))
    np.testing.assert_allclose(ax_metric.get_xlim(), (0, 217.5))
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
    assert len(cols) > 100 and cols.max() < width / 2  # the right panel has no validation
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
