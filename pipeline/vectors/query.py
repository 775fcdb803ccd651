"""Word-similarity queries: neighbours, similarity, analogy, scored pairs.

Imports numpy, SudachiPy and the standard library only (no torch, spaCy or gensim),
so a cold ``jpipe similar`` stays well under a few seconds.

How a query word becomes a key
------------------------------
Vectors are keyed by one token field (``meta.json`` ``token_field``, by default
Sudachi's normalized form). A query goes through the same Sudachi tokenizer and
split mode as the corpus, so natural forms work: 食べた -> 食べる, おいしい -> 美味しい,
ケータイ -> 携帯.

1. A query that is itself a key is used as is (a normalized form, or any key of
   imported vectors).
2. Otherwise it is tokenized. Function tokens (particles, auxiliary verbs, symbols,
   prefixes: the た of 食べた, the お of お寺) are dropped when content tokens remain.
3. Each remaining token is looked up by the source's token field, then by its other
   forms (lemma, surface), so imported vectors keyed by another field still work.
4. Several content tokens (美味しいラーメン) are **averaged**: the query vector is
   the mean of the unit vectors of the tokens, as gensim does for several positive
   words, and the tokens themselves are left out of the neighbours. If any content
   token has no vector, the whole query is out of vocabulary, naming that token.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

# Sudachi POS (first level of the tag) of tokens dropped from a multi-token query.
FUNCTION_POS = ("助詞", "助動詞", "補助記号", "記号", "空白", "接頭辞")
# Rows scored per block: bounds the temporary memory for very large imported tables.
SCORE_BLOCK_ROWS = 262144


class OutOfVocabulary(PipelineError):
    """A query (or one of its tokens) has no vector in the chosen source."""

    def __init__(self, message: str, *, hint: str | None = None, query: str = "", missing: str = "") -> None:
        super().__init__(message, hint=hint)
        self.query = query
        self.missing = missing


@dataclass
class ResolvedQuery:
    """A user's query text and the keys (rows) it maps to."""

    text: str
    keys: list[str]
    rows: list[int]
    how: str  # "key" (typed a key), "normalized" (one token), "averaged" (several tokens)

    @property
    def averaged(self) -> bool:
        return len(self.rows) > 1

    def to_json(self) -> dict[str, Any]:
        return {"query": self.text, "keys": self.keys, "how": self.how}


