"""Vector source directories: write, load (gensim with mmap, or numpy only), import external vectors.

A source directory (see :mod:`pipeline.vectors`) is written once, complete, and
then only read. gensim is imported inside the functions that need it: the query
path (:func:`load_vector_arrays`) reads ``words.txt`` and the ``.npy`` array
that gensim's ``KeyedVectors.save`` stores beside ``vectors.kv``, so a cold
``jpipe similar`` does not pay for importing gensim and scipy.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ConfigError, InputError, ModelError
from pipeline.io import atomic_open, read_json, read_jsonl, replace_dir, write_json

logger = logging.getLogger(__name__)

KV_FILENAME = "vectors.kv"
# gensim writes an attribute saved "separately" as <file>.<attribute>.npy
KV_ARRAY_FILENAME = "vectors.kv.vectors.npy"
TEXT_FILENAME = "vectors.txt"
WORDS_FILENAME = "words.txt"
META_FILENAME = "meta.json"
TOKEN_FIELDS = ("surface", "lemma", "norm")
IMPORT_FORMATS = ("auto", "text", "binary", "kv", "fasttext")
# gensim: KeyedVectors + vectors.txt (usable as embedding_init); compact: the memory-mapped store of the
# ginza source (rows shared by identical vectors, no text copy). auto: compact above COMPACT_IMPORT_MIN_KEYS keys.
IMPORT_LAYOUTS = ("auto", "gensim", "compact")
COMPACT_IMPORT_MIN_KEYS = 200_000
# First four bytes of a fastText .bin model (int32 793712314, little-endian).
_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")


def source_names() -> tuple[str, ...]:
    from pipeline.paths import VECTOR_SOURCES

    return tuple(VECTOR_SOURCES)


def source_dir(project_dir: str | os.PathLike, source: str) -> Path:
    """``models/vectors/<source>`` of a project; an unknown name is a ``ConfigError`` (E109)."""
    from pipeline.paths import VECTOR_SOURCES

    if source not in VECTOR_SOURCES:
        raise ConfigError("E109", f"Unknown vector source '{source}'.", hint=f"Valid sources: {', '.join(VECTOR_SOURCES)}.")
    return Path(project_dir) / VECTOR_SOURCES[source]


def require_source_dir(project_dir: str | os.PathLike, source: str) -> Path:
    """The directory of ``source``, or a ``ModelError`` (E305) that says how to build it and what exists."""
    directory = source_dir(project_dir, source)
    if (directory / META_FILENAME).exists():
        return directory
    available = available_sources(project_dir)
    how = {
        "word2vec": "Train them with `jpipe run word2vec`.",
        "spacy": "Build them with `jpipe run spacy_vectors`.",
        "imported": "Import a word2vec-format or KeyedVectors file with `jpipe vectors import PATH`.",
        "ginza": "Export ja_ginza's whole table with `jpipe run ginza_vectors`.",
        "combined": "Build it with `jpipe run combined_vectors`.",
    }[source]
    others = f" Available now: {', '.join(available)}." if available else ""
    raise ModelError("E305", f"No {source} vectors in {directory}.", hint=how + others)


# What `jpipe similar` queries when no source is named: the everyday-word table when the project has it.
AUTO_SOURCE_ORDER = ("ginza", "word2vec")


def resolve_source(project_dir: str | os.PathLike, source: str) -> str:
    """``source`` itself, or for "auto" the first of ginza, word2vec that the project has (word2vec when neither)."""
    if source != "auto":
        return source
    for name in AUTO_SOURCE_ORDER:
        if (source_dir(project_dir, name) / META_FILENAME).exists():
            return name
    return AUTO_SOURCE_ORDER[-1]


def available_sources(project_dir: str | os.PathLike) -> list[str]:
    return [name for name in source_names() if (source_dir(project_dir, name) / META_FILENAME).exists()]


# ---------------------------------------------------------------------- write
def quiet_gensim() -> None:
    """gensim logs every epoch and every file at INFO; keep that for --verbose (DEBUG) runs only."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("gensim").setLevel(logging.WARNING)


