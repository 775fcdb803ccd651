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


# ------------------------------------------------------------ calibration
ECE_BINS = 15


def expected_calibration_error(probabilities, targets, *, bins: int = ECE_BINS) -> float:
    """ECE: the mean over ``bins`` equal-width confidence bins of |accuracy - mean confidence|, weighted by the
    share of rows in the bin (Guo et al. 2017). Confidence is the top class probability; bins are
    ``(lo, hi]`` (the first also takes 0). 0 for no rows."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    # bin i holds (i/bins, (i+1)/bins]; a confidence of exactly 0 goes to bin 0
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / len(targets))


def reliability_bins(probabilities, targets, *, bins: int = ECE_BINS) -> dict[str, list]:
    """Per confidence bin (as in :func:`expected_calibration_error`): row count, mean confidence and accuracy
    (None for an empty bin); what a reliability diagram draws."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts, mean_confidence, accuracies = [], [], []
    for b in range(bins):
        members = index == b
        counts.append(int(members.sum()))
        mean_confidence.append(float(confidence[members].mean()) if members.any() else None)
        accuracies.append(float(correct[members].mean()) if members.any() else None)
    return {"edges": [b / bins for b in range(bins + 1)], "count": counts, "confidence": mean_confidence, "accuracy": accuracies}


def brier_score(probabilities, targets) -> float:
    """Multi-class Brier score: mean over rows of sum_k (p_k - [y = k])^2 (0 is perfect, 2 the worst). 0 for no rows."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return 0.0
    onehot = np.zeros_like(probabilities)
    onehot[np.arange(len(targets)), targets] = 1.0
    return float(((probabilities - onehot) ** 2).sum(axis=1).mean())


def negative_log_likelihood(probabilities, targets) -> float:
    """Mean -log p(true class) (probabilities floored at 1e-12). 0 for no rows."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if len(targets) == 0:
        return 0.0
    return float(-np.log(np.maximum(probabilities[np.arange(len(targets)), targets], 1e-12)).mean())


# ------------------------------------------------------- opinion extraction
def _prf(true_positives: int, predicted: int, gold: int) -> dict[str, float]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _matched(gold: list[dict], predicted: list[dict], key) -> tuple[int, int, int]:
    """(true positives, predicted, gold) counts of one sentence, records compared by ``key`` as multisets."""
    from collections import Counter

    gold_keys = Counter(key(r) for r in gold if key(r) is not None)
    predicted_keys = Counter(key(r) for r in predicted if key(r) is not None)
    return sum((gold_keys & predicted_keys).values()), sum(predicted_keys.values()), sum(gold_keys.values())


def _type_agreement(gold: list[dict], predicted: list[dict]) -> tuple[int, int]:
    """(same type, matched) over gold records whose expression a prediction matches exactly (each prediction used once)."""
    remaining = list(predicted)
    same = matched = 0
    for record in gold:
        hit = next((p for p in remaining if p["expression"] == record["expression"]), None)
        if hit is None:
            continue
        remaining.remove(hit)
        matched += 1
        same += hit["type"] == record["type"]
    return same, matched


# A predicted span matches a gold one when their characters overlap by at least this share of their union.
OVERLAP_THRESHOLD = 0.5
_SIGNS = {"＋": "+", "−": "-"}


def span_overlap(gold: dict, predicted: dict, name: str) -> float:
    """Characters shared by two records' ``name`` spans (``expression`` / ``target``) over their union's characters.

    Spans are ``{name}_span`` = ``[start, end)`` in the sentence. A value with no span (not in the sentence,
    e.g. an implicit target) overlaps another value fully when the two strings are equal, else not at all.
    """
    a, b = gold.get(f"{name}_span"), predicted.get(f"{name}_span")
    if a and b:
        shared = max(0, min(a[1], b[1]) - max(a[0], b[0]))
        union = (a[1] - a[0]) + (b[1] - b[0]) - shared
        return shared / union if union else 0.0
    return 1.0 if gold.get(name) and gold.get(name) == predicted.get(name) else 0.0


def overlap_pairs(gold: list[dict], predicted: list[dict], name: str, *, threshold: float = OVERLAP_THRESHOLD) -> list[tuple[int, int]]:
    """One-to-one (gold index, predicted index) pairs whose ``name`` spans overlap by >= ``threshold`` of their union.

    Greedy by overlap: every candidate pair at or above the threshold, the largest overlap first (ties: the
    earlier gold, then the earlier prediction), is kept when neither record is paired yet. Records with an
    empty ``name`` take no part.
    """
    candidates = []
    for i, g in enumerate(gold):
        for j, p in enumerate(predicted):
            if g.get(name) and p.get(name):
                overlap = span_overlap(g, p, name)
                if overlap >= threshold - 1e-12:
                    candidates.append((-overlap, i, j))
    used_gold: set[int] = set()
    used_predicted: set[int] = set()
    pairs = []
    for _, i, j in sorted(candidates):
        if i not in used_gold and j not in used_predicted:
            used_gold.add(i)
            used_predicted.add(j)
            pairs.append((i, j))
    return pairs


def record_polarity(record: dict) -> str:
    """``+`` / ``-`` / ``none``: the record's ``polarity`` when set, else the sign its type ends with (KNBC's ＋ / −)."""
    value = record.get("polarity") or _SIGNS.get((record.get("type") or "")[-1:])
    return value if value in ("+", "-") else "none"