@dataclass
class VectorIndex:
    """A vector source in memory (or memory-mapped): keys, ``(n, dim)`` vectors and row norms."""

    source: str
    words: list[str]
    vectors: np.ndarray  # (n, dim) float32, usually a read-only np.memmap
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key_to_index = {word: index for index, word in enumerate(self.words)}
        self._norms: np.ndarray | None = None

    @classmethod
    def load(cls, *, project_dir: str | os.PathLike, source: str) -> "VectorIndex":
        from pipeline.vectors.store import load_vector_arrays, read_meta, require_source_dir

        directory = require_source_dir(project_dir, source)
        words, vectors = load_vector_arrays(directory)
        return cls(source=source, words=words, vectors=vectors, meta=read_meta(directory))

    @property
    def token_field(self) -> str:
        return self.meta.get("token_field", "norm")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.key_to_index

    @property
    def norms(self) -> np.ndarray:
        """(n,) L2 norms of the rows, computed once, block by block (a huge memmap is never copied whole)."""
        if self._norms is None:
            norms = np.empty(len(self.words), dtype=np.float32)
            for start in range(0, len(self.words), SCORE_BLOCK_ROWS):
                block = np.asarray(self.vectors[start : start + SCORE_BLOCK_ROWS], dtype=np.float32)
                norms[start : start + len(block)] = np.linalg.norm(block, axis=1)
            norms[norms == 0] = 1.0  # all-zero rows score 0 against everything
            self._norms = norms
        return self._norms

    def unit(self, row: int) -> np.ndarray:
        """(dim,) unit vector of one row."""
        return np.asarray(self.vectors[row], dtype=np.float32) / self.norms[row]

    def query_vector(self, rows: list[int], negative_rows: list[int] = ()) -> np.ndarray:
        """(dim,) unit vector of mean(unit(rows)) - mean-weighted unit(negative_rows), as gensim's most_similar."""
        vector = np.zeros(self.dim, dtype=np.float32)
        for row in rows:
            vector += self.unit(row)
        for row in negative_rows:
            vector -= self.unit(row)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def cosine_scores(self, vector: np.ndarray) -> np.ndarray:
        """(n,) cosine of every row with unit ``vector``.

        np.einsum, not ``@``: a matrix-vector product of this size (20k x 300) takes ~1 ms in
        one thread, while multi-threaded BLAS pays thread wake-ups, 10x slower on a busy machine.
        """
        scores = np.empty(len(self.words), dtype=np.float32)
        for start in range(0, len(self.words), SCORE_BLOCK_ROWS):
            block = self.vectors[start : start + SCORE_BLOCK_ROWS]
            scores[start : start + len(block)] = np.einsum("ij,j->i", block, vector)
        return scores / self.norms

    def nearest(self, vector: np.ndarray, *, topn: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[tuple[str, float]]:
        """The ``topn`` rows most cosine-similar to unit ``vector``, best first, without ``exclude``."""
        scores = self.cosine_scores(vector)
        if exclude:
            scores[list(exclude)] = -np.inf
        count = min(topn, len(scores) - len(exclude))
        if count <= 0:
            return []
        # argpartition: O(n) selection of the best `count`, then sort only those.
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(self.words[index], float(scores[index])) for index in best]

    def similarity_rows(self, rows_a: list[int], rows_b: list[int]) -> float:
        return float(self.query_vector(rows_a) @ self.query_vector(rows_b))


