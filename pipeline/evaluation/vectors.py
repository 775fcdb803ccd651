"""Stage ``evaluate_vectors``: intrinsic quality of every vector source, side by side, and a 2-D word map.

Benchmark (not derived from KNBC): Sudachi's synonym dictionary. Each headword is
run through the corpus tokenizer; a headword that is one token becomes that token's
key (normalized form by default, so spelling variants such as あいまい / 曖昧 fall
together), multi-token headwords are left out. Two keys are synonyms when they share
a synonym group.

* **ROC-AUC**: cosine of synonym pairs against random pairs. Each random pair keeps
  one word of a synonym pair and draws the other from the benchmark words the
  source covers (never one of its synonyms), so both sets have the same words on one side.
* **Neighbour precision**: for each covered word with k covered synonyms, the share of
  synonyms among its k nearest neighbours in the source's vocabulary (R-precision),
  plus precision@1 and hit@10.

Each source is scored on what it covers (with the coverage), and all sources on
the *common* part (pairs and vocabulary that every source covers), which is the fair
side-by-side comparison since coverage differs a lot between sources.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError, PipelineError
from pipeline.io import open_text, read_jsonl

logger = logging.getLogger(__name__)

# Form types of the synonym dictionary: 0 representative, 1 translation, 2 alias, 3 old name, 4 misuse.
MISUSE_FORM = "4"
# Words drawn in the map: UD content POS, without numerals and Sudachi's 非自立可能
# (light verbs and formal nouns: する, ある, いる, なる, こと, もの, ...), which carry no theme.
MAP_POS = ("NOUN", "PROPN", "VERB", "ADJ")
# A word whose normalized theme share is below this is drawn as "mixed" (four themes: 0.25 is no preference).
THEME_SHARE_MIN = 0.45
IDENTICAL_COSINE = 0.9999
MAP_COLOURS = {"Gourmet": "#d62728", "Keitai": "#1f77b4", "Kyoto": "#2ca02c", "Sports": "#ff7f0e", "mixed": "#9a9a9a"}


# ------------------------------------------------------------------ synonyms
def resolve_synonyms_path(setting: str, *, project_dir: str | os.PathLike) -> Path:
    """The synonym dictionary: an absolute path, else relative to the project dir, else to the cwd."""
    path = Path(setting).expanduser()
    candidates = [path] if path.is_absolute() else [Path(project_dir) / path, Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise InputError(
        "E205",
        f"Sudachi synonym dictionary not found (evaluate_vectors.synonyms_path = {setting!r}; tried {tried}).",
        hint="Put the shared data at ../shared next to the project, or set evaluate_vectors.synonyms_path to the file "
        "(for example /path/to/synonyms.txt.gz).",
    )


def read_synonym_groups(path: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """``{group id: [(lexeme number, headword), ...]}``, misuse forms left out."""
    import gzip
    import zlib

    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    try:
        with open_text(path) as handle:
            for row in csv.reader(handle):
                if len(row) < 9 or not row[0].strip():
                    continue
                group_id, lexeme, form_type, headword = row[0].strip(), row[3].strip(), row[4].strip(), row[8].strip()
                if form_type == MISUSE_FORM or not headword:
                    continue
                groups[group_id].append((lexeme, headword))
    except UnicodeDecodeError as exc:
        raise InputError(
            "E271", f"Synonym dictionary {path} is not valid UTF-8 ({exc.reason}).", hint="Give the Sudachi synonym file as distributed."
        ) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError("E207", f"Synonym dictionary {path} is a damaged gzip file ({exc}).", hint="Copy the file again.") from None
    return dict(groups)


@dataclass
class SynonymBenchmark:
    """Synonym groups as sets of token keys."""

    groups: list[frozenset[str]]
    synonyms: dict[str, set[str]]  # key -> every key it shares a group with
    pairs: list[tuple[str, str]]  # distinct unordered synonym pairs, sorted
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, raw_groups: dict[str, list[tuple[str, str]]], *, tokenizer, token_field: str) -> SynonymBenchmark:
        headword_key: dict[str, str | None] = {}
        single = multi = 0
        groups: list[frozenset[str]] = []
        for entries in raw_groups.values():
            keys = set()
            for _, headword in entries:
                if headword not in headword_key:
                    fields = tokenizer.tokenize(headword)
                    headword_key[headword] = fields[token_field][0] if len(fields[token_field]) == 1 else None
                    single += headword_key[headword] is not None
                    multi += headword_key[headword] is None
                if headword_key[headword]:
                    keys.add(headword_key[headword])
            if len(keys) >= 2:
                groups.append(frozenset(keys))
        synonyms: dict[str, set[str]] = defaultdict(set)
        pairs = set()
        for group in groups:
            for a, b in combinations(sorted(group), 2):
                pairs.add((a, b))
                synonyms[a].add(b)
                synonyms[b].add(a)
        stats = {
            "groups": len(raw_groups),
            "headwords": len(headword_key),
            "single_token_headwords": single,
            "multi_token_headwords_dropped": multi,
            "groups_with_2_or_more_keys": len(groups),
            "benchmark_words": len(synonyms),
            "synonym_pairs": len(pairs),
        }
        return cls(groups=groups, synonyms=dict(synonyms), pairs=sorted(pairs), stats=stats)


# ------------------------------------------------------------------- scoring
def _unit_rows(index, words: list[str]) -> np.ndarray:
    """(len(words), dim) unit vectors of ``words`` (all in ``index``)."""
    rows = np.asarray([index.key_to_index[w] for w in words], dtype=np.int64)
    matrix = np.asarray(index.vectors[rows] if len(rows) else np.zeros((0, index.dim)), dtype=np.float32)
    return matrix / index.norms[rows][:, None] if len(rows) else matrix


def sample_negative_pairs(
    positives: list[tuple[str, str]], *, pool: list[str], synonyms: dict[str, set[str]], per_positive: int, rng
) -> list[tuple[str, str]]:
    """Random non-synonym pairs: one word of each positive pair, the other drawn from ``pool``."""
    negatives = []
    for a, b in positives:
        for _ in range(per_positive):
            keep = a if rng.random() < 0.5 else b
            for _attempt in range(100):
                other = pool[int(rng.integers(len(pool)))]
                if other != keep and other not in synonyms.get(keep, ()):
                    negatives.append((keep, other))
                    break
    return negatives


def pair_scores(index, pairs: list[tuple[str, str]]) -> np.ndarray:
    """(len(pairs),) cosine of each pair."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    left = _unit_rows(index, [a for a, _ in pairs])
    right = _unit_rows(index, [b for _, b in pairs])
    return np.einsum("ij,ij->i", left, right)


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float | None:
    if len(positive_scores) == 0 or len(negative_scores) == 0:
        return None
    from sklearn.metrics import roc_auc_score

    labels = np.concatenate([np.ones(len(positive_scores)), np.zeros(len(negative_scores))])
    return float(roc_auc_score(labels, np.concatenate([positive_scores, negative_scores])))


