"""pipeline.metrics against hand-computed values (and scikit-learn's definitions, where installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.metrics import accuracy, classification_report, confusion_matrix, macro_f1, per_class_scores, perplexity

# true 0 0 1 1 2 2 / predicted 0 1 1 1 0 2
TARGETS = [0, 0, 1, 1, 2, 2]
PREDICTIONS = [0, 1, 1, 1, 0, 2]


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(TARGETS, PREDICTIONS, num_classes=3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert confusion_matrix([], [], num_classes=2).tolist() == [[0, 0], [0, 0]]


def test_per_class_scores_by_hand():
    scores = per_class_scores(confusion_matrix(TARGETS, PREDICTIONS, num_classes=3))
    # precision = tp / predicted: 1/2, 2/3, 1/1; recall = tp / true: 1/2, 2/2, 1/2
    assert scores["precision"] == pytest.approx([0.5, 2 / 3, 1.0])
    assert scores["recall"] == pytest.approx([0.5, 1.0, 0.5])
    # F1 = 2PR / (P + R): 0.5, (4/3) / (5/3) = 0.8, 1 / 1.5
    assert scores["f1"] == pytest.approx([0.5, 0.8, 2 / 3])
    assert scores["support"].tolist() == [2, 2, 2]


def test_macro_f1_and_accuracy_by_hand():
    assert macro_f1(TARGETS, PREDICTIONS, num_classes=3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # a class never true nor predicted scores F1 0 and still counts in the mean
    assert macro_f1(TARGETS, PREDICTIONS, num_classes=4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 4)
    assert macro_f1(np.array([1, 1]), np.array([1, 1]), num_classes=2) == pytest.approx(0.5)
    assert accuracy(TARGETS, PREDICTIONS) == pytest.approx(4 / 6)
    assert accuracy([], []) == 0.0


def test_classification_report_rounds_and_names_classes():
    report = classification_report(targets=TARGETS, predictions=PREDICTIONS, labels=["a", "b", "c"])
    assert report["accuracy"] == 0.6667 and report["macro_f1"] == 0.6556 and report["test_sentences"] == 6
    assert report["per_class"]["b"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert report["per_class"]["c"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}


def test_same_figures_as_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(20):
        num_classes = 2 + trial % 4
        targets = rng.integers(0, num_classes, size=50)
        predictions = np.where(rng.random(50) < 0.6, targets, rng.integers(0, num_classes - 1, size=50))  # one class rarely predicted
        labels = list(range(num_classes))
        precision, recall, f1, support = metrics.precision_recall_fscore_support(targets, predictions, labels=labels, zero_division=0)
        ours = per_class_scores(confusion_matrix(targets, predictions, num_classes=num_classes))
        assert ours["precision"] == pytest.approx(precision, abs=1e-12) and ours["recall"] == pytest.approx(recall, abs=1e-12)
        assert ours["f1"] == pytest.approx(f1, abs=1e-12) and ours["support"].tolist() == support.tolist()
        expected = metrics.f1_score(targets, predictions, labels=labels, average="macro", zero_division=0)
        assert macro_f1(targets, predictions, num_classes=num_classes) == pytest.approx(expected, abs=1e-12)
        assert accuracy(targets, predictions) == metrics.accuracy_score(targets, predictions)


def test_perplexity_from_nll_and_count():
    assert perplexity(2 * math.log(4), 2) == pytest.approx(4.0)
    assert perplexity(math.log(2) + math.log(8), 2) == pytest.approx(4.0)  # geometric mean of 1/p
    assert perplexity(0.0, 0) == 1.0  # no targets: no uncertainty measured
