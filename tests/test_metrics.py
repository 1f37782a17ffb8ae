"""Metrics: hand-computed cases, and agreement with sklearn / scipy where installed."""

import numpy as np
import pytest

from bertjax.train.metrics import compute_metrics, rank_average


def one_hot_logits(preds: list[int], num_labels: int) -> np.ndarray:
    return np.eye(num_labels, dtype=np.float32)[preds]


def test_binary_by_hand():
    labels = np.array([1, 1, 0, 0, 1])
    logits = one_hot_logits([1, 0, 0, 1, 1], 2)
    m = compute_metrics(logits, labels, 2)
    # class 1: tp 2, fp 1, fn 1; class 0: tp 1, fp 1, fn 1.
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["micro_f1"] == pytest.approx(0.6)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["mcc"] == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))


def test_multiclass_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    m = compute_metrics(one_hot_logits([0, 1, 1, 1, 2, 0], 3), labels, 3)
    # confusion [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert m["mcc"] == pytest.approx((4 * 6 - 12) / np.sqrt((36 - 14) * (36 - 12)))
    assert "f1" not in m


def test_macro_f1_skips_classes_absent_from_labels_and_predictions():
    m = compute_metrics(one_hot_logits([0, 1, 1], 4), np.array([0, 1, 0]), 4)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_degenerate_cases():
    m = compute_metrics(one_hot_logits([1, 1, 1], 2), np.array([0, 1, 1]), 2)
    assert m["mcc"] == 0.0 and m["f1"] == pytest.approx(0.8)
    perfect = compute_metrics(one_hot_logits([0, 1, 2], 3), np.array([0, 1, 2]), 3)
    assert perfect["mcc"] == pytest.approx(1.0) and perfect["macro_f1"] == pytest.approx(1.0)
    none_positive = compute_metrics(one_hot_logits([0, 0], 2), np.array([0, 0]), 2)
    assert none_positive["f1"] == 0.0 and none_positive["accuracy"] == 1.0


def test_regression_by_hand():
    m = compute_metrics(np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([2.0, 4, 6, 8]), 1)
    assert m == pytest.approx({"mse": 7.5, "pearson": 1.0, "spearman": 1.0})
    np.testing.assert_array_equal(rank_average(np.array([3.0, 1, 1, 2])), [4, 1.5, 1.5, 3])
    tied = compute_metrics(np.array([[1.0], [1.0], [2.0], [3.0]]), np.array([1.0, 2, 3, 4]), 1)
    assert tied["spearman"] == pytest.approx(4.5 / np.sqrt(4.5 * 5))
    assert np.isnan(compute_metrics(np.ones((3, 1)), np.array([1.0, 2, 3]), 1)["pearson"])


def test_errors():
    with pytest.raises(ValueError, match=r"logits shape \(3, 2\) does not match 3 labels x 3"):
        compute_metrics(np.zeros((3, 2)), np.zeros(3, int), 3)
    with pytest.raises(ValueError, match=r"label 2 at row 1 not in \[0, 2\)"):
        compute_metrics(np.zeros((2, 2)), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match=r"label -1 at row 0"):
        compute_metrics(np.zeros((1, 2)), np.array([-1]), 2)


@pytest.mark.parametrize("num_labels", [2, 3, 6])
def test_classification_matches_sklearn(num_labels):
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(num_labels)
    for n in (7, 50, 300):
        labels = rng.integers(0, num_labels, n)
        logits = rng.normal(size=(n, num_labels)) + 1.5 * np.eye(num_labels)[labels]
        preds = logits.argmax(-1)
        m = compute_metrics(logits, labels, num_labels)
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
        assert m["macro_f1"] == pytest.approx(
            skm.f1_score(labels, preds, average="macro", zero_division=0)
        )
        assert m["micro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="micro"))
        assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(labels, preds))
        if num_labels == 2:
            assert m["f1"] == pytest.approx(skm.f1_score(labels, preds))


def test_regression_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (5, 40, 500):
        labels = np.round(rng.uniform(0, 5, n), 1)  # rounding makes ties
        preds = np.round(labels + rng.normal(0, 1, n), 0)
        m = compute_metrics(preds[:, None], labels, 1)
        assert m["mse"] == pytest.approx(np.mean((preds - labels) ** 2))
        assert m["pearson"] == pytest.approx(stats.pearsonr(preds, labels)[0])
        assert m["spearman"] == pytest.approx(stats.spearmanr(preds, labels)[0])
        np.testing.assert_allclose(rank_average(preds), stats.rankdata(preds))