def neighbour_precision(index, *, candidates: list[str], synonyms: dict[str, set[str]], block: int = 512) -> dict[str, Any]:
    """R-precision, precision@1 and hit@10 of synonym retrieval among ``candidates``.

    Queries are the candidates with at least one synonym among the candidates.
    """
    candidate_set = set(candidates)
    position = {word: i for i, word in enumerate(candidates)}
    queries = [w for w in candidates if synonyms.get(w, set()) & candidate_set]
    if not queries:
        return {"queries": 0, "r_precision": None, "precision_at_1": None, "hit_at_10": None}
    unit = _unit_rows(index, candidates)  # (n, dim)
    r_precisions, at_1, hit_10 = [], [], []
    for start in range(0, len(queries), block):
        chunk = queries[start : start + block]
        scores = _unit_rows(index, chunk) @ unit.T  # (len(chunk), n)
        for row, word in enumerate(chunk):
            scores[row, position[word]] = -np.inf  # never your own neighbour
            relevant = synonyms[word] & candidate_set
            k = len(relevant)
            depth = min(max(k, 10), len(candidates) - 1)
            top = np.argpartition(-scores[row], depth - 1)[:depth]
            top = top[np.argsort(-scores[row][top], kind="stable")]
            hits = [candidates[i] in relevant for i in top]
            r_precisions.append(sum(hits[:k]) / k)
            at_1.append(hits[0])
            hit_10.append(any(hits[:10]))
    return {
        "queries": len(queries),
        "r_precision": round(float(np.mean(r_precisions)), 4),
        "precision_at_1": round(float(np.mean(at_1)), 4),
        "hit_at_10": round(float(np.mean(hit_10)), 4),
    }


