"""plot_curves writes a readable, non-blank PNG, with or without validation rows; a short run
with one evaluation still reads (x in steps, limits that do not blow up noise)."""

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


def test_plot_curves_writes_png(tmp_path):
    out = plot_curves(_records(True), tmp_path / "curves.png", title="sst2_lora")
    assert out == tmp_path / "curves.png"
    _check_png(out)


def test_plot_curves_without_validation(tmp_path):
    _check_png(plot_curves(_records(False), tmp_path / "sub" / "curves.png"))


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
