"""Retrofitting (Faruqui et al., 2015) of a vector source to the dev half's synonym groups: an experiment.

Each row ``i`` with synonym neighbours ``N(i)`` (rows of other member keys of a covered dev group)
is moved, ten times over, to ``(alpha * original_i + sum_j beta_ij * current_j) / (alpha + sum_j beta_ij)``
with ``beta_ij = 1 / |N(i)|``: the paper's update and defaults (alpha 1). Keys sharing a row move
together. Retrofitting learns from dev only, so its dev figures are inflated by construction; the
test half decides: it would ship as a source only if its test ROC-AUC rises at no loss of coverage
(retrofitting never adds keys, so coverage cannot change).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def synonym_edges(index, pair_groups: list[set[str]]) -> list[list[int]]:
    """Per row, the rows of its synonyms (distinct rows, never itself): the retrofitting graph."""
    neighbours: list[set[int]] = [set() for _ in range(len(index))]
    for keys in pair_groups:
        rows = {index.key_to_index[key] for key in keys}
        for row in rows:
            neighbours[row] |= rows - {row}
    return [sorted(rows) for rows in neighbours]


def retrofit_rows(rows: np.ndarray, neighbours: list[list[int]], *, alpha: float = 1.0, iterations: int = 10) -> np.ndarray:
    """(n, dim) unit rows after retrofitting ``rows`` (unit, float32) to the graph ``neighbours``."""
    original = np.asarray(rows, dtype=np.float32)
    current = original.copy()
    linked = [row for row, others in enumerate(neighbours) if others]
    for _ in range(iterations):
        for row in linked:
            others = neighbours[row]
            # beta = 1 / degree: the neighbours together weigh 1, the original vector alpha.
            current[row] = (alpha * original[row] + current[others].sum(axis=0) / len(others)) / (alpha + 1.0)
    norms = np.linalg.norm(current, axis=1, keepdims=True)
    return current / np.where(norms > 0, norms, 1.0)


def retrofit_experiment(
    vectors, halves: dict, *, base: dict[str, Any], per_positive: int, seed: int, alpha: float = 1.0, iterations: int = 10
) -> dict[str, Any]:
    """Retrofit ``vectors``' source on dev, evaluate both halves; ``base`` is the source's own split figures."""
    from pipeline.evaluation.synonym_splits import coverage_counts, evaluate_source_splits, resolve_headwords
    from pipeline.vectors.query import VectorIndex, Vectors

    index = vectors.index
    dev = halves["dev"]
    _, pair_groups = coverage_counts(dev, resolve_headwords(vectors, {word for words in dev.values() for word in words}))
    neighbours = synonym_edges(index, pair_groups)
    unit = np.asarray(index.vectors, dtype=np.float32) / index.norms[:, None]
    rows = retrofit_rows(unit, neighbours, alpha=alpha, iterations=iterations)
    meta = {**index.meta, "unit_normalized": True}
    retrofitted = VectorIndex(source=f"{index.source}+retrofit", words=index.words, vectors=rows, meta=meta, keys=index.keys)
    result = evaluate_source_splits(
        Vectors(retrofitted, split_mode=vectors.split_mode, tokenizer=vectors._tokenizer), halves, per_positive=per_positive, seed=seed
    )
    test, base_test = result["test"], base["test"]
    ships = (test["roc_auc"] or 0) > (base_test["roc_auc"] or 0) and test["coverage"] >= base_test["coverage"]
    return {
        "source": index.source,
        "alpha": alpha,
        "iterations": iterations,
        "rows_moved": sum(1 for others in neighbours if others),
        "dev": result["dev"],
        "test": result["test"],
        "base_test_roc_auc": base_test["roc_auc"],
        "ships": ships,
        "note": "dev figures are inflated (the groups retrofitted on); ships only if the test ROC-AUC rises at equal coverage",
    }
