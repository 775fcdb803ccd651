"""The token store: tokenized unlabelled corpora as token-id shards plus one vocabulary per field.

Layout of a store directory (``data/tokens/extra/``)::

    meta.json            format, fields, split mode, sources (lines, sentences, skipped lines), shards
    vocab.npz            per field: the tokens (UTF-8 bytes + offsets) and their counts, most frequent first
    shards/000000.npz    offsets (int64, sentences + 1), new_doc (uint8), one uint32 id array per field

A *sentence* is one non-empty line of a text corpus (one paragraph of Aozora) or one
non-empty line of a JSONL row's text; ``new_doc`` marks the first sentence of each
document (a text corpus's documents are separated by blank lines; a JSONL row is one).

Every file is written deterministically (``.npz`` entries carry a fixed date), so the same
input and settings give byte-identical stores whatever the number of workers or restarts.

This module imports numpy and the standard library only: training code on a GPU machine
streams from a store without spaCy or SudachiPy::

    from pipeline.text.token_store import TokenStore

    store = TokenStore.open("data/tokens/extra")
    for words in store.iter_sentences("norm"):       # list[str] per sentence
        ...
    for ids, offsets, new_doc in store.iter_shards("surface"):   # numpy arrays, for LM packing
        ...
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import InputError
from pipeline.io import atomic_path

STORE_FORMAT = 1
STORE_KIND = "jpipe token store"  # meta.json's "kind"
META_NAME = "meta.json"
VOCAB_NAME = "vocab.npz"
SHARDS_DIRNAME = "shards"
ID_DTYPE = np.uint32
# A fixed entry date: np.savez stamps the current time into the zip, which would change the bytes on every run.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------ npz I/O
def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` (loadable with ``np.load(allow_pickle=False)``), byte-deterministic.

    Written to a temporary name and renamed: a reader sees the old file or the whole new one.
    """
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (never unpickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def encode_strings(strings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 UTF-8 bytes, int64 offsets of len + 1): a list of strings without pickle or fixed-width padding."""
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def decode_strings(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = data.tobytes()
    bounds = offsets.tolist()
    return [raw[bounds[i] : bounds[i + 1]].decode("utf-8") for i in range(len(bounds) - 1)]


# ------------------------------------------------------------------ reader
class TokenStore:
    """Read access to a token store directory. ``TokenStore.open(path)``; nothing is loaded until asked."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self._vocab: dict[str, list[str]] = {}
        self._counts: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, path: str | os.PathLike) -> TokenStore:
        path = Path(path)
        with open(path / META_NAME, encoding="utf-8") as handle:
            meta = json.load(handle)
        if meta.get("format") != STORE_FORMAT or meta.get("kind") != STORE_KIND:
            raise InputError(
                "E265",
                f"{path} is not a token store this version reads ({meta.get('kind')!r} format {meta.get('format')}; "
                f"this version reads {STORE_KIND!r} format {STORE_FORMAT}).",
                hint="Rebuild it: delete the directory and run `jpipe run tokenize`.",
            )
        return cls(path, meta)

    @property
    def fields(self) -> list[str]:
        return list(self.meta["fields"])

    @property
    def sentences(self) -> int:
        return int(self.meta["sentences"])

    @property
    def tokens(self) -> int:
        return int(self.meta["tokens"])

    def __len__(self) -> int:
        return self.sentences

    def _check_field(self, field: str) -> None:
        if field not in self.meta["fields"]:
            raise KeyError(f"{self.path} has no field {field!r}; it has {', '.join(self.meta['fields']) or 'none'}")

    def _load_vocab(self) -> None:
        data = load_npz(self.path / VOCAB_NAME)
        for field in self.meta["fields"]:
            self._vocab[field] = decode_strings(data[f"{field}_bytes"], data[f"{field}_offsets"])
            self._counts[field] = data[f"{field}_counts"]

    def vocab(self, field: str) -> list[str]:
        """The tokens of ``field``: id ``i`` is ``vocab(field)[i]``, most frequent first."""
        self._check_field(field)
        if field not in self._vocab:
            self._load_vocab()
        return self._vocab[field]

    def counts(self, field: str) -> np.ndarray:
        """int64 occurrences of each id of ``field``."""
        self.vocab(field)
        return self._counts[field]

    def iter_shards(self, field: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ids uint32 of every token in the shard, offsets int64 [sentences + 1], new_doc uint8 [sentences]) per shard.

        Sentence ``i`` of a shard is ``ids[offsets[i]:offsets[i + 1]]``.
        """
        self._check_field(field)
        for shard in self.meta["shards"]:
            with np.load(self.path / shard["file"], allow_pickle=False) as data:
                yield data[field], data["offsets"], data["new_doc"]

    def iter_ids(self, field: str) -> Iterator[np.ndarray]:
        """One uint32 id array per sentence."""
        for ids, offsets, _ in self.iter_shards(field):
            bounds = offsets.tolist()
            for i in range(len(bounds) - 1):
                yield ids[bounds[i] : bounds[i + 1]]

    def iter_sentences(self, field: str = "norm") -> Iterator[list[str]]:
        """One list of tokens (strings) per sentence, streamed shard by shard."""
        words = np.array(self.vocab(field), dtype=object)
        for ids in self.iter_ids(field):
            yield words[ids].tolist()

    def iter_documents(self, field: str = "norm") -> Iterator[list[list[str]]]:
        """The sentences of each document (a work of Aozora, a JSONL row)."""
        words = np.array(self.vocab(field), dtype=object)
        document: list[list[str]] = []
        for ids, offsets, new_doc in self.iter_shards(field):
            bounds = offsets.tolist()
            for i in range(len(bounds) - 1):
                if new_doc[i] and document:
                    yield document
                    document = []
                document.append(words[ids[bounds[i] : bounds[i + 1]]].tolist())
        if document:
            yield document


def is_store(path: str | os.PathLike) -> bool:
    return (Path(path) / META_NAME).is_file()