def overlap_scores(*, gold: list[list[dict]], predicted: list[list[dict]]) -> dict[str, Any]:
    """Overlap F1 of expressions and targets, and polarity / type accuracy on the overlap-matched expressions.

    Per sentence, expressions (and, separately, non-empty targets) are paired one-to-one by
    :func:`overlap_pairs`; precision = pairs / predicted, recall = pairs / gold. Over the expression pairs:
    polarity accuracy (+ / - / none, :func:`record_polarity`), type accuracy (the 12 KNBC types) and, per
    gold or predicted type, ``type_counts`` = {gold, predicted, matched (gold records of the type paired),
    correct (paired with a prediction of the same type)}.
    """
    totals = {name: np.zeros(3, dtype=np.int64) for name in ("expression", "target")}
    same_polarity = same_type = matched = 0
    counts: dict[str, dict[str, int]] = {}

    def count(kind: str, key: str) -> None:
        counts.setdefault(kind, {"gold": 0, "predicted": 0, "matched": 0, "correct": 0})[key] += 1

    for gold_records, predicted_records in zip(gold, predicted, strict=True):
        for name in totals:
            pairs = overlap_pairs(gold_records, predicted_records, name)
            present = (sum(1 for r in predicted_records if r.get(name)), sum(1 for r in gold_records if r.get(name)))
            totals[name] += (len(pairs), *present)
            if name != "expression":
                continue
            for i, j in pairs:
                g, p = gold_records[i], predicted_records[j]
                matched += 1
                same_polarity += record_polarity(g) == record_polarity(p)
                same_type += g["type"] == p["type"]
                count(g["type"], "matched")
                if g["type"] == p["type"]:
                    count(g["type"], "correct")
        for record in gold_records:
            count(record["type"], "gold")
        for record in predicted_records:
            count(record["type"], "predicted")
    scores: dict[str, Any] = {f"{name}_overlap_{k}": v for name, c in totals.items() for k, v in _prf(*c.tolist()).items()}
    scores.update(
        polarity_accuracy=same_polarity / matched if matched else 0.0,
        type_accuracy_overlap=same_type / matched if matched else 0.0,
        overlap_matched=matched,
        type_counts={kind: counts[kind] for kind in sorted(counts)},
    )
    return scores


def opinion_scores(*, gold: list[list[dict]], predicted: list[list[dict]]) -> dict[str, Any]:
    """Extraction scores over sentences; each record is ``{type, expression, target}``, optionally ``tokens``
    (the source token indices its expression covers, for the token-level F1).

    record: type + expression + target all equal; typed expression: type + expression; expression: exact
    string; target: non-empty targets;
    expression tokens: micro-F1 over (sentence, token index) of the expressions' tokens;
    type accuracy: over gold records whose expression is matched exactly; no opinion: a sentence
    with no record is the positive class; and the overlap scores of :func:`overlap_scores` (records with
    ``expression_span`` / ``target_span`` in their sentence).
    """
    keys = {
        "record": lambda r: (r["type"], r["expression"], r["target"]),
        "expression": lambda r: r["expression"],
        "typed_expression": lambda r: (r["type"], r["expression"]),
        "target": lambda r: r["target"] or None,
    }
    totals = {name: np.zeros(3, dtype=np.int64) for name in (*keys, "expression_tokens")}
    same = matched = empty_both = empty_predicted = empty_gold = 0
    for gold_records, predicted_records in zip(gold, predicted, strict=True):
        for name, key in keys.items():
            totals[name] += _matched(gold_records, predicted_records, key)
        gold_tokens = {i for r in gold_records for i in r.get("tokens", ())}
        predicted_tokens = {i for r in predicted_records for i in r.get("tokens", ())}
        totals["expression_tokens"] += (len(gold_tokens & predicted_tokens), len(predicted_tokens), len(gold_tokens))
        agree, found = _type_agreement(gold_records, predicted_records)
        same, matched = same + agree, matched + found
        empty_gold += not gold_records
        empty_predicted += not predicted_records
        empty_both += not gold_records and not predicted_records
    scores: dict[str, Any] = {f"{name}_{k}": v for name, counts in totals.items() for k, v in _prf(*counts.tolist()).items()}
    no_opinion = _prf(empty_both, empty_predicted, empty_gold)
    scores.update(
        type_accuracy=same / matched if matched else 0.0,
        type_matched=matched,
        no_opinion_precision=no_opinion["precision"],
        no_opinion_recall=no_opinion["recall"],
        sentences=len(gold),
        gold_records=int(totals["record"][2]),
        predicted_records=int(totals["record"][1]),
    )
    scores.update(overlap_scores(gold=gold, predicted=predicted))
    return scores


# ------------------------------------------------------------ seed spread
def mean_std(values) -> tuple[float, float]:
    """Mean and population std (ddof 0: the spread of the seeds we ran, not an estimate for others)."""
    array = np.asarray(list(values), dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_std of no values")
    return float(array.mean()), float(array.std())


def median_index(values) -> int:
    """Index of the median of ``values``; for an even count the lower middle one (a value that exists).

    Ties keep the earlier index (the lower seed), so the choice is deterministic.
    """
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return order[(len(order) - 1) // 2]


def within_noise(*, mean_a: float, std_a: float, mean_b: float, std_b: float) -> bool:
    """Whether two rows differ by no more than their seed spread: ``|mean_a - mean_b| <= max(std_a, std_b)``.

    A difference as large as one row's own seed-to-seed standard deviation could come from the
    seed alone, so it is not read as one row beating the other. Two deterministic rows (std 0)
    are within noise only when equal. (The figures are rounded to 4 digits; the 1e-9 keeps a
    difference exactly at the spread from failing on float error.)
    """
    return abs(mean_a - mean_b) <= max(std_a, std_b) + 1e-9
