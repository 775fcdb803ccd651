"""Classification and language-model metrics, each defined once (numpy only).

Training (early stopping on dev macro-F1, dev perplexity) and evaluation (test-split
reports) both call these functions, so a figure in a training log and the same figure
in a report are computed by the same code.

Conventions (those of scikit-learn with ``zero_division=0``): a precision, recall or
F1 whose denominator is 0 is 0, and a class that is never true nor predicted still
counts in the macro average (with F1 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def confusion_matrix(targets, predictions, *, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: rows are the true class, columns the predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(targets, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64), where=denominator > 0)


def per_class_scores(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (float64, shape (C,)) and support (int64) of a confusion matrix."""
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, actual)
    # F1 = 2PR / (P + R): the formula early stopping has always used (bit-identical dev figures)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def macro_f1(targets, predictions, *, num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over ``num_classes`` classes."""
    return float(per_class_scores(confusion_matrix(targets, predictions, num_classes=num_classes))["f1"].mean())


def accuracy(targets, predictions) -> float:
    """Share of positions where prediction equals target (0 for no positions)."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    return float((targets == predictions).mean()) if len(targets) else 0.0


def classification_report(*, targets, predictions, labels: list[str], digits: int = 4) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision / recall / F1 / support, rounded to ``digits``."""
    scores = per_class_scores(confusion_matrix(targets, predictions, num_classes=len(labels)))
    return {
        "accuracy": round(accuracy(targets, predictions), digits),
        "macro_f1": round(float(scores["f1"].mean()), digits),
        "per_class": {
            label: {
                "precision": round(float(scores["precision"][i]), digits),
                "recall": round(float(scores["recall"][i]), digits),
                "f1": round(float(scores["f1"][i]), digits),
                "support": int(scores["support"][i]),
            }
            for i, label in enumerate(labels)
        },
        "test_sentences": len(targets),
    }


def perplexity(total_nll: float, count: int) -> float:
    """exp(total negative log-likelihood in nats / number of predicted targets); 1 target at least."""
    return math.exp(total_nll / max(count, 1))
