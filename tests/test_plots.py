"""plot_curves writes a readable, non-blank PNG, with or without validation rows."""

import matplotlib.image as mpimg
import numpy as np

from bertjax.plots import plot_curves


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