class QueryEngine:
    """Normalizes query text like the corpus and answers similar / similarity / analogy."""

    def __init__(self, index: VectorIndex, *, split_mode: str = "C") -> None:
        self.index = index
        self.split_mode = split_mode
        self._tokenizer = None

    @classmethod
    def load(cls, *, project_dir: str | os.PathLike, source: str = "word2vec") -> "QueryEngine":
        from pipeline.text.tokenize import tokenized_split_mode

        return cls(VectorIndex.load(project_dir=project_dir, source=source), split_mode=tokenized_split_mode(project_dir))

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from pipeline.text.tokenize import load_tokenizer

            # with_pos=False: Sudachi only, spaCy is never imported.
            self._tokenizer = load_tokenizer(self.split_mode, with_pos=False)
        return self._tokenizer

    # ------------------------------------------------------------- resolving
    def tokens(self, text: str) -> list[dict[str, str]]:
        """Content tokens of ``text`` (all tokens when there are only function tokens), as dicts of fields."""
        fields = self.tokenizer.tokenize(text)
        tokens = [{name: fields[name][i] for name in ("surface", "lemma", "norm", "tag")} for i in range(len(fields["surface"]))]
        content = [token for token in tokens if token["tag"].split("-", 1)[0] not in FUNCTION_POS]
        return content or tokens

    def _key_of(self, token: dict[str, str]) -> str | None:
        order = [self.index.token_field] + [name for name in ("norm", "lemma", "surface") if name != self.index.token_field]
        for name in order:
            if token[name] in self.index.key_to_index:
                return token[name]
        return None

    def resolve(self, text: str) -> ResolvedQuery:
        """Map a query to vector rows, or raise ``OutOfVocabulary`` with a clear message."""
        text = text.strip()
        if not text:
            raise PipelineError("Empty query.", hint="Give a word, for example: jpipe similar 京都")
        index = self.index
        if text in index.key_to_index:
            return ResolvedQuery(text=text, keys=[text], rows=[index.key_to_index[text]], how="key")
        tokens = self.tokens(text)
        keys: list[str] = []
        for token in tokens:
            key = self._key_of(token)
            if key is None:
                forms = "/".join(dict.fromkeys(token[name] for name in (index.token_field, "surface", "lemma")))
                part = f"'{text}'" if len(tokens) == 1 else f"'{token['surface']}' (in '{text}')"
                raise OutOfVocabulary(
                    f"{part} is not in the {index.source} vocabulary (looked up as {forms}).",
                    hint=self._oov_hint(token[index.token_field]),
                    query=text,
                    missing=token[index.token_field],
                )
            keys.append(key)
        keys = list(dict.fromkeys(keys))  # 行く行く -> one key
        return ResolvedQuery(text=text, keys=keys, rows=[index.key_to_index[k] for k in keys], how="normalized" if len(keys) == 1 else "averaged")

    def _oov_hint(self, key: str) -> str:
        index = self.index
        # Cheap suggestions: keys that contain the missing form, most frequent first (rows are frequency-ordered).
        close = [word for word in index.words[:200000] if key and key in word and word != key][:5]
        parts = [f"{index.source} has {len(index):,} words (token field: {index.token_field})."]
        if close:
            parts.append("Keys containing it: " + ", ".join(close) + ".")
        parts.append("Try another form, or another source with --vectors word2vec|spacy|imported.")
        return " ".join(parts)

    def try_resolve(self, text: str) -> ResolvedQuery | None:
        try:
            return self.resolve(text)
        except OutOfVocabulary:
            return None

    # --------------------------------------------------------------- queries
    def similar(self, text: str, *, topn: int = 10) -> dict[str, Any]:
        """Nearest neighbours of ``text`` by cosine, without the query's own keys."""
        query = self.resolve(text)
        vector = self.index.query_vector(query.rows)
        neighbours = self.index.nearest(vector, topn=topn, exclude=set(query.rows))
        return {**query.to_json(), "vectors": self.index.source, "neighbours": [{"word": w, "score": round(s, 4)} for w, s in neighbours]}

    def similarity(self, text_a: str, text_b: str) -> dict[str, Any]:
        a, b = self.resolve(text_a), self.resolve(text_b)
        return {"w1": text_a, "w2": text_b, "keys1": a.keys, "keys2": b.keys, "vectors": self.index.source, "score": round(self.index.similarity_rows(a.rows, b.rows), 4)}

    def pair_score(self, text_a: str, text_b: str) -> float | None:
        """Cosine of two queries, or None when either is out of vocabulary (the ``--pairs`` contract)."""
        a, b = self.try_resolve(text_a), self.try_resolve(text_b)
        if a is None or b is None:
            return None
        return round(self.index.similarity_rows(a.rows, b.rows), 4)

    def analogy(self, text_a: str, text_b: str, text_c: str, *, topn: int = 10) -> dict[str, Any]:
        """Words closest to A - B + C (unit vectors, as gensim ``most_similar(positive=[A, C], negative=[B])``)."""
        a, b, c = self.resolve(text_a), self.resolve(text_b), self.resolve(text_c)
        vector = self.index.query_vector(a.rows + c.rows, b.rows)
        neighbours = self.index.nearest(vector, topn=topn, exclude=set(a.rows + b.rows + c.rows))
        return {
            "a": text_a, "b": text_b, "c": text_c,
            "keys": {"a": a.keys, "b": b.keys, "c": c.keys},
            "vectors": self.index.source,
            "neighbours": [{"word": w, "score": round(s, 4)} for w, s in neighbours],
        }


def read_pairs(lines, *, name: str = "pairs") -> list[tuple[str, str]]:
    """Word pairs from tab-separated lines: the first two columns (a third, e.g. a gold score, is ignored).

    Blank lines and lines starting with ``#`` are skipped; a line without a tab is split on
    whitespace; a line that still has fewer than two fields is an error naming its number.
    """
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if len(fields) < 2 or not fields[0] or not fields[1]:
            raise PipelineError(f"{name} line {number}: expected two tab-separated words, got {line!r}.", hint="Write one pair per line: WORD1<TAB>WORD2")
        pairs.append((fields[0], fields[1]))
    return pairs


def load_engine(*, project_dir: str | os.PathLike, source: str) -> QueryEngine:
    return QueryEngine.load(project_dir=Path(project_dir), source=source)


