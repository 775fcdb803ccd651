"""Stage ``spacy_vectors``: an embedding table for the corpus vocabulary from ja_ginza's static vectors.

ja_ginza's vector table has 20,000 rows but about 480,000 keys: the vectors were
pruned (``Vectors.prune``-style), and each dropped word was mapped onto the row of
its nearest kept word. Many words therefore share one vector exactly, and such
words are each other's nearest neighbours with cosine 1.0. The stage measures how
often that happens for this corpus and records it in ``meta.json`` (and the
evaluation report repeats it).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from typing import Any

import numpy as np

from pipeline.errors import ConfigError
from pipeline.io import read_jsonl

logger = logging.getLogger(__name__)

LOOKUP_FIELDS = ("surface", "lemma", "norm")


def load_spacy_vectors(model_name: str):
    """The ``Vectors`` table and the ``StringStore`` of a spaCy package, without its pipeline components."""
    import spacy

    try:
        from spacy.util import get_package_path, load_config

        # Exclude every component: only the vocab (strings + vectors) is needed, and loading
        # the transformer-free ja_ginza components would add seconds for nothing.
        components = list(load_config(get_package_path(model_name) / _model_subdir(model_name) / "config.cfg")["nlp"]["pipeline"])
    except Exception:  # not a package layout we know: load everything
        components = []
    try:
        nlp = spacy.load(model_name, exclude=components)
    except OSError as exc:
        raise ConfigError(
            "E110",
            f"spaCy model '{model_name}' is not installed ({exc}).".replace("\n", " "),
            hint="Install it with `pip install ja-ginza`, or set spacy_vectors.model to an installed package.",
        ) from None
    vectors = nlp.vocab.vectors
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise ConfigError(
            "E111", f"spaCy model '{model_name}' has no static vectors.", hint="Set spacy_vectors.model to ja_ginza (not ja_ginza_electra)."
        )
    return nlp, vectors


def _model_subdir(model_name: str) -> str:
    """The versioned data directory inside a spaCy package (``ja_ginza/ja_ginza-5.3.0``)."""
    from importlib.metadata import version

    return f"{model_name}-{version(model_name.replace('_', '-'))}"


def _collect_vocab(tokens_path, field: str) -> tuple[Counter, dict[str, Counter]]:
    """Counts of ``field`` values, and for each value the counts of its other forms (lookup fallbacks)."""
    counts: Counter = Counter()
    forms: dict[str, Counter] = defaultdict(Counter)
    for row in read_jsonl(tokens_path):
        values = row[field]
        others = [row[name] for name in LOOKUP_FIELDS if name != field]
        for index, value in enumerate(values):
            if not value or any(c.isspace() for c in value):
                continue
            counts[value] += 1
            for other in others:
                if other[index] != value:
                    forms[value][other[index]] += 1
    return counts, forms


def shared_row_statistics(*, key_rows: dict[str, int], vectors) -> dict[str, Any]:
    """How many keys of the whole model, and how many words of this vocabulary, share a vector row."""
    key2row = vectors.key2row
    keys_per_row = np.bincount(np.fromiter(key2row.values(), dtype=np.int64, count=len(key2row)), minlength=vectors.shape[0])
    words_by_row: dict[int, list[str]] = defaultdict(list)
    for word, row in key_rows.items():
        words_by_row[row].append(word)
    groups = sorted((words for words in words_by_row.values() if len(words) > 1), key=len, reverse=True)
    sharing = sum(len(words) for words in groups)
    return {
        "model_keys": int(len(key2row)),
        "model_rows": int(vectors.shape[0]),
        "model_keys_per_row_mean": round(len(key2row) / max(1, vectors.shape[0]), 2),
        "model_keys_per_row_max": int(keys_per_row.max()) if keys_per_row.size else 0,
        "model_rows_shared_by_2_or_more_keys": int((keys_per_row > 1).sum()),
        "vocab_words_with_vector": len(key_rows),
        "vocab_distinct_rows": len(words_by_row),
        "vocab_words_sharing_a_row": sharing,
        "vocab_share_of_words_sharing_a_row": round(sharing / max(1, len(key_rows)), 4),
        "vocab_shared_row_groups": len(groups),
        "largest_groups": [words[:12] for words in groups[:8]],
        "note": (
            "ja_ginza maps ~480k keys onto 20k vector rows: words that share a row have identical vectors "
            "(cosine 1.0), so they are indistinguishable to any model that starts from these vectors."
        ),
    }


def lookup_rows(vocab: list[str], *, forms: dict[str, Counter], nlp, vectors, field: str) -> tuple[dict[str, int], Counter]:
    """word -> row of the spaCy table, and how each was found (``field`` itself or "other form").

    The token field is looked up first; a word missing from the table falls back to its other
    forms in the corpus (most frequent first), e.g. a norm whose surface form is there.
    """
    strings, key2row = nlp.vocab.strings, vectors.key2row

    def row_of(text: str) -> int | None:
        # StringStore.__getitem__ hashes any string (adding nothing for a lookup by text)
        return key2row.get(strings.as_int(text) if hasattr(strings, "as_int") else strings[text])

    key_rows: dict[str, int] = {}
    found_by: Counter = Counter()
    for word in vocab:
        row = row_of(word)
        how = field
        if row is None:
            for other, _ in forms.get(word, Counter()).most_common(3):
                row = row_of(other)
                if row is not None:
                    how = "other form"
                    break
        if row is not None:
            key_rows[word] = int(row)
            found_by[how] += 1
    return key_rows, found_by


def _coverage(key_rows: dict[str, int], counts: Counter, *, vocab: list[str], min_count: int, found_by: Counter) -> dict[str, Any]:
    from pipeline.vectors.store import corpus_coverage

    coverage = corpus_coverage(key_rows, counts)
    coverage["vocab_min_count"] = min_count
    coverage["vocab_words"] = len(vocab)
    coverage["vocab_words_with_vector"] = len(key_rows)
    coverage["vocab_coverage"] = round(len(key_rows) / max(1, len(vocab)), 4)
    coverage["found_by"] = dict(found_by)
    return coverage


def spacy_vectors_stage(ctx) -> dict[str, Any]:
    """Look up every corpus word (``token_field``, at least ``min_count`` times) in the spaCy vectors."""
    from pipeline.paths import SPACY_VECTORS_DIR, TOKENS
    from pipeline.text.tokenize import tokenized_split_mode
    from pipeline.vectors.store import library_versions, make_keyed_vectors, write_vector_dir

    section = ctx.section
    field, model_name, min_count = section["token_field"], section["model"], section["min_count"]
    started = time.perf_counter()
    counts, forms = _collect_vocab(ctx.input(TOKENS), field)
    vocab = [word for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if count >= min_count]
    nlp, vectors = load_spacy_vectors(model_name)
    key_rows, found_by = lookup_rows(vocab, forms=forms, nlp=nlp, vectors=vectors, field=field)
    words = list(key_rows)
    # (len(words), dim) copy of the rows: the project table, one row per word even when rows are shared.
    table = (
        np.asarray(vectors.data[[key_rows[w] for w in words]], dtype=np.float32) if words else np.zeros((0, vectors.shape[1]), np.float32)
    )
    shared = shared_row_statistics(key_rows=key_rows, vectors=vectors)
    coverage = _coverage(key_rows, counts, vocab=vocab, min_count=min_count, found_by=found_by)
    meta = {
        "source": "spacy",
        "token_field": field,
        "split_mode": tokenized_split_mode(ctx.project_dir),
        "model": model_name,
        "model_version": nlp.meta.get("version"),
        "model_vectors": nlp.meta.get("vectors", {}),
        "coverage": coverage,
        "shared_rows": shared,
        "build_seconds": round(time.perf_counter() - started, 3),
        "versions": library_versions(),
    }
    meta = write_vector_dir(ctx.output(SPACY_VECTORS_DIR), keyed_vectors=make_keyed_vectors(words, table), meta=meta)
    logger.info(
        "spacy_vectors: %d of %d words found in %s (%.1f%%); %d words share a vector row with another corpus word",
        len(words),
        len(vocab),
        model_name,
        100 * coverage["vocab_coverage"],
        shared["vocab_words_sharing_a_row"],
    )
    return {
        "vocab_size": len(words),
        "dim": meta["dim"],
        "vocab_coverage": coverage["vocab_coverage"],
        "token_coverage": coverage["token_coverage"],
        "words_sharing_a_row": shared["vocab_words_sharing_a_row"],
        "distinct_rows": shared["vocab_distinct_rows"],
    }


def ginza_table(vectors, strings) -> tuple[list[str], np.ndarray]:
    """Every key of a spaCy vector table as text, and its row, in the table's own key order.

    ja_ginza lists its 20,000 kept words first (key i on row i), then the pruned words mapped
    onto them, so the first key of each row is the word the row was kept for.
    """
    keys, rows = [], []
    for key_hash, row in vectors.key2row.items():
        try:
            keys.append(strings[key_hash])
        except KeyError:  # a hash without its string: the key cannot be typed, leave it out
            continue
        rows.append(int(row))
    return keys, np.asarray(rows, dtype=np.int64)


def ginza_vectors_stage(ctx) -> dict[str, Any]:
    """Export the whole static vector table of ``ginza_vectors.model`` into the project's compact store, once."""
    from pipeline.paths import GINZA_VECTORS_DIR
    from pipeline.vectors.store import write_compact_dir

    section = ctx.section
    started = time.perf_counter()
    nlp, vectors = load_spacy_vectors(section["model"])
    keys, key_rows = ginza_table(vectors, nlp.vocab.strings)
    meta = {
        "source": "ginza",
        # Keys are Sudachi normalized forms and surface forms mixed: a query is looked up as typed
        # first, then as its normalized form, then as its lemma.
        "token_field": "surface",
        "split_mode": "C",  # GiNZA's own split mode
        "model": section["model"],
        "model_version": nlp.meta.get("version"),
        "model_vectors": nlp.meta.get("vectors", {}),
        "model_keys": int(len(vectors.key2row)),
        "model_rows": int(vectors.shape[0]),
    }
    directory = ctx.output(GINZA_VECTORS_DIR)
    meta = write_compact_dir(directory, keys=keys, key_rows=key_rows, rows=np.asarray(vectors.data), meta=meta, dtype=section["dtype"])
    meta["export_seconds"] = round(time.perf_counter() - started, 2)
    from pipeline.io import write_json
    from pipeline.vectors.store import META_FILENAME

    write_json(directory / META_FILENAME, meta)
    logger.info("ginza_vectors: %d keys on %d rows of %d dims (%s)", meta["keys"], meta["rows"], meta["dim"], meta["dtype"])
    return {"keys": meta["keys"], "rows": meta["rows"], "dim": meta["dim"], "keys_per_row_max": meta["keys_per_row_max"]}
