"""Word-similarity queries on any vector directory: ``Vectors.load(path).most_similar("京都", topn=5)``.

Imports numpy, SudachiPy and the standard library only (no torch, spaCy or gensim),
so a cold ``jpipe similar`` stays well under a few seconds.

How a query word becomes a key
------------------------------
Vectors are keyed by one token field (``meta.json`` ``token_field``, by default
Sudachi's normalized form). A query goes through the same Sudachi tokenizer and
split mode as the corpus the vectors were built from (``meta.json`` ``split_mode``,
"C" for directories written before it was recorded), so natural forms work: 食べた -> 食べる, おいしい -> 美味しい,
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

from pipeline.errors import InputError, ModelError

logger = logging.getLogger(__name__)

# Sudachi POS (first level of the tag) of tokens dropped from a multi-token query.
FUNCTION_POS = ("助詞", "助動詞", "補助記号", "記号", "空白", "接頭辞")
# Rows scored per block: bounds the temporary memory for very large imported tables.
SCORE_BLOCK_ROWS = 262144
DEFAULT_SPLIT_MODE = "C"


class OutOfVocabulary(InputError):
    """A query (or one of its tokens) has no vector in the chosen source (E208)."""

    def __init__(self, message: str, *, hint: str | None = None, query: str = "", missing: str = "") -> None:
        super().__init__("E208", message, hint=hint)
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

    @property
    def composed(self) -> bool:
        """Several tokens averaged into one vector (a phrase, or a word that Sudachi splits)."""
        return self.how == "averaged"

    def to_json(self) -> dict[str, Any]:
        return {"query": self.text, "keys": self.keys, "how": self.how, "composed": self.composed}


@dataclass
class VectorIndex:
    """A vector source in memory (or memory-mapped): row words, ``(n, dim)`` vectors, row norms and the key index.

    ``words[i]`` is the word shown for row ``i``. Usually every key has its own row; in a compact
    source (``meta.json`` ``layout = "compact"``, e.g. ja_ginza's 480k keys on 20k rows) ``keys``
    maps many keys onto one row, and ``words[i]`` is the row's own word.
    """

    source: str
    words: list[str]
    vectors: np.ndarray  # (n, dim) float32 (float16 in a compact source), usually a read-only np.memmap
    meta: dict[str, Any] = field(default_factory=dict)
    keys: Any = None  # key -> row mapping (CompactKeys) when keys share rows; None: words are the keys

    def __post_init__(self) -> None:
        self.key_to_index = self.keys if self.keys is not None else {word: index for index, word in enumerate(self.words)}
        self._norms: np.ndarray | None = None

    @classmethod
    def load(cls, *, project_dir: str | os.PathLike, source: str) -> VectorIndex:
        """Source ``source`` (word2vec, spacy, imported, ginza, combined) of a project."""
        from pipeline.vectors.store import require_source_dir

        return cls.load_dir(require_source_dir(project_dir, source), source=source)

    @classmethod
    def load_dir(cls, directory: str | os.PathLike, *, source: str | None = None) -> VectorIndex:
        """Any vector directory (``meta.json`` plus its arrays), memory-mapped with numpy only."""
        from pipeline.vectors.store import COMPACT_LAYOUT, META_FILENAME, load_compact_arrays, load_vector_arrays, read_meta

        directory = Path(directory)
        if not (directory / META_FILENAME).is_file():
            raise ModelError(
                "E305",
                f"No word vectors in {directory} (no {META_FILENAME}).",
                hint="Give a vector directory such as models/vectors/word2vec: build one with `jpipe run word2vec`, or import one with `jpipe vectors import PATH`.",
            )
        meta = read_meta(directory)
        name = source or meta.get("source") or directory.name
        if meta.get("layout") == COMPACT_LAYOUT:
            keys, rows = load_compact_arrays(directory)
            return cls(source=name, words=keys.row_words(), vectors=rows, meta=meta, keys=keys)
        words, vectors = load_vector_arrays(directory)
        return cls(source=name, words=words, vectors=vectors, meta=meta)

    @property
    def shares_rows(self) -> bool:
        """True when several keys can share one row (a compact source)."""
        return self.keys is not None

    @property
    def key_count(self) -> int:
        return len(self.key_to_index)

    def row_keys(self, row: int, *, limit: int | None = None) -> list[str]:
        """The keys on ``row`` (at most ``limit``), the row's own word first."""
        return self.keys.keys_of_row(row, limit=limit) if self.keys is not None else [self.words[row]]

    def row_key_count(self, row: int) -> int:
        return self.keys.row_key_count(row) if self.keys is not None else 1

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
            if self.meta.get("unit_normalized"):
                # Stored unit rows (all-zero rows score 0 with any norm): no pass over the table.
                self._norms = np.ones(len(self.words), dtype=np.float32)
                return self._norms
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

    def query_vector(self, rows: list[int], negative_rows: list[int] | tuple[int, ...] = ()) -> np.ndarray:
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
        """The ``topn`` rows most cosine-similar to unit ``vector`` as ``(word, score)``, best first, without ``exclude``."""
        return [(self.words[row], score) for row, score in self.nearest_rows(vector, topn=topn, exclude=exclude)]

    def nearest_rows(self, vector: np.ndarray, *, topn: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[tuple[int, float]]:
        """The ``topn`` rows most cosine-similar to unit ``vector`` as ``(row, score)``, best first, without ``exclude``.

        Rows, not keys: in a compact source each row is listed once, however many keys share it,
        and excluding the query's rows leaves out every key that shares the query's vector.
        """
        scores = self.cosine_scores(vector)
        if exclude:
            scores[list(exclude)] = -np.inf
        count = min(topn, len(scores) - len(exclude))
        if count <= 0:
            return []
        # argpartition: O(n) selection of the best `count`, then sort only those.
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(index), float(scores[index])) for index in best]

    def similarity_rows(self, rows_a: list[int], rows_b: list[int]) -> float:
        return float(self.query_vector(rows_a) @ self.query_vector(rows_b))