def has_whitespace(word: str) -> bool:
    """Keys with whitespace cannot be written in word2vec text format (fields are space-separated)."""
    return not word or any(char.isspace() for char in word)


def make_keyed_vectors(words: list[str], vectors: np.ndarray):
    """A gensim ``KeyedVectors`` from keys and a ``(len(words), dim)`` float array."""
    from gensim.models import KeyedVectors

    quiet_gensim()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    keyed = KeyedVectors(vector_size=vectors.shape[1], count=0, dtype=np.float32)
    if words:
        keyed.add_vectors(list(words), vectors)
    return keyed


def write_word2vec_text(path: str | os.PathLike, words: list[str], vectors: np.ndarray) -> int:
    """Write word2vec text format atomically; returns how many keys were skipped for whitespace.

    ``%.8g`` keeps float32 values to within 1 ulp, so a round trip is lossless in practice.
    """
    keep = [index for index, word in enumerate(words) if not has_whitespace(word)]
    with atomic_open(path, "w") as handle:
        handle.write(f"{len(keep)} {vectors.shape[1]}\n")
        for index in keep:
            row = np.asarray(vectors[index], dtype=np.float32)
            handle.write(words[index] + " " + " ".join(f"{value:.8g}" for value in row.tolist()) + "\n")
    return len(words) - len(keep)


def write_vector_dir(directory: str | os.PathLike, *, keyed_vectors, meta: dict[str, Any]) -> dict[str, Any]:
    """Write a complete source directory from gensim ``keyed_vectors``; returns the meta written.

    ``meta`` must hold ``source`` and ``token_field``; vocabulary size, dim and the file list are added.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    words = list(keyed_vectors.index_to_key)
    vectors = np.asarray(keyed_vectors.vectors, dtype=np.float32)
    # separately=["vectors"]: the array goes to its own .npy even when small, so mmap="r" always works.
    keyed_vectors.save(str(directory / KV_FILENAME), separately=["vectors"])
    skipped = write_word2vec_text(directory / TEXT_FILENAME, words, vectors)
    with atomic_open(directory / WORDS_FILENAME, "w") as handle:
        for word in words:
            handle.write(word + "\n")
    meta = {
        **meta,
        "vocab_size": len(words),
        "dim": int(vectors.shape[1]),
        "text_export_skipped_keys": skipped,
        "files": sorted({p.name for p in directory.iterdir() if not p.name.startswith(".")} | {META_FILENAME}),
    }
    meta.setdefault("versions", library_versions())
    write_json(directory / META_FILENAME, meta)
    return meta


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("jpipe", "gensim", "numpy", "spacy", "ja-ginza", "sudachipy", "sudachidict-core"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions


# ----------------------------------------------------------------------- read
def read_meta(directory: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(directory) / META_FILENAME)


def load_keyed_vectors(directory: str | os.PathLike, *, mmap: str | None = "r"):
    """The source as gensim ``KeyedVectors``; with ``mmap="r"`` the vectors stay on disk, shared between processes."""
    from gensim.models import KeyedVectors

    quiet_gensim()
    path = Path(directory) / KV_FILENAME
    if not path.exists():
        raise ModelError("E304", f"{path} is missing.", hint="Rebuild the source with `jpipe run` (or re-import it).")
    return KeyedVectors.load(str(path), mmap=mmap)


def load_vector_arrays(directory: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(words, vectors)`` with numpy only: ``vectors`` is a read-only memory map of shape ``(len(words), dim)``.

    Falls back to gensim when the directory has no ``words.txt`` (a hand-made directory).
    """
    directory = Path(directory)
    words_path, array_path = directory / WORDS_FILENAME, directory / KV_ARRAY_FILENAME
    if words_path.exists() and array_path.exists():
        with open(words_path, encoding="utf-8") as handle:
            words = handle.read().split("\n")[:-1]
        vectors = np.load(array_path, mmap_mode="r")
        if vectors.ndim == 2 and vectors.shape[0] == len(words):
            return words, vectors
        logger.warning("%s does not match %s; loading with gensim", words_path, array_path)
    keyed = load_keyed_vectors(directory)
    return list(keyed.index_to_key), keyed.vectors