def evaluate_synonyms(
    index,
    benchmark: SynonymBenchmark,
    *,
    pairs: list[tuple[str, str]],
    pool: list[str],
    candidates: list[str],
    per_positive: int,
    seed: int,
) -> dict[str, Any]:
    """ROC-AUC of ``pairs`` (all covered by ``index``) against random pairs, and neighbour precision."""
    rng = np.random.default_rng(seed)
    negatives = sample_negative_pairs(pairs, pool=pool, synonyms=benchmark.synonyms, per_positive=per_positive, rng=rng)
    positive_scores, negative_scores = pair_scores(index, pairs), pair_scores(index, negatives)
    auc = roc_auc(positive_scores, negative_scores)
    return {
        "pairs": len(pairs),
        "random_pairs": len(negatives),
        "roc_auc": None if auc is None else round(auc, 4),
        "mean_cosine_synonyms": round(float(positive_scores.mean()), 4) if len(pairs) else None,
        "mean_cosine_random": round(float(negative_scores.mean()), 4) if len(negatives) else None,
        # Pairs whose two words have the very same vector (ja_ginza's shared rows): cosine 1.0.
        "synonym_pairs_identical_vectors": int((positive_scores >= IDENTICAL_COSINE).sum()),
        "random_pairs_identical_vectors": int((negative_scores >= IDENTICAL_COSINE).sum()),
        "neighbour_precision": neighbour_precision(index, candidates=candidates, synonyms=benchmark.synonyms),
    }


# ------------------------------------------------------------------------ map
def theme_association(tokens_path: Path, *, token_field: str) -> tuple[Counter, dict[str, Counter], dict[str, int]]:
    """Frequency of map-eligible words, their per-theme counts, and the tokens per theme."""
    frequency: Counter = Counter()
    per_theme: dict[str, Counter] = defaultdict(Counter)
    theme_tokens: Counter = Counter()
    for row in read_jsonl(tokens_path):
        theme = row["theme"]
        theme_tokens[theme] += len(row[token_field])
        for word, pos, tag in zip(row[token_field], row["pos"], row["tag"], strict=True):
            if pos in MAP_POS and "非自立可能" not in tag and "数詞" not in tag and not (len(word) == 1 and "\u3040" <= word <= "\u309f"):
                frequency[word] += 1
                per_theme[word][theme] += 1
    return frequency, per_theme, dict(theme_tokens)


def assign_themes(words: list[str], per_theme: dict[str, Counter], theme_tokens: dict[str, int]) -> list[tuple[str, float]]:
    """(theme, share) per word: the theme with the highest rate per 1,000 tokens, normalized over themes."""
    from pipeline.data.labels import THEMES

    result = []
    for word in words:
        rates = np.asarray([per_theme[word][t] / max(1, theme_tokens.get(t, 0)) for t in THEMES])
        shares = rates / rates.sum() if rates.sum() > 0 else np.full(len(THEMES), 1 / len(THEMES))
        best = int(shares.argmax())
        theme = THEMES[best] if shares[best] >= THEME_SHARE_MIN else "mixed"
        result.append((theme, round(float(shares[best]), 3)))
    return result