# Other keys of a shared row shown beside a neighbour (the rest are counted).
ALIAS_EXAMPLES = 3


def _scored(index: VectorIndex, neighbours: list[tuple[int, float]]) -> list[dict[str, Any]]:
    """Neighbour rows as JSON, scores rounded to 4 digits (CLI output and reports).

    In a compact source a row also carries how many keys share it (``keys_on_row``) and a few
    of the others (``aliases``): they all have this very vector and score.
    """
    rows = []
    for row, score in neighbours:
        item: dict[str, Any] = {"word": index.words[row], "score": round(score, 4)}
        if index.shares_rows:
            item["keys_on_row"] = index.row_key_count(row)
            item["aliases"] = index.row_keys(row, limit=ALIAS_EXAMPLES + 1)[1:]
        rows.append(item)
    return rows


def _same_row_keys(index: VectorIndex, query: ResolvedQuery) -> dict[str, Any] | None:
    """Keys that share the (one-row) query's vector: left out of its neighbours, counted here."""
    if not index.shares_rows or len(query.rows) != 1:
        return None
    row = query.rows[0]
    others = [key for key in index.row_keys(row, limit=ALIAS_EXAMPLES + 2) if key not in query.keys][:ALIAS_EXAMPLES]
    return {"count": index.row_key_count(row) - 1, "examples": others}