# ------------------------------------------------------------------- coverage
def count_field(path: str | os.PathLike, field: str) -> Counter:
    """Token counts of ``field`` over a tokens JSONL file (streamed)."""
    counts: Counter = Counter()
    for row in read_jsonl(path):
        counts.update(token for token in row.get(field, ()) if not has_whitespace(token))
    return counts


def corpus_coverage(keys: Iterable[str] | dict, counts: Counter) -> dict[str, Any]:
    """Share of the corpus vocabulary (types) and of running tokens that have a vector."""
    keyset = keys if isinstance(keys, (set, dict)) else set(keys)
    types_covered = sum(1 for word in counts if word in keyset)
    tokens_total = sum(counts.values())
    tokens_covered = sum(count for word, count in counts.items() if word in keyset)
    return {
        "corpus_types": len(counts),
        "corpus_types_covered": types_covered,
        "type_coverage": round(types_covered / max(1, len(counts)), 4),
        "corpus_tokens": tokens_total,
        "corpus_tokens_covered": tokens_covered,
        "token_coverage": round(tokens_covered / max(1, tokens_total), 4),
    }


# --------------------------------------------------------------------- import
def detect_format(path: str | os.PathLike) -> str:
    """``kv`` (gensim native), ``fasttext`` (fastText .bin), ``text`` or ``binary`` word2vec format."""
    import gzip

    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        head = handle.read(65536)
    if head[:4] == _FASTTEXT_MAGIC:
        return "fasttext"
    if head[:1] == b"\x80":  # pickle protocol >= 2: gensim's SaveLoad.save
        return "kv"
    header, _, rest = head.partition(b"\n")
    try:
        count, dim = (int(x) for x in header.split())
    except ValueError:
        raise InputError(
            "E207",
            f"{path} is not a word2vec-format or KeyedVectors file (first line {header[:60]!r} is not 'COUNT DIM').",
            hint="Accepted: word2vec text (.txt/.vec, optionally .gz), word2vec binary (.bin), gensim KeyedVectors (.kv), fastText .bin.",
        ) from None
    if count <= 0 or dim <= 0:
        raise InputError("E207", f"{path}: header says {count} words of {dim} dimensions.", hint="The file is empty or damaged.")
    # Text: the next line is "word v1 ... vDIM" in UTF-8. Binary: raw float32 bytes follow the word.
    first_line = rest.split(b"\n", 1)[0]
    try:
        fields = first_line.decode("utf-8").rstrip().split(" ")
        [float(x) for x in fields[-dim:]]
        if len(fields) >= dim + 1:
            return "text"
    except (UnicodeDecodeError, ValueError):
        pass
    return "binary"


def _load_external(path: Path, file_format: str, limit: int | None):
    """gensim KeyedVectors from a user file (the vectors in memory)."""
    from gensim.models import KeyedVectors

    quiet_gensim()
    if file_format in ("text", "binary"):
        # unicode_errors="ignore": word2vec C binaries cut multi-byte keys at a byte limit.
        # Binary: word2vec C tools cut multi-byte keys at a byte limit, so bad bytes are dropped;
        # text: a key that is not UTF-8 means a file in another encoding (E271).
        errors = "ignore" if file_format == "binary" else "strict"
        return KeyedVectors.load_word2vec_format(str(path), binary=file_format == "binary", limit=limit, unicode_errors=errors)
    if file_format == "fasttext":
        from gensim.models.fasttext import load_facebook_vectors

        return load_facebook_vectors(str(path))
    from gensim.utils import SaveLoad

    loaded = SaveLoad.load(str(path), mmap="r")
    keyed = getattr(loaded, "wv", loaded)  # a whole Word2Vec/FastText model: take its vectors
    if not isinstance(keyed, KeyedVectors):
        raise InputError(
            "E207", f"{path} holds a {type(loaded).__name__}, not KeyedVectors.", hint="Save vectors with `model.wv.save(path)`."
        )
    return keyed