def project_2d(vectors: np.ndarray, *, method: str, seed: int) -> np.ndarray:
    """(n, 2) coordinates of (n, dim) unit vectors by t-SNE (cosine) or PCA."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(vectors)
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(5, (len(vectors) - 1) // 4)))
    return TSNE(n_components=2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed).fit_transform(vectors)


def theme_purity(unit: np.ndarray, themes: list[str], *, k: int = 5) -> float | None:
    """Share of each themed word's k nearest map words (cosine, full dimensions) that have its theme."""
    themed = [i for i, t in enumerate(themes) if t != "mixed"]
    if len(themes) <= k or not themed:
        return None
    scores = unit @ unit.T
    np.fill_diagonal(scores, -np.inf)
    agree = []
    for i in themed:
        top = np.argpartition(-scores[i], k - 1)[:k]
        agree.append(np.mean([themes[j] == themes[i] for j in top]))
    return round(float(np.mean(agree)), 4)


def draw_map(path: Path, *, panels: list[tuple[str, np.ndarray]], words: list[str], themes: list[str], method: str) -> None:
    """One scatter panel per source, labels in Japanese, colours by theme; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    with warnings.catch_warnings():  # japanize_matplotlib uses distutils' LooseVersion
        warnings.simplefilter("ignore", DeprecationWarning)
        import japanize_matplotlib  # noqa: F401  (registers IPAexGothic: Japanese labels instead of boxes)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from pipeline.data.labels import THEME_JA

    figure, axes = plt.subplots(1, len(panels), figsize=(9 * len(panels), 9), squeeze=False)
    colours = [MAP_COLOURS[t] for t in themes]
    for axis, (title, coords) in zip(axes[0], panels, strict=True):
        axis.scatter(coords[:, 0], coords[:, 1], c=colours, s=14, alpha=0.8, linewidths=0)
        for (x, y), word, colour in zip(coords, words, colours, strict=True):
            axis.annotate(word, (x, y), xytext=(2, 2), textcoords="offset points", fontsize=7.5, color=colour)
        axis.set_title(title, fontsize=13)
        axis.set_xticks([])
        axis.set_yticks([])
    handles = [
        Line2D([], [], marker="o", linestyle="", color=c, label=f"{t} ({THEME_JA.get(t, 'テーマ混在')})") for t, c in MAP_COLOURS.items()
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=11, frameon=False)
    figure.suptitle(
        f"{len(words)} most frequent content words ({'t-SNE' if method == 'tsne' else 'PCA'}), coloured by the theme they occur most in",
        fontsize=14,
    )
    figure.tight_layout(rect=(0, 0.04, 1, 0.96))
    from pipeline.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)


# ---------------------------------------------------------------------- stage
def _source_summary(meta: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "vocab_size",
        "dim",
        "token_field",
        "algorithm",
        "params",
        "training_seconds",
        "training_tokens",
        "build_seconds",
        "model",
        "model_version",
        "origin",
        "format",
        "import_seconds",
    )
    return {key: meta[key] for key in keys if key in meta} | {"coverage": meta.get("coverage", {})}


class SynonymBenchmarks:
    """One :class:`SynonymBenchmark` per token field, built on first use (tokenizing every headword takes seconds)."""

    def __init__(self, raw_groups: dict[str, list[tuple[str, str]]], *, tokenizer) -> None:
        self.raw_groups = raw_groups
        self.tokenizer = tokenizer
        self.built: dict[str, SynonymBenchmark] = {}

    def __getitem__(self, token_field: str) -> SynonymBenchmark:
        if token_field not in self.built:
            self.built[token_field] = SynonymBenchmark.build(self.raw_groups, tokenizer=self.tokenizer, token_field=token_field)
            logger.info("synonym benchmark (%s): %s", token_field, self.built[token_field].stats)
        return self.built[token_field]


def _evaluate_source(name: str, index, benchmark: SynonymBenchmark, *, section) -> dict[str, Any]:
    """Synonym scores of one source on the pairs it covers, with its coverage."""
    covered_pairs = [(a, b) for a, b in benchmark.pairs if a in index and b in index]
    pool = sorted(w for w in benchmark.synonyms if w in index)
    result = evaluate_synonyms(
        index,
        benchmark,
        pairs=covered_pairs,
        pool=pool,
        candidates=list(index.words),
        per_positive=section["negative_pairs_per_positive"],
        seed=section["seed"],
    )
    result["pair_coverage"] = round(len(covered_pairs) / max(1, len(benchmark.pairs)), 5)
    result["benchmark_words_covered"] = len(pool)
    logger.info(
        "%s: ROC-AUC %s on %d synonym pairs, R-precision %s",
        name,
        result["roc_auc"],
        len(covered_pairs),
        result["neighbour_precision"]["r_precision"],
    )
    return result


def _common_comparison(indexes: dict, benchmarks: SynonymBenchmarks, *, section) -> dict[str, Any] | None:
    """The fair comparison: the same pairs and the same candidate vocabulary for every source (None for one source or mixed token fields)."""
    fields = {index.token_field for index in indexes.values()}
    if len(indexes) < 2 or len(fields) != 1:
        return None
    benchmark = benchmarks[fields.pop()]
    common_vocab = sorted(set.intersection(*(set(index.words) for index in indexes.values())))
    common_set = set(common_vocab)
    common_pairs = [(a, b) for a, b in benchmark.pairs if a in common_set and b in common_set]
    common_pool = sorted(w for w in benchmark.synonyms if w in common_set)
    per_positive, seed = section["negative_pairs_per_positive"], section["seed"]
    return {
        "sources": list(indexes),
        "vocab_size": len(common_vocab),
        "pairs": len(common_pairs),
        "results": {
            name: evaluate_synonyms(
                index, benchmark, pairs=common_pairs, pool=common_pool, candidates=common_vocab, per_positive=per_positive, seed=seed
            )
            for name, index in indexes.items()
        },
    }


def _neighbour_examples(index, *, split_mode: str, section) -> dict[str, Any]:
    """Nearest neighbours of the fixed word list, through the same normalization as `jpipe similar`."""
    from pipeline.vectors.query import Vectors

    vectors = Vectors(index, split_mode=split_mode)
    examples = {}
    for word in section["neighbour_words"]:
        try:
            result = vectors.similar_json(word, topn=section["neighbours_topn"])
            examples[word] = {"keys": result["keys"], "neighbours": result["neighbours"]}
        except PipelineError as exc:
            examples[word] = {"oov": True, "message": exc.message}
    return examples


def _stage_metrics(report: dict[str, Any]) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for name, result in report["synonym_splits"]["sources"].items():
        metrics[f"{name}_test_coverage"] = result["test"]["coverage"]
        metrics[f"{name}_test_roc_auc"] = result["test"]["roc_auc"]
    metrics["chosen_on_dev"] = report["synonym_splits"]["choice"]["source"]
    for name, info in report["sources"].items():
        if "synonyms" not in info:  # ginza, combined: dev/test figures only
            continue
        metrics[f"{name}_roc_auc"] = info["synonyms"]["roc_auc"]
        metrics[f"{name}_r_precision"] = info["synonyms"]["neighbour_precision"]["r_precision"]
        metrics[f"{name}_pairs"] = info["synonyms"]["pairs"]
    for name, result in report.get("common", {}).get("results", {}).items():
        metrics[f"common_{name}_roc_auc"] = result["roc_auc"]
    return metrics


# Sources evaluated on the legacy benchmark (pairs by token field, the common comparison, the map):
# one row per key. ginza and combined (keys sharing rows) are evaluated on the dev/test halves only.
LEGACY_SOURCES = ("word2vec", "spacy", "imported")


def evaluate_vectors_stage(ctx) -> dict[str, Any]:
    """Synonym coverage / ROC-AUC per source on the dev and test halves; legacy pair scores, neighbours, the 2-D map."""
    from pipeline.io import write_json
    from pipeline.paths import SPACY_VECTORS_DIR, TOKENS, VECTORS_COVERAGE_TABLE, VECTORS_REPORT, WORD2VEC_DIR
    from pipeline.text.tokenize import load_tokenizer, tokenized_split_mode
    from pipeline.vectors.query import VectorIndex
    from pipeline.vectors.store import available_sources, source_names

    section = ctx.section
    started = time.perf_counter()
    tokens_path = ctx.input(TOKENS)
    # word2vec and spacy are declared inputs; imported, ginza and combined are optional (evaluated, and fingerprinted, when they exist).
    for declared in (WORD2VEC_DIR, SPACY_VECTORS_DIR):
        ctx.input(declared)
    every = [name for name in source_names() if name in available_sources(ctx.project_dir)]
    all_indexes = {name: VectorIndex.load(project_dir=ctx.project_dir, source=name) for name in every}
    indexes = {name: index for name, index in all_indexes.items() if name in LEGACY_SOURCES}
    split_mode = tokenized_split_mode(ctx.project_dir)
    synonyms_path = resolve_synonyms_path(section["synonyms_path"], project_dir=ctx.project_dir)
    raw_groups = read_synonym_groups(synonyms_path)
    from pipeline.evaluation.synonym_splits import CachingTokenizer

    # One cache for both benchmarks: each of the ~65k headwords goes through Sudachi once.
    cached = CachingTokenizer(load_tokenizer(split_mode, with_pos=False))
    benchmarks = SynonymBenchmarks(raw_groups, tokenizer=cached)
    benchmark_info = {
        "name": "Sudachi synonym dictionary (SudachiDict synonyms, Apache-2.0)",
        "path": str(synonyms_path),
        "split_mode": split_mode,
        "negative_pairs_per_positive": section["negative_pairs_per_positive"],
        "seed": section["seed"],
    }
    report: dict[str, Any] = {"benchmark": benchmark_info, "sources": {}}
    report["synonym_splits"] = _split_evaluation(
        all_indexes, raw_groups, path=synonyms_path, split_mode=split_mode, section=section, tokenizers={split_mode: cached}
    )
    for name, index in indexes.items():
        synonyms = _evaluate_source(name, index, benchmarks[index.token_field], section=section)
        report["sources"][name] = {**_source_summary(index.meta), "synonyms": synonyms}
    benchmark_info["by_token_field"] = {field_name: benchmark.stats for field_name, benchmark in benchmarks.built.items()}
    common = _common_comparison(indexes, benchmarks, section=section)
    if common is not None:
        report["common"] = common
    for name, index in all_indexes.items():
        entry = report["sources"].setdefault(name, _source_summary(index.meta))
        entry["neighbours"] = _neighbour_examples(index, split_mode=index.meta.get("split_mode") or split_mode, section=section)
    if "spacy" in indexes and "shared_rows" in indexes["spacy"].meta:
        report["sources"]["spacy"]["shared_rows"] = indexes["spacy"].meta["shared_rows"]
    report["map"] = _word_map(ctx, indexes=indexes, tokens_path=tokens_path, section=section)
    report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(ctx.output(VECTORS_REPORT), report)
    _write_coverage_table(ctx.output(VECTORS_COVERAGE_TABLE), report["synonym_splits"])
    return _stage_metrics(report)


def _split_evaluation(indexes: dict, raw_groups, *, path, split_mode: str, section, tokenizers: dict) -> dict[str, Any]:
    """Coverage and ROC-AUC of every source on the fixed dev and test halves, and the source chosen on dev."""
    from pipeline.evaluation.synonym_splits import (
        CachingTokenizer,
        check_groups,
        choose_on_dev,
        evaluate_source_splits,
        split_groups,
    )
    from pipeline.text.tokenize import load_tokenizer
    from pipeline.vectors.query import Vectors

    check_groups(raw_groups, path=path)
    halves = split_groups(raw_groups)
    results = {}
    for name, index in indexes.items():
        mode = index.meta.get("split_mode") or split_mode
        tokenizer = tokenizers.setdefault(mode, CachingTokenizer(load_tokenizer(mode, with_pos=False)))
        vectors = Vectors(index, split_mode=mode, tokenizer=tokenizer)
        results[name] = evaluate_source_splits(vectors, halves, per_positive=section["negative_pairs_per_positive"], seed=section["seed"])
    splits = {
        "split_rule": "group id -> BLAKE2b digest; first byte even: dev, odd: test (fixed, independent of file order)",
        "groups": {name: len(groups) for name, groups in halves.items()},
        "coverage_note": "a group is covered when >= 2 member words are found as different keys (composed words counted apart)",
        "sources": results,
        "choice": choose_on_dev(results),
    }
    retrofit_source = section["retrofit_source"]
    if retrofit_source in indexes:
        from pipeline.evaluation.retrofit import retrofit_experiment

        index = indexes[retrofit_source]
        mode = index.meta.get("split_mode") or split_mode
        vectors = Vectors(index, split_mode=mode, tokenizer=tokenizers[mode])
        splits["retrofit"] = retrofit_experiment(
            vectors,
            halves,
            base=results[retrofit_source],
            per_positive=section["negative_pairs_per_positive"],
            seed=section["seed"],
            alpha=section["retrofit_alpha"],
        )
    return splits


def _write_coverage_table(path: Path, splits: dict[str, Any]) -> None:
    from pipeline.evaluation.synonym_splits import coverage_table
    from pipeline.io import atomic_open

    choice = splits["choice"]
    text = "# Synonym coverage and ROC-AUC per vector source (Sudachi synonym groups, fixed dev/test halves)\n\n"
    text += coverage_table(splits["sources"]) + "\n"
    text += f"Chosen on dev: **{choice['source']}** ({choice.get('rule', '')}). "
    if choice["source"]:
        text += f"Test: coverage {100 * choice['test_coverage']:.1f}%, ROC-AUC {choice['test_roc_auc']}; "
        text += f"goals coverage >= {100 * choice['goals']['coverage']:.0f}%, ROC-AUC >= {choice['goals']['roc_auc']}.\n"
    retrofit = splits.get("retrofit")
    if retrofit:
        text += (
            f"\nRetrofitting {retrofit['source']} to the dev groups (alpha {retrofit['alpha']}, {retrofit['iterations']} iterations, "
            f"{retrofit['rows_moved']:,} rows moved): dev ROC-AUC {retrofit['dev']['roc_auc']} (inflated: learnt on dev), "
            f"test ROC-AUC {retrofit['test']['roc_auc']} vs {retrofit['base_test_roc_auc']} without, "
            f"test coverage {100 * retrofit['test']['coverage']:.1f}%: {'ships' if retrofit['ships'] else 'does not ship'}.\n"
        )
    with atomic_open(path, "w") as handle:
        handle.write(text)


def _word_map(ctx, *, indexes: dict, tokens_path: Path, section: dict) -> dict[str, Any]:
    """Draw the map for every source on the same words (the frequent ones every source has)."""
    from pipeline.paths import VECTORS_MAP

    field_name = indexes["word2vec"].token_field if "word2vec" in indexes else next(iter(indexes.values())).token_field
    same_field = {name: index for name, index in indexes.items() if index.token_field == field_name}
    frequency, per_theme, theme_tokens = theme_association(tokens_path, token_field=field_name)
    words = [w for w, _ in frequency.most_common() if all(w in index for index in same_field.values())][: section["map_words"]]
    assigned = assign_themes(words, per_theme, theme_tokens)
    themes = [theme for theme, _ in assigned]
    panels, purity = [], {}
    for name, index in same_field.items():
        unit = _unit_rows(index, words)
        panels.append(
            (f"{name} ({len(index):,} words x {index.dim} dims)", project_2d(unit, method=section["map_method"], seed=section["seed"]))
        )
        purity[name] = theme_purity(unit, themes)
    path = ctx.output(VECTORS_MAP)
    draw_map(path, panels=panels, words=words, themes=themes, method=section["map_method"])
    return {
        "path": VECTORS_MAP,
        "method": section["map_method"],
        "token_field": field_name,
        "sources": list(same_field),
        "words": len(words),
        "theme_counts": dict(Counter(themes)),
        "theme_share_min": THEME_SHARE_MIN,
        "theme_purity_at_5": purity,
        "theme_purity_note": "share of a themed word's 5 nearest map words (cosine, full vectors) with the same theme",
        "word_themes": [{"word": w, "theme": t, "share": s} for w, (t, s) in zip(words, assigned, strict=True)],
    }
