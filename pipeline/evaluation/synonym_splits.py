"""Synonym coverage and ROC-AUC of every vector source on two fixed halves of the Sudachi synonym groups.

The groups are split by group id into "dev" and "test" (a hash of the id, so the halves never
change with the file's order or a seed). Choices between sources (for example whether the
``combined`` source is worth shipping) are made on dev; test is reported, never tuned on.

A headword is looked up exactly as ``jpipe similar`` looks up a query (:class:`pipeline.vectors.Vectors`):
the headword itself when it is a key, else Sudachi's forms of its one content token (the source's
token field first: surface, normalized form, lemma for ginza). A headword that Sudachi splits into
several content tokens, all keys, is **composed** (the average of its parts): reported apart,
never counted as covered.

* **coverage** (the goal's figure): share of the half's groups with at least two member words
  found as *different* keys. あいまい and 曖昧 both normalize to 曖昧: two words found, one key,
  one vector, no synonym pair to score; such a group is not covered.
* **coverage_words**: at least two member words found as keys, even the same key (what a user
  can query; always >= coverage).
* **coverage_with_composed**: composed headwords counted too.
* **ROC-AUC**: cosine of the synonym pairs of covered groups (distinct keys) against random pairs
  that keep one word of each synonym pair and draw the other from the half's covered words.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from itertools import combinations
from typing import Any

import numpy as np

from pipeline.errors import InputError

logger = logging.getLogger(__name__)

SPLITS = ("dev", "test")
# The bar for the best source on the test half.
GOALS = {"coverage": 0.5, "roc_auc": 0.85}
# Dev coverages closer than this (half a point, ~60 groups) are a tie, decided by dev ROC-AUC:
# a combination must cover clearly more, not 0.1 point more at a lower AUC.
COVERAGE_TIE = 0.005


def split_of(group_id: str) -> str:
    """ "dev" or "test" for a synonym group id: the parity of the first byte of its BLAKE2b digest."""
    return SPLITS[hashlib.blake2b(group_id.encode("utf-8"), digest_size=8).digest()[0] & 1]


def split_groups(raw_groups: dict[str, list[tuple[str, str]]]) -> dict[str, dict[str, list[str]]]:
    """``{"dev": {group id: [distinct headwords]}, "test": {...}}``."""
    halves: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS}
    for group_id, entries in raw_groups.items():
        headwords = list(dict.fromkeys(headword for _, headword in entries if headword))
        halves[split_of(group_id)][group_id] = headwords
    return halves


def check_groups(raw_groups: dict[str, list[tuple[str, str]]], *, path) -> None:
    """An empty or unusable dictionary is an error naming the file (E270), not a report of zeros."""
    if not any(len(entries) >= 2 for entries in raw_groups.values()):
        raise InputError(
            "E270",
            f"Synonym dictionary {path} has no group with two or more words.",
            hint="Give the Sudachi synonym file (synonyms.txt or synonyms.txt.gz) in evaluate_vectors.synonyms_path.",
        )


class CachingTokenizer:
    """Tokenizes each text once, however many sources look it up (Sudachi is the slow part)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[str, dict[str, list[str]]] = {}

    def tokenize(self, text: str) -> dict[str, list[str]]:
        if text not in self.cache:
            self.cache[text] = self.tokenizer.tokenize(text)
        return self.cache[text]


def resolve_headwords(vectors, headwords: Iterable[str]) -> dict[str, Any]:
    """headword -> :class:`ResolvedQuery` (``composed`` when averaged) or None, the query path's way."""
    return {word: vectors.try_resolve(word) for word in headwords}


def _members(headwords: list[str], resolved: dict[str, Any]) -> tuple[int, set[str], int]:
    """(member words found as keys, the distinct keys they map to, member words only composed) of one group."""
    found_words, composed_words = 0, 0
    keys: set[str] = set()
    for word in headwords:
        found = resolved.get(word)
        if found is None:
            continue
        if found.composed:
            composed_words += 1
        else:
            found_words += 1
            keys.add(found.keys[0])
    return found_words, keys, composed_words


def coverage_counts(groups: dict[str, list[str]], resolved: dict[str, Any]) -> tuple[dict[str, Any], list[set[str]]]:
    """Coverage figures of one half, and the distinct member keys of each covered group (the AUC's pairs).

    ``coverage``: >= 2 member words found as different keys (a synonym pair to score).
    ``coverage_words``: >= 2 member words found as keys, as typed or as their normalized form / lemma
    (あいまい and 曖昧 both count: both can be queried, though they are one vector).
    """
    found_two = covered = with_composed = found_total = composed_total = 0
    pair_groups: list[set[str]] = []
    for headwords in groups.values():
        found, keys, composed = _members(headwords, resolved)
        found_total += found
        composed_total += composed
        found_two += found >= 2
        with_composed += len(keys) + composed >= 2
        if len(keys) >= 2:
            covered += 1
            pair_groups.append(keys)
    total = max(1, len(groups))
    figures = {
        "groups": len(groups),
        "groups_covered": covered,
        "coverage": round(covered / total, 4),
        "groups_with_2_words_found": found_two,
        "coverage_words": round(found_two / total, 4),
        "groups_covered_with_composed": with_composed,
        "coverage_with_composed": round(with_composed / total, 4),
        "words_found_as_keys": found_total,
        "words_composed": composed_total,
    }
    return figures, pair_groups


