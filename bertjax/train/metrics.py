"""Evaluation metrics in plain numpy: classification (accuracy, F1, MCC) and regression."""

import numpy as np


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_labels: int) -> np.ndarray:
    """labels, preds: [n] ints in [0, num_labels). Returns counts [true, predicted]."""
    flat = labels.astype(np.int64) * num_labels + preds.astype(np.int64)
    return np.bincount(flat, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Elementwise 2tp / (2tp + fp + fn), 0 where undefined (sklearn's zero_division=0)."""
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def matthews_corrcoef(confusion: np.ndarray) -> float:
    """Multiclass MCC (Gorodkin 2004, as sklearn) from a [k, k] confusion matrix; 0 if undefined."""
    c = confusion.astype(np.float64)
    n, correct = c.sum(), np.trace(c)
    true, pred = c.sum(axis=1), c.sum(axis=0)
    denom = np.sqrt((n * n - pred @ pred) * (n * n - true @ true))
    return float((correct * n - true @ pred) / denom) if denom > 0 else 0.0


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """logits: [n, k] with k >= 2, labels: [n] ints in [0, k).

    macro_f1 averages over the classes that occur in labels or predictions (as sklearn does);
    `f1` (binary F1 of class 1, GLUE MRPC/QQP) is added when k == 2.
    """
    k = logits.shape[1]
    preds = logits.argmax(axis=-1)
    confusion = confusion_matrix(labels, preds, k)
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    present = (tp + fp + fn) > 0
    metrics = {
        "accuracy": float(tp.sum() / len(labels)),
        "macro_f1": float(_f1(tp, fp, fn)[present].mean()),
        "micro_f1": float(_f1(tp.sum(), fp.sum(), fn.sum())),
        "mcc": matthews_corrcoef(confusion),
    }
    if k == 2:
        metrics["f1"] = float(_f1(tp[1], fp[1], fn[1]))
    return metrics


def rank_average(x: np.ndarray) -> np.ndarray:
    """x: [n]. 1-based ranks, ties get their average rank (scipy.stats.rankdata default)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_group = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), np.float64)
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(starts_group) - 1]
    return ranks


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """x, y: [n]. Pearson correlation; nan when either is constant (as scipy)."""
    x = x.astype(np.float64) - x.mean()
    y = y.astype(np.float64) - y.mean()
    denom = np.sqrt((x @ x) * (y @ y))
    return float(x @ y / denom) if denom > 0 else float("nan")


def regression_metrics(preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """preds, labels: [n] floats."""
    preds = preds.astype(np.float64)
    labels = labels.astype(np.float64)
    return {
        "mse": float(np.mean((preds - labels) ** 2)),
        "pearson": pearson(preds, labels),
        "spearman": pearson(rank_average(preds), rank_average(labels)),
    }


def compute_metrics(logits: np.ndarray, labels: np.ndarray, num_labels: int) -> dict[str, float]:
    """logits: [n, num_labels], labels: [n]. Regression when num_labels == 1 (logits[:, 0])."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape != (len(labels), num_labels):
        raise ValueError(
            f"logits shape {logits.shape} does not match {len(labels)} labels x {num_labels}"
        )
    if len(labels) == 0:
        raise ValueError("no examples to compute metrics on")
    if num_labels == 1:
        return regression_metrics(logits[:, 0], labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_labels) | (labels != labels.astype(int)))
    if len(bad):
        raise ValueError(f"label {labels[bad[0]]} at row {bad[0]} not in [0, {num_labels})")
    return classification_metrics(logits, labels.astype(np.int64))