def _check_import_options(path: Path, *, file_format: str, token_field: str, layout: str = "auto") -> None:
    if not path.exists():
        raise InputError("E205", f"{path} does not exist.", hint="Give the path of a word2vec .txt/.vec/.bin or a gensim .kv file.")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError("E272", f"Vectors file {path} is empty.", hint="Export the vectors again, or give another file.")
    if layout not in IMPORT_LAYOUTS:
        raise ConfigError("E109", f"Unknown layout '{layout}'.", hint=f"Valid layouts: {', '.join(IMPORT_LAYOUTS)}.")
    if file_format not in IMPORT_FORMATS:
        raise ConfigError("E109", f"Unknown format '{file_format}'.", hint=f"Valid formats: {', '.join(IMPORT_FORMATS)}.")
    if token_field not in TOKEN_FIELDS:
        raise ConfigError("E109", f"Unknown token field '{token_field}'.", hint=f"Valid fields: {', '.join(TOKEN_FIELDS)}.")


def _read_external(path: Path, *, file_format: str, limit: int | None) -> tuple[str, list[str], np.ndarray, int]:
    """(detected format, kept keys, their ``(len(keys), dim)`` float32 vectors, keys read before dropping whitespace keys)."""
    detected = detect_format(path) if file_format == "auto" else file_format
    logger.info("importing %s (%s format)%s", path, detected, f", first {limit} words" if limit else "")
    try:
        keyed = _load_external(path, detected, limit)
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(
            "E271", f"Vectors file {path} is not valid UTF-8 ({exc.reason} at byte {exc.start} of a key).", hint="Convert it to UTF-8."
        ) from None
    except Exception as exc:  # gensim raises many types for a damaged or mislabelled file
        raise InputError(
            "E207",
            f"Could not read {path} as {detected} vectors: {type(exc).__name__}: {exc}",
            hint=f"Give the file format explicitly ({', '.join(IMPORT_FORMATS[1:])}), or check the file.",
        ) from None
    words = list(keyed.index_to_key)
    count = len(words) if limit is None else min(limit, len(words))
    keep = [index for index in range(count) if not has_whitespace(words[index])]
    vectors = np.asarray(keyed.vectors[:count], dtype=np.float32)
    if len(keep) < count:
        vectors = vectors[keep]
    if not keep:
        raise InputError("E209", f"{path} holds no usable vectors.", hint="Check the file (and the word limit, if one was given).")
    if not np.isfinite(vectors).all():
        raise InputError("E207", f"{path} has NaN or infinite values.", hint="The file is damaged; export it again.")
    return detected, [words[index] for index in keep], vectors, count


def _project_coverage(project_dir: Path, words: list[str], token_field: str) -> dict[str, Any] | None:
    """Coverage of the project's tokenized corpus by the imported keys, when the corpus is tokenized."""
    from pipeline.paths import TOKENS

    tokens_path = project_dir / TOKENS
    if not tokens_path.exists():
        return None
    coverage = corpus_coverage(set(words), count_field(tokens_path, token_field))
    if coverage["type_coverage"] < 0.2:
        logger.warning(
            "only %.0f%% of the corpus %s forms have a vector: are the keys another token field (surface, lemma, norm)?",
            100 * coverage["type_coverage"],
            token_field,
        )
    return coverage