# ------------------------------------------------------------------ benchmark
COLD_TARGET_S = 3.0
WARM_TARGET_MS = 5.0
# Natural (inflected / variant) forms: these go through Sudachi before the lookup.
TEXT_QUERIES = ("食べた", "おいしかった", "ケータイ", "行った", "京都", "野球", "電話した", "お寺", "試合", "店")


def _latency_ms(function, queries: list[str]) -> dict[str, float]:
    import time

    times = []
    for query in queries:
        started = time.perf_counter()
        try:
            function(query)
        except OutOfVocabulary:
            pass
        times.append((time.perf_counter() - started) * 1000)
    times_array = np.asarray(times)
    return {
        "queries": len(times),
        "median_ms": round(float(np.median(times_array)), 3),
        "p95_ms": round(float(np.percentile(times_array, 95)), 3),
        "max_ms": round(float(times_array.max()), 3),
    }


def benchmark_similar(*, project_dir: str | os.PathLike, source: str = "word2vec", word: str = "京都", cold_runs: int = 3, warm_queries: int = 300, seed: int = 13) -> dict[str, Any]:
    """Cold latency (``python -m pipeline similar`` in fresh processes) and warm latency (in-process).

    Warm latency is measured for queries that are keys (no tokenization), for natural
    forms (Sudachi first), and on a synthetic 20,000 x 300 table, the size the issue's
    target is stated for (the KNBC vocabularies are smaller).
    """
    import statistics
    import subprocess
    import sys
    import time

    project_dir = Path(project_dir)
    engine = QueryEngine.load(project_dir=project_dir, source=source)  # fails early with a clear message
    command = [sys.executable, "-m", "pipeline", "--dir", str(project_dir), "similar", word, "--vectors", source]
    runs = []
    for _ in range(cold_runs):
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        runs.append(round(time.perf_counter() - started, 3))
        if completed.returncode != 0:
            raise PipelineError(f"`{' '.join(command[1:])}` failed: {completed.stderr.strip()[-400:]}", hint="Run it by hand to see the error.")

    rng = np.random.default_rng(seed)
    index = engine.index
    key_queries = [index.words[i] for i in rng.integers(0, len(index), size=warm_queries)]
    text_queries = [TEXT_QUERIES[i % len(TEXT_QUERIES)] for i in range(warm_queries)]
    engine.similar(key_queries[0])  # warm-up: norms, tokenizer, BLAS
    engine.try_resolve(text_queries[0])
    warm_key = _latency_ms(lambda q: engine.similar(q, topn=10), key_queries)
    warm_text = _latency_ms(lambda q: engine.similar(q, topn=10), text_queries)

    # A 20k x 300 table (ja_ginza's size), random unit-scale vectors: the search cost does not depend on the values.
    synthetic_words = [f"w{i}" for i in range(20000)]
    synthetic = QueryEngine(VectorIndex(source="synthetic", words=synthetic_words, vectors=rng.standard_normal((20000, 300)).astype(np.float32)))
    synthetic.similar(synthetic_words[0])
    warm_synthetic = _latency_ms(lambda q: synthetic.similar(q, topn=10), [synthetic_words[i] for i in rng.integers(0, 20000, size=warm_queries)])

    cold_median = statistics.median(runs)
    return {
        "source": source,
        "vocab_size": len(index),
        "dim": index.dim,
        "cold": {"command": " ".join(["python"] + command[1:]), "runs_s": runs, "median_s": round(cold_median, 3)},
        "warm": {"key": warm_key, "text": warm_text},
        "synthetic_20k": {"vocab_size": 20000, "dim": 300, **warm_synthetic},
        "targets": {"cold_s": COLD_TARGET_S, "warm_ms": WARM_TARGET_MS},
        "meets_targets": cold_median <= COLD_TARGET_S and warm_synthetic["median_ms"] <= WARM_TARGET_MS and warm_text["median_ms"] <= WARM_TARGET_MS,
    }
