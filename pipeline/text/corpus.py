"""Readers for unlabelled corpora: ``.txt``, ``.txt.gz`` and ``.jsonl`` (``.jsonl.gz``), streamed line by line.

Formats (chosen by the file name):

- text (``.txt``, ``.gz``, anything not JSONL): one paragraph or sentence a line; a blank line
  ends a document (Aozora: one paragraph a line, a blank line after each work). A file without
  blank lines is one document, which only matters to models that read documents.
- JSONL (``.jsonl``, ``.jsonl.gz``): one document per row, its text in the ``text`` field
  (``tokenize.text_field``); the text's own lines are its sentences.

Files are read as bytes and decoded one line at a time: a line that is not valid UTF-8 (or, in
JSONL, not a JSON object with the text field) is skipped and counted, never fatal. A file that is
missing, empty, or not UTF-8 text at all (most lines of its first megabyte fail to decode) is a
coded ``InputError`` naming the file, raised before any work starts.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import InputError

# The sample that decides whether a file is UTF-8 text at all.
SNIFF_BYTES = 1 << 20
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class Record:
    """One physical line of a corpus: the sentences it holds (none for a blank or skipped line)."""

    line: int
    sentences: list[str] = field(default_factory=list)
    # The first of ``sentences`` starts a new document.
    new_doc: bool = False
    bad_utf8: bool = False
    bad_row: bool = False


def corpus_format(path: str | os.PathLike) -> str:
    """``"jsonl"`` for ``.jsonl`` / ``.jsonl.gz``, else ``"txt"``."""
    name = Path(path).name.lower()
    return "jsonl" if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")) else "txt"


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def open_binary(path: Path):
    """The file's bytes, gunzipped when it is gzip (by its magic number, whatever its name)."""
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def check_corpus(path: str | os.PathLike, *, text_field: str = "text") -> None:
    """Raise a coded ``InputError`` naming ``path`` when it is missing, empty or not UTF-8 text."""
    path = Path(path)
    hint = "Fix the path or the file, or remove it from tokenize.extra_corpora."
    if not path.exists():
        raise InputError("E260", f"Corpus file {path} does not exist.", hint=hint)
    if not path.is_file():
        raise InputError("E260", f"Corpus path {path} is not a file.", hint=hint)
    try:
        with open_binary(path) as handle:
            sample = handle.read(SNIFF_BYTES)
            more = bool(handle.read(1))
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError("E264", f"Corpus file {path} cannot be read: {exc}.", hint=hint) from None
    lines = [line for line in sample.split(b"\n") if line.strip()]
    if more and lines:
        lines = lines[:-1]  # the sample's last line may be cut in the middle of a character
    if not lines:
        if not more:
            raise InputError("E261", f"Corpus file {path} is empty (no non-blank line).", hint=hint)
        return
    bad = sum(1 for line in lines if not _decodes(line))
    if b"\x00" in sample and not sample.startswith(_UTF16_BOMS):
        # NUL bytes decode as UTF-8 but never occur in text: an image, an archive, a model file
        raise InputError(
            "E262",
            f"Corpus file {path} is binary, not UTF-8 text (it holds NUL bytes).",
            hint="Give a text file (.txt, .txt.gz or .jsonl), or remove it from tokenize.extra_corpora.",
        )
    if sample.startswith(_UTF16_BOMS) or bad > len(lines) / 2:
        raise InputError(
            "E262",
            f"Corpus file {path} is not UTF-8 text ({bad} of the first {len(lines)} lines do not decode).",
            hint="Convert it to UTF-8 (for example with iconv), or remove it from tokenize.extra_corpora.",
        )
    if corpus_format(path) == "jsonl" and not any(_row_text(line, text_field) is not None for line in lines):
        raise InputError(
            "E263",
            f"Corpus file {path}: no row of its first {len(lines)} is a JSON object with a string field '{text_field}'.",
            hint="Give each row the text field, or set tokenize.text_field to the field that holds the text.",
        )


def _decodes(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _row_text(line: bytes, text_field: str) -> str | None:
    try:
        row = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return None
    value = row.get(text_field) if isinstance(row, dict) else None
    return value if isinstance(value, str) else None


def iter_records(path: str | os.PathLike, *, text_field: str = "text") -> Iterator[Record]:
    """Every physical line of the corpus as a :class:`Record`, read one line at a time."""
    path = Path(path)
    jsonl = corpus_format(path) == "jsonl"
    pending_doc = True  # the next sentence starts a document
    try:
        with open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                record = Record(line=number)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    record.bad_utf8 = True
                    yield record
                    continue
                if jsonl:
                    value = _row_text(raw, text_field) if text.strip() else ""
                    if value is None:
                        record.bad_row = True
                    else:
                        record.sentences = [part.strip() for part in value.splitlines() if part.strip()]
                        record.new_doc = True
                else:
                    stripped = text.strip()
                    if stripped:
                        record.sentences, record.new_doc, pending_doc = [stripped], pending_doc, False
                    else:
                        pending_doc = True
                yield record
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(
            "E264", f"Corpus file {path} cannot be read to the end: {exc}.", hint="Check the file (a gzip file may be truncated)."
        ) from None