def _swap_in(target: Path, *, keyed_vectors, meta: dict[str, Any], table: tuple[list[str], np.ndarray] | None = None) -> dict[str, Any]:
    """Build the source beside ``target``, then swap directories: readers see the old or the new source, never half.

    With ``keyed_vectors`` None the compact store is written from ``table`` (keys, vectors).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if keyed_vectors is None:
            key_rows, rows = dedupe_rows(table[1])
            meta = write_compact_dir(staging, keys=table[0], key_rows=key_rows, rows=rows, meta=meta)
        else:
            meta = write_vector_dir(staging, keyed_vectors=keyed_vectors, meta=meta)
        replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


def import_vectors(
    *,
    project_dir: str | os.PathLike,
    path: str | os.PathLike,
    file_format: str = "auto",
    token_field: str = "norm",
    limit: int | None = None,
    layout: str = "auto",
) -> dict[str, Any]:
    """Import external vectors as the ``imported`` source, atomically; returns its meta.

    ``limit`` keeps the first N words (word2vec files are sorted by frequency), for
    very large files such as full chiVe. ``token_field`` records which token field the
    keys are (chiVe: ``norm``; fastText cc.ja: ``surface``) so that queries and the
    classifiers look up the right form; coverage of the project's corpus is measured
    for that field. Queries are normalized with the project's split mode, recorded as ``split_mode``.

    ``layout``: "gensim" writes KeyedVectors and ``vectors.txt`` (usable as ``embedding_init``);
    "compact" writes the memory-mapped store of the ginza source (keys with identical vectors
    share one row, no text copy), for large tables; "auto" picks compact above 200,000 keys.
    """
    from pipeline.text.tokenize import tokenized_split_mode

    path = Path(path).expanduser()
    _check_import_options(path, file_format=file_format, token_field=token_field, layout=layout)
    started = time.perf_counter()
    detected, words, vectors, count = _read_external(path, file_format=file_format, limit=limit)
    meta: dict[str, Any] = {
        "source": "imported",
        "origin": str(path.resolve()),
        "origin_size_bytes": path.stat().st_size,
        "format": detected,
        "token_field": token_field,
        "split_mode": tokenized_split_mode(project_dir),
        "limit": limit,
        "skipped_whitespace_keys": count - len(words),
    }
    coverage = _project_coverage(Path(project_dir), words, token_field)
    if coverage is not None:
        meta["coverage"] = coverage
    meta["import_seconds"] = round(time.perf_counter() - started, 3)
    target = source_dir(project_dir, "imported")
    compact = layout == "compact" or (layout == "auto" and len(words) > COMPACT_IMPORT_MIN_KEYS)
    meta = _swap_in(target, keyed_vectors=None if compact else make_keyed_vectors(words, vectors), meta=meta, table=(words, vectors))
    logger.info(
        "imported %d vectors of %d dimensions into %s (%s layout)", meta["vocab_size"], meta["dim"], target, meta.get("layout", "gensim")
    )
    return meta


def dedupe_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(key_rows, rows)``: keys whose vectors are identical share one row (ja_ginza exported as text has 20k distinct rows).

    Rows are matched by a 16-byte digest, then compared exactly, so memory stays one digest per row.
    """
    import hashlib

    first: dict[bytes, int] = {}
    key_rows = np.empty(len(vectors), dtype=np.int64)
    keep: list[int] = []
    for index in range(len(vectors)):
        row = np.ascontiguousarray(vectors[index])
        digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        found = first.get(digest)
        if found is None or not np.array_equal(vectors[keep[found]], row):
            found = len(keep)
            first.setdefault(digest, found)
            keep.append(index)
        key_rows[index] = found
    return key_rows, np.asarray(vectors[keep], dtype=np.float32)


# -------------------------------------------------------------- compact store
# A table whose keys may share rows (ja_ginza: 480,443 keys on 20,000 rows), stored without
# repeating a row per key and without gensim: memory-mapped rows plus a sorted key index.
COMPACT_LAYOUT = "compact"
ROWS_FILENAME = "rows.npy"  # (rows, dim) unit-normalized float32 or float16
KEYS_FILENAME = "keys.txt"  # the keys sorted by their UTF-8 bytes, each followed by "\n" (no key has whitespace)
KEY_OFFSETS_FILENAME = "key_offsets.npy"  # (keys + 1,) int64: key i is keys.txt[offsets[i] : offsets[i + 1] - 1]
KEY_ROWS_FILENAME = "key_rows.npy"  # (keys,) int32: the row of sorted key i
ROW_KEYS_FILENAME = "row_keys.npy"  # (keys,) int32: sorted key ids grouped by row, the row's own word first
ROW_OFFSETS_FILENAME = "row_offsets.npy"  # (rows + 1,) int64: keys of row r are row_keys[row_offsets[r] : row_offsets[r + 1]]
COMPACT_FILES = (ROWS_FILENAME, KEYS_FILENAME, KEY_OFFSETS_FILENAME, KEY_ROWS_FILENAME, ROW_KEYS_FILENAME, ROW_OFFSETS_FILENAME)
COMPACT_DTYPES = ("float32", "float16")


