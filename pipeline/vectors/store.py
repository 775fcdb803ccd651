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
    }[source]
    others = f" Available now: {', '.join(available)}." if available else ""
    raise ModelError("E305", f"No {source} vectors in {directory}.", hint=how + others)


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
        return KeyedVectors.load_word2vec_format(str(path), binary=file_format == "binary", limit=limit, unicode_errors="ignore")
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


def _check_import_options(path: Path, *, file_format: str, token_field: str) -> None:
    if not path.exists():
        raise InputError("E205", f"{path} does not exist.", hint="Give the path of a word2vec .txt/.vec/.bin or a gensim .kv file.")
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


def _swap_in(target: Path, *, keyed_vectors, meta: dict[str, Any]) -> dict[str, Any]:
    """Build the source beside ``target``, then swap directories: readers see the old or the new source, never half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
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
) -> dict[str, Any]:
    """Import external vectors as the ``imported`` source, atomically; returns its meta.

    ``limit`` keeps the first N words (word2vec files are sorted by frequency), for
    very large files such as full chiVe. ``token_field`` records which token field the
    keys are (chiVe: ``norm``; fastText cc.ja: ``surface``) so that queries and the
    classifiers look up the right form; coverage of the project's corpus is measured
    for that field. Queries are normalized with the project's split mode, recorded as ``split_mode``.
    """
    from pipeline.text.tokenize import tokenized_split_mode

    path = Path(path).expanduser()
    _check_import_options(path, file_format=file_format, token_field=token_field)
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
    meta = _swap_in(target, keyed_vectors=make_keyed_vectors(words, vectors), meta=meta)
    logger.info("imported %d vectors of %d dimensions into %s", meta["vocab_size"], meta["dim"], target)
    return meta