def synonym_pairs(covered: list[set[str]]) -> tuple[list[tuple[str, str]], dict[str, set[str]]]:
    """Distinct unordered key pairs within covered groups, and key -> its synonyms."""
    pairs: set[tuple[str, str]] = set()
    synonyms: dict[str, set[str]] = {}
    for keys in covered:
        for a, b in combinations(sorted(keys), 2):
            pairs.add((a, b))
            synonyms.setdefault(a, set()).add(b)
            synonyms.setdefault(b, set()).add(a)
    return sorted(pairs), synonyms


def row_cosines(index, pairs: list[tuple[str, str]]) -> np.ndarray:
    """(len(pairs),) cosine of each key pair (keys on one row score 1.0)."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    rows = index.key_to_index
    left = np.asarray([rows[a] for a, _ in pairs], dtype=np.int64)
    right = np.asarray([rows[b] for _, b in pairs], dtype=np.int64)
    unique, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    # (len(unique), dim) unit rows, read once each from the (memory-mapped) table
    unit = np.asarray(index.vectors[unique], dtype=np.float32) / index.norms[unique][:, None]
    return np.einsum("ij,ij->i", unit[inverse[: len(pairs)]], unit[inverse[len(pairs) :]])


def split_auc(index, covered: list[set[str]], *, per_positive: int, seed: int) -> dict[str, Any]:
    """ROC-AUC of the half's synonym pairs against random pairs over the half's covered words."""
    from pipeline.evaluation.vectors import roc_auc, sample_negative_pairs

    pairs, synonyms = synonym_pairs(covered)
    pool = sorted(synonyms)
    if not pairs or len(pool) < 3:
        return {"pairs": len(pairs), "roc_auc": None}
    negatives = sample_negative_pairs(pairs, pool=pool, synonyms=synonyms, per_positive=per_positive, rng=np.random.default_rng(seed))
    positive, negative = row_cosines(index, pairs), row_cosines(index, negatives)
    auc = roc_auc(positive, negative)
    rows = index.key_to_index
    return {
        "pairs": len(pairs),
        "random_pairs": len(negatives),
        "roc_auc": None if auc is None else round(auc, 4),
        "mean_cosine_synonyms": round(float(positive.mean()), 4),
        "mean_cosine_random": round(float(negative.mean()), 4),
        "synonym_pairs_on_one_row": sum(rows[a] == rows[b] for a, b in pairs),
    }


def evaluate_source_splits(vectors, halves: dict[str, dict[str, list[str]]], *, per_positive: int, seed: int) -> dict[str, Any]:
    """``{"dev": {coverage..., roc_auc...}, "test": {...}}`` for one source (a :class:`Vectors`)."""
    result = {}
    for name in SPLITS:
        groups = halves[name]
        resolved = resolve_headwords(vectors, {word for words in groups.values() for word in words})
        figures, covered = coverage_counts(groups, resolved)
        result[name] = figures | split_auc(vectors.index, covered, per_positive=per_positive, seed=seed)
    logger.info(
        "%s: coverage dev %.1f%% / test %.1f%%, ROC-AUC dev %s / test %s",
        vectors.source,
        100 * result["dev"]["coverage"],
        100 * result["test"]["coverage"],
        result["dev"]["roc_auc"],
        result["test"]["roc_auc"],
    )
    return result


def choose_on_dev(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The source chosen on the dev half: the best dev coverage among sources at the AUC bar (coverages within
    ``COVERAGE_TIE`` of the best are a tie, won by the higher dev AUC), else the best dev AUC.

    Its test figures are reported beside the goals; the choice never looks at test.
    """
    if not results:
        return {"source": None}
    at_bar = [name for name, r in results.items() if (r["dev"]["roc_auc"] or 0) >= GOALS["roc_auc"]]
    if at_bar:
        top = max(results[name]["dev"]["coverage"] for name in at_bar)
        tied = [name for name in at_bar if results[name]["dev"]["coverage"] >= top - COVERAGE_TIE]
        best = max(tied, key=lambda name: results[name]["dev"]["roc_auc"])
        rule = (
            f"highest dev coverage among sources with dev ROC-AUC >= {GOALS['roc_auc']} "
            f"(within {100 * COVERAGE_TIE:.1f} point: higher dev ROC-AUC)"
        )
    else:
        best = max(results, key=lambda name: (results[name]["dev"]["roc_auc"] or 0, results[name]["dev"]["coverage"]))
        rule = "no source reaches the ROC-AUC bar on dev: highest dev ROC-AUC"
    test = results[best]["test"]
    return {
        "source": best,
        "rule": rule,
        "test_coverage": test["coverage"],
        "test_roc_auc": test["roc_auc"],
        "goals": GOALS,
        "meets_goals_on_test": test["coverage"] >= GOALS["coverage"] and (test["roc_auc"] or 0) >= GOALS["roc_auc"],
    }


def coverage_table(results: dict[str, dict[str, Any]]) -> str:
    """A readable Markdown table of the per-source figures (written beside the JSON report)."""
    lines = [
        "| source | half | groups | coverage (2+ distinct keys) | 2+ words found | + composed | ROC-AUC | synonym pairs | pairs on one row |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        for half in SPLITS:
            r = result[half]
            auc = "-" if r["roc_auc"] is None else f"{r['roc_auc']:.4f}"
            lines.append(
                f"| {name} | {half} | {r['groups']:,} | {100 * r['coverage']:.1f}% | {100 * r['coverage_words']:.1f}% "
                f"| {100 * r['coverage_with_composed']:.1f}% "
                f"| {auc} | {r['pairs']:,} | {r.get('synonym_pairs_on_one_row', 0):,} |"
            )
    return "\n".join(lines) + "\n"