def _usable_keys(keys: list[str], key_rows: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Keys without whitespace (the key file is newline-separated), each once (its first row wins)."""
    seen: set[str] = set()
    keep = []
    for index, key in enumerate(keys):
        if not has_whitespace(key) and key not in seen:
            seen.add(key)
            keep.append(index)
    return [keys[i] for i in keep], np.asarray(key_rows, dtype=np.int64)[keep]


def _drop_unused_rows(key_rows: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows that no key points to are left out (they could never be shown); key rows renumbered."""
    used = np.bincount(key_rows, minlength=rows.shape[0]) > 0
    if used.all():
        return key_rows, rows
    renumber = np.cumsum(used) - 1
    return renumber[key_rows], rows[used]


def unit_rows(rows: np.ndarray, *, block: int = 65536) -> np.ndarray:
    """(n, dim) float32 copy of ``rows`` scaled to unit length, block by block; all-zero rows stay zero."""
    out = np.empty(rows.shape, dtype=np.float32)
    for start in range(0, rows.shape[0], block):
        chunk = np.asarray(rows[start : start + block], dtype=np.float32)
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + len(chunk)] = chunk / np.where(norms > 0, norms, 1.0)
    return out


def write_compact_dir(
    directory: str | os.PathLike, *, keys: list[str], key_rows: np.ndarray, rows: np.ndarray, meta: dict[str, Any], dtype: str = "float32"
) -> dict[str, Any]:
    """Write a compact source: ``keys[i]`` lies on row ``key_rows[i]`` of the ``(n_rows, dim)`` array ``rows``.

    The first key given for a row is the word shown for that row in neighbour lists (ja_ginza
    lists its 20,000 kept words first, one per row). Returns the meta written.
    """
    if dtype not in COMPACT_DTYPES:
        raise ConfigError("E109", f"Unknown vector dtype '{dtype}'.", hint=f"Valid dtypes: {', '.join(COMPACT_DTYPES)}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    keys, key_rows = _usable_keys(keys, key_rows)
    key_rows, rows = _drop_unused_rows(key_rows, rows)
    encoded = [key.encode("utf-8") for key in keys]
    order = sorted(range(len(keys)), key=encoded.__getitem__)  # byte order: what the binary search compares
    with atomic_open(directory / KEYS_FILENAME, "wb") as handle:
        handle.write(b"".join(encoded[i] + b"\n" for i in order))
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(encoded[i]) + 1 for i in order])
    position = np.empty(len(keys), dtype=np.int64)  # original key index -> sorted key id
    position[np.asarray(order, dtype=np.int64)] = np.arange(len(keys))
    by_row = np.argsort(key_rows, kind="stable")  # original key ids grouped by row, first-given key first
    counts = np.bincount(key_rows, minlength=rows.shape[0])
    np.save(directory / KEY_OFFSETS_FILENAME, offsets)
    np.save(directory / KEY_ROWS_FILENAME, key_rows[np.asarray(order, dtype=np.int64)].astype(np.int32))
    np.save(directory / ROW_KEYS_FILENAME, position[by_row].astype(np.int32))
    np.save(directory / ROW_OFFSETS_FILENAME, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    np.save(directory / ROWS_FILENAME, unit_rows(rows).astype(dtype))
    meta = {
        **meta,
        "layout": COMPACT_LAYOUT,
        "vocab_size": len(keys),
        "keys": len(keys),
        "rows": int(rows.shape[0]),
        "dim": int(rows.shape[1]),
        "dtype": dtype,
        "unit_normalized": True,
        "keys_per_row_mean": round(len(keys) / max(1, rows.shape[0]), 2),
        "keys_per_row_max": int(counts.max()) if counts.size else 0,
        "rows_shared_by_2_or_more_keys": int((counts > 1).sum()),
        "files": sorted({*COMPACT_FILES, META_FILENAME}),
    }
    meta.setdefault("versions", library_versions())
    write_json(directory / META_FILENAME, meta)
    return meta


class CompactKeys:
    """Key -> row of a compact source (a read-only mapping), by binary search over the sorted key file.

    Loading reads ~10 MB for ja_ginza's 480k keys and builds no dict: a cold query pays
    milliseconds, not the second a 480k-entry dict would take. A lookup is ~20 byte comparisons.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        missing = [name for name in COMPACT_FILES if not (directory / name).is_file()]
        if missing:
            raise ModelError(
                "E308", f"{directory} lacks {', '.join(missing)}.", hint="Export the source again (`jpipe run ginza_vectors`)."
            )
        self.blob = (directory / KEYS_FILENAME).read_bytes()
        self.offsets = np.load(directory / KEY_OFFSETS_FILENAME)
        self.key_rows = np.load(directory / KEY_ROWS_FILENAME)
        self.row_keys = np.load(directory / ROW_KEYS_FILENAME)
        self.row_offsets = np.load(directory / ROW_OFFSETS_FILENAME)
        if len(self.offsets) != len(self.key_rows) + 1 or len(self.row_keys) != len(self.key_rows) or self.offsets[-1] != len(self.blob):
            raise ModelError("E308", f"The key index files of {directory} disagree in length.", hint="Export the source again.")
        self._all: list[str] | None = None

    def __len__(self) -> int:
        return len(self.key_rows)

    def key(self, key_id: int) -> str:
        return self.blob[self.offsets[key_id] : self.offsets[key_id + 1] - 1].decode("utf-8")

    def find(self, key: str) -> int | None:
        """The sorted id of ``key``, or None."""
        target = key.encode("utf-8", "surrogatepass")
        blob, offsets = self.blob, self.offsets
        low, high = 0, len(self.key_rows)
        while low < high:
            middle = (low + high) // 2
            if blob[offsets[middle] : offsets[middle + 1] - 1] < target:
                low = middle + 1
            else:
                high = middle
        if low < len(self.key_rows) and blob[offsets[low] : offsets[low + 1] - 1] == target:
            return low
        return None

    def get(self, key: str, default: int | None = None) -> int | None:
        found = self.find(key)
        return default if found is None else int(self.key_rows[found])

    def __getitem__(self, key: str) -> int:
        found = self.find(key)
        if found is None:
            raise KeyError(key)
        return int(self.key_rows[found])

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.find(key) is not None

    def __iter__(self):
        if self._all is None:
            self._all = self.blob.decode("utf-8").split("\n")[:-1]
        return iter(self._all)

    def keys_of_row(self, row: int, *, limit: int | None = None) -> list[str]:
        """The keys on ``row`` (the first ``limit`` of them), the row's own word first."""
        start, end = int(self.row_offsets[row]), int(self.row_offsets[row + 1])
        end = end if limit is None else min(end, start + limit)
        return [self.key(int(i)) for i in self.row_keys[start:end]]

    def row_key_count(self, row: int) -> int:
        return int(self.row_offsets[row + 1] - self.row_offsets[row])

    def row_words(self) -> list[str]:
        """The word shown for each row (its first key)."""
        firsts = self.row_keys[self.row_offsets[:-1]]
        return [self.key(int(i)) for i in firsts]


def load_compact_arrays(directory: str | os.PathLike) -> tuple[CompactKeys, np.ndarray]:
    """``(keys, rows)``: the key index and the ``(rows, dim)`` read-only memory map of unit rows."""
    directory = Path(directory)
    keys = CompactKeys(directory)
    rows = np.load(directory / ROWS_FILENAME, mmap_mode="r")
    if rows.ndim != 2 or len(keys.row_offsets) != rows.shape[0] + 1:
        raise ModelError("E308", f"{directory / ROWS_FILENAME} does not match the key index.", hint="Export the source again.")
    return keys, rows