class Vectors:
    """Word vectors from one vector directory, queried with the corpus' normalization.

    The light query object of the public API: numpy and the standard library on load,
    SudachiPy only once a query needs normalizing; never torch, spaCy or gensim.

    >>> vectors = Vectors.load("models/vectors/word2vec")
    >>> vectors.most_similar("京都", topn=5)  # [(word, cosine), ...], best first
    >>> vectors.similarity("犬", "猫"), vectors.analogy("京都", "寺", "神社", topn=3), len(vectors)
    """

    def __init__(self, index: VectorIndex, *, split_mode: str = DEFAULT_SPLIT_MODE, tokenizer=None) -> None:
        """``tokenizer``: any object with ``tokenize(text) -> {field: [...]}`` (e.g. a caching one), else Sudachi on first need."""
        self.index = index
        self.split_mode = split_mode
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, directory: str | os.PathLike, *, split_mode: str | None = None) -> Vectors:
        """Vectors from any directory written by ``jpipe`` (``word2vec``, ``spacy_vectors``, ``vectors import``), any working directory.

        Queries are tokenized with ``split_mode``, by default the split mode recorded in
        the directory's ``meta.json`` (the one its corpus was tokenized with), else "C".
        """
        index = VectorIndex.load_dir(directory)
        return cls(index, split_mode=split_mode or index.meta.get("split_mode") or DEFAULT_SPLIT_MODE)

    @classmethod
    def from_project(cls, *, project_dir: str | os.PathLike, source: str = "word2vec") -> Vectors:
        """Source ``source`` (word2vec, spacy, imported) of a project; old directories use the project's split mode."""
        index = VectorIndex.load(project_dir=project_dir, source=source)
        split_mode = index.meta.get("split_mode")
        if not split_mode:
            from pipeline.text.tokenize import tokenized_split_mode

            split_mode = tokenized_split_mode(project_dir)
        return cls(index, split_mode=split_mode)

    @property
    def source(self) -> str:
        return self.index.source

    @property
    def token_field(self) -> str:
        return self.index.token_field

    @property
    def vocab_size(self) -> int:
        return len(self.index)

    @property
    def dim(self) -> int:
        return self.index.dim

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __repr__(self) -> str:
        return f"Vectors(source={self.source!r}, vocab_size={self.vocab_size}, dim={self.dim}, token_field={self.token_field!r}, split_mode={self.split_mode!r})"

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
        """Map a query to vector rows, or raise ``OutOfVocabulary`` (E208) naming the missing token."""
        text = text.strip()
        if not text:
            raise InputError("E207", "Empty query.", hint="Give a word, for example 京都.")
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
        return ResolvedQuery(
            text=text, keys=keys, rows=[index.key_to_index[k] for k in keys], how="normalized" if len(keys) == 1 else "averaged"
        )

    def _oov_hint(self, key: str) -> str:
        index = self.index
        # Cheap suggestions: keys that contain the missing form, most frequent first (rows are frequency-ordered).
        close = [word for word in index.words[:200000] if key and key in word and word != key][:5]
        size = f"{index.key_count:,} keys on {len(index):,} rows" if index.shares_rows else f"{len(index):,} words"
        parts = [f"{index.source} has {size} (token field: {index.token_field})."]
        if close:
            parts.append("Keys containing it: " + ", ".join(close) + ".")
        parts.append("Try another form, or another vector source (word2vec, spacy, imported, ginza, combined).")
        return " ".join(parts)

    def try_resolve(self, text: str) -> ResolvedQuery | None:
        try:
            return self.resolve(text)
        except OutOfVocabulary:
            return None

    # --------------------------------------------------------------- queries
    def _neighbours(self, text: str, *, topn: int) -> tuple[ResolvedQuery, list[tuple[int, float]]]:
        query = self.resolve(text)
        vector = self.index.query_vector(query.rows)
        return query, self.index.nearest_rows(vector, topn=topn, exclude=set(query.rows))

    def _analogy(self, text_a: str, text_b: str, text_c: str, *, topn: int) -> tuple[list[ResolvedQuery], list[tuple[int, float]]]:
        a, b, c = self.resolve(text_a), self.resolve(text_b), self.resolve(text_c)
        vector = self.index.query_vector(a.rows + c.rows, b.rows)
        return [a, b, c], self.index.nearest_rows(vector, topn=topn, exclude=set(a.rows + b.rows + c.rows))

    def most_similar(self, word: str, *, topn: int = 10) -> list[tuple[str, float]]:
        """The ``topn`` nearest neighbours of ``word`` by cosine, as ``(word, score)``, without the query's own keys.

        In a compact source each neighbour is a row's own word; keys sharing the query's row are left out.
        """
        return [(self.index.words[row], score) for row, score in self._neighbours(word, topn=topn)[1]]

    def similarity(self, word_a: str, word_b: str) -> float:
        """Cosine similarity of two queries (several content words are averaged)."""
        return self.index.similarity_rows(self.resolve(word_a).rows, self.resolve(word_b).rows)

    def analogy(self, a: str, b: str, c: str, *, topn: int = 10) -> list[tuple[str, float]]:
        """Words closest to A - B + C (unit vectors, as gensim ``most_similar(positive=[A, C], negative=[B])``)."""
        return [(self.index.words[row], score) for row, score in self._analogy(a, b, c, topn=topn)[1]]

    def pair_score(self, text_a: str, text_b: str) -> float | None:
        """Cosine of two queries rounded to 4 digits, or None when either is out of vocabulary (the ``--pairs`` contract)."""
        a, b = self.try_resolve(text_a), self.try_resolve(text_b)
        if a is None or b is None:
            return None
        return round(self.index.similarity_rows(a.rows, b.rows), 4)

    # ------------------------------------------------- JSON views (CLI, reports)
    def similar_json(self, text: str, *, topn: int = 10) -> dict[str, Any]:
        """``most_similar`` with the resolved keys: ``{"query", "keys", "how", "vectors", "neighbours": [{"word", "score"}]}``."""
        query, neighbours = self._neighbours(text, topn=topn)
        result = {**query.to_json(), "vectors": self.source, "neighbours": _scored(self.index, neighbours)}
        same_row = _same_row_keys(self.index, query)
        if same_row is not None:
            result["same_row_keys"] = same_row
        return result

    def similarity_json(self, text_a: str, text_b: str) -> dict[str, Any]:
        """Cosine of two queries; ``same_row`` is true when both are one and the same vector (shared row or same key)."""
        a, b = self.resolve(text_a), self.resolve(text_b)
        score = round(self.index.similarity_rows(a.rows, b.rows), 4)
        return {
            "w1": text_a,
            "w2": text_b,
            "keys1": a.keys,
            "keys2": b.keys,
            "composed1": a.composed,
            "composed2": b.composed,
            "same_row": sorted(set(a.rows)) == sorted(set(b.rows)),
            "vectors": self.source,
            "score": score,
        }

    def pair_json(self, text_a: str, text_b: str) -> dict[str, Any]:
        """One row of a batch: ``similarity_json``, or ``score: null`` with the ``reason`` (the batch goes on)."""
        try:
            return self.similarity_json(text_a, text_b)
        except InputError as exc:
            return {"w1": text_a, "w2": text_b, "vectors": self.source, "score": None, "code": exc.code, "reason": exc.message}

    def analogy_json(self, text_a: str, text_b: str, text_c: str, *, topn: int = 10) -> dict[str, Any]:
        (a, b, c), neighbours = self._analogy(text_a, text_b, text_c, topn=topn)
        return {
            "a": text_a,
            "b": text_b,
            "c": text_c,
            "keys": {"a": a.keys, "b": b.keys, "c": c.keys},
            "vectors": self.source,
            "neighbours": _scored(self.index, neighbours),
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
            raise InputError(
                "E207",
                f"{name} line {number}: expected two tab-separated words, got {line!r}.",
                hint="Write one pair per line: WORD1<TAB>WORD2",
            )
        pairs.append((fields[0], fields[1]))
    return pairs
