"""Readers for user input files: one review per row, streamed lazily.

Formats: ``txt`` (one review per line), ``csv`` / ``tsv`` (a header row; the review is
in a named column), ``jsonl`` (one JSON object per line; the review is in a named
field), each optionally gzip-compressed, or ``-`` for standard input; and ``parquet``
(a string column; needs pyarrow, which the ``ray`` extra brings).

``read_line_range`` reads the txt/JSONL lines of one byte range of a file, numbered as
``read_records`` numbers them: the Ray engine reads a big file in parallel that way.

Problems of a single row (empty or whitespace-only text, bytes that are not UTF-8,
text longer than ``max_chars``, a missing column or field, a bad JSON line) become
``InputRecord.error`` so a batch can go on; problems of the whole input (missing
file, no such column in the header) raise ``InputError`` before any row is read.
Standard library only (pyarrow for parquet, imported when one is read).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline.errors import ConfigError, InputError

INPUT_FORMATS = ("txt", "csv", "tsv", "jsonl", "parquet")
PARQUET_BATCH_ROWS = 4096  # rows decoded at a time from a parquet file
DEFAULT_MAX_CHARS = 10_000


@dataclass
class InputRecord:
    """One input row: its id, its text (None when unreadable) and why it cannot be classified."""

    id: str
    text: str | None
    error: str | None = None
    # The ``extra_columns`` asked of ``read_records`` (None when the row lacks one), e.g. a label.
    fields: dict[str, str | None] | None = None
    line: int = 0  # the row (CSV/TSV, after the header) or line (txt, JSONL) number


def detect_input_format(path: str, *, input_format: str | None = None) -> str:
    """``input_format`` when given, else the format named by ``path``'s extension (``-`` = stdin: txt)."""
    if input_format:
        if input_format not in INPUT_FORMATS:
            raise InputError("E207", f"Unknown input format '{input_format}'.", hint=f"Valid formats: {', '.join(INPUT_FORMATS)}.")
        return input_format
    if path == "-":
        return "txt"
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1].lstrip(".") if suffixes else ""
    if suffix in INPUT_FORMATS:
        return suffix
    if suffix in ("text", ""):
        return "txt"
    if suffix == "json":
        return "jsonl"
    raise InputError(
        "E207",
        f"Cannot tell the format of {path} from its extension.",
        hint=f"Use a .txt, .csv, .tsv, .jsonl (optionally .gz) or .parquet file, or name the input format ({', '.join(INPUT_FORMATS)}).",
    )


def check_text(text: str, *, max_chars: float = DEFAULT_MAX_CHARS) -> str | None:
    """Why ``text`` cannot be classified (empty, whitespace-only, over-long), or None."""
    if not text:
        return "empty text"
    if text.isspace():
        return "whitespace-only text"
    if len(text) > max_chars:
        return f"over-long text: {len(text)} characters (limit {max_chars})"
    return None


def read_records(
    path: str,
    *,
    input_format: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    extra_columns: tuple[str, ...] = (),
) -> Iterator[InputRecord]:
    """Stream ``InputRecord``s from ``path`` (``-`` = stdin).

    ``text_column`` is the CSV/TSV column or the JSONL field holding the review;
    ``id_column`` the one holding the row id (default: the row or line number);
    ``extra_columns`` (CSV/TSV/JSONL) are returned in ``InputRecord.fields``, and a CSV/TSV
    header without one of them is an error (E235) like a missing text column.
    """
    kind = detect_input_format(path, input_format=input_format)
    if kind == "parquet":
        return read_parquet_records(path, text_column=text_column, id_column=id_column, max_chars=max_chars, extra_columns=extra_columns)
    handle = _open_binary(path)
    try:
        if kind == "txt":
            rows = _read_txt(handle, max_chars)
        elif kind == "jsonl":
            rows = _read_jsonl(handle, text_column, id_column, max_chars, extra_columns)
        else:
            columns = (text_column, id_column, extra_columns)
            rows = _read_delimited(handle, "," if kind == "csv" else "\t", columns, max_chars, path)
    except BaseException:
        _close(handle)
        raise
    return _closing(rows, handle)


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    if not Path(path).is_file():
        raise InputError(
            "E205", f"Input file {path} does not exist.", hint="Give a .txt, .csv, .tsv or .jsonl file, or - for standard input."
        )
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _close(handle: IO[bytes]) -> None:
    if handle is not sys.stdin.buffer:
        handle.close()


def _closing(rows: Iterator[InputRecord], handle: IO[bytes]) -> Iterator[InputRecord]:
    try:
        yield from rows
    finally:
        _close(handle)


def _decode_line(raw: bytes, line_number: int) -> tuple[str, str | None]:
    """UTF-8 decode one line; on failure the replacement-decoded text and an error message."""
    raw = raw.rstrip(b"\r\n")
    if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # byte-order mark written by some editors
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", errors="replace"), f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"


def _read_txt(handle: IO[bytes], max_chars: int) -> Iterator[InputRecord]:
    for line_number, raw in enumerate(handle, start=1):
        text, error = _decode_line(raw, line_number)
        yield InputRecord(id=str(line_number), text=text, error=error or check_text(text, max_chars=max_chars), line=line_number)


def _read_jsonl(
    handle: IO[bytes], text_field: str, id_field: str | None, max_chars: int, extra: tuple[str, ...] = ()
) -> Iterator[InputRecord]:
    for line_number, raw in enumerate(handle, start=1):
        yield _jsonl_record(raw, line_number, text_field, id_field, max_chars, extra)


def _jsonl_record(
    raw: bytes, line_number: int, text_field: str, id_field: str | None, max_chars: int, extra: tuple[str, ...] = ()
) -> InputRecord:
    """One JSONL line -> record; every problem of the line becomes the record's error."""
    record = InputRecord(id=str(line_number), text=None, line=line_number, fields={key: None for key in extra} if extra else None)
    line, record.error = _decode_line(raw, line_number)
    if record.error:
        return record
    if not line.strip():
        record.error = "empty line"
        return record
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        record.error = f"invalid JSON ({exc.msg} at column {exc.colno})"
        return record
    if not isinstance(data, dict):
        record.error = "JSON line is not an object"
        return record
    if id_field and data.get(id_field) is not None:
        record.id = str(data[id_field])
    if extra:
        record.fields = {key: None if data.get(key) is None else str(data[key]) for key in extra}
    text = data.get(text_field)
    if text_field not in data:
        record.error = f"missing field '{text_field}'"
    elif not isinstance(text, str):
        record.error = f"field '{text_field}' is not a string"
    else:
        record.text, record.error = text, check_text(text, max_chars=max_chars)
    return record


def _read_delimited(
    handle: IO[bytes], delimiter: str, columns: tuple[str, str | None, tuple[str, ...]], max_chars: int, path: str
) -> Iterator[InputRecord]:
    """Reads the header now (so a wrong column name fails at once), returns a row generator.

    ``columns``: the text column, the id column (or None) and the extra columns.
    """
    text_column, id_column, extra = columns
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row is
    # reported on that row instead of stopping the whole file.
    stream = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    # A huge field must reach the over-long check, not crash the csv module.
    csv.field_size_limit(max(csv.field_size_limit(), 64 * max_chars + 1_000_000))
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        header = [_clean(h).strip() for h in next(reader)]
    except StopIteration:
        return iter(())
    found = ", ".join(repr(h) for h in header[:20])
    for wanted in (text_column, id_column, *extra):
        if wanted and wanted not in header:
            raise InputError("E235", f"{path} has no column '{wanted}'.", hint=f"Its columns are: {found}.")
    text_index = header.index(text_column)
    id_index = header.index(id_column) if id_column else None
    extra_index = {key: header.index(key) for key in extra}
    pairs = _delimited_pairs(reader, text_column, text_index, id_index, max_chars, "CSV" if delimiter == "," else "TSV")
    return _with_fields(pairs, extra_index)


def _with_fields(pairs: Iterator[tuple[InputRecord, list[str]]], extra_index: dict[str, int]) -> Iterator[InputRecord]:
    """Each record, with the extra columns of its CSV/TSV row attached (when any were asked for)."""
    for record, row in pairs:
        if extra_index:
            record.fields = {key: _clean(row[i]) if i < len(row) else None for key, i in extra_index.items()}
        yield record


def _delimited_pairs(
    reader, text_column: str, text_index: int, id_index: int | None, max_chars: int, kind: str
) -> Iterator[tuple[InputRecord, list[str]]]:
    row_number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row_number += 1
            yield InputRecord(id=str(row_number), text=None, error=f"malformed {kind} row ({exc})", line=row_number), []
            continue
        row_number += 1
        record_id = str(row_number)
        if id_index is not None and id_index < len(row) and row[id_index]:
            record_id = _clean(row[id_index])
        if text_index >= len(row):
            yield (
                InputRecord(id=record_id, text=None, error=f"missing column '{text_column}' (row has {len(row)} fields)", line=row_number),
                row,
            )
            continue
        text = row[text_index]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            yield InputRecord(id=record_id, text=_clean(text), error="not valid UTF-8", line=row_number), row
            continue
        yield InputRecord(id=record_id, text=text, error=check_text(text, max_chars=max_chars), line=row_number), row


def _clean(text: str) -> str:
    """Replace lone surrogates (undecodable bytes) by U+FFFD so the text can be written out."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


# ---------------------------------------------------------------- byte ranges (parallel readers)
def read_line_range(
    path: str,
    *,
    input_format: str,
    start: int,
    end: int,
    first_line: int,
    text_column: str = "text",
    id_column: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Iterator[InputRecord]:
    """The txt/JSONL records of the lines that start in bytes [``start``, ``end``) of an uncompressed
    file; ``start`` is a line start and that line is number ``first_line`` (as ``read_records`` counts)."""
    if input_format not in ("txt", "jsonl"):
        raise InputError("E207", f"Byte ranges are read from txt or jsonl files, not {input_format}.", hint="Read the file whole.")
    with open(path, "rb") as handle:
        handle.seek(start)
        position, line_number = start, first_line
        while position < end:
            raw = handle.readline()
            if not raw:
                return
            position += len(raw)
            if input_format == "jsonl":
                yield _jsonl_record(raw, line_number, text_column, id_column, max_chars)
            else:
                text, error = _decode_line(raw, line_number)
                yield InputRecord(id=str(line_number), text=text, error=error or check_text(text, max_chars=max_chars), line=line_number)
            line_number += 1


def line_ranges(path: str, parts: int, *, chunk: int = 1 << 22) -> list[tuple[int, int, int]]:
    """``(start, end, first_line)`` of up to ``parts`` byte ranges of about equal size, cut at line starts.

    One sequential pass that counts newlines (constant memory), so each range knows its first line number."""
    size = Path(path).stat().st_size
    wanted = [size * k // max(1, parts) for k in range(1, max(1, parts))]  # cut after the newline at or after these
    cuts: list[tuple[int, int]] = [(0, 1)]  # (byte offset of a line start, its line number)
    offset, lines = 0, 0
    with open(path, "rb") as handle:
        while wanted and (block := handle.read(chunk)):
            searched = 0
            while wanted:
                at = block.find(b"\n", max(searched, wanted[0] - offset))
                if at < 0:
                    break
                lines_before = lines + block.count(b"\n", 0, at)
                if offset + at + 1 < size and offset + at + 1 > cuts[-1][0]:
                    cuts.append((offset + at + 1, lines_before + 2))
                searched = at + 1
                while wanted and wanted[0] <= offset + at:
                    wanted.pop(0)
            lines += block.count(b"\n")
            offset += len(block)
    return [(start, next_start, line) for (start, line), (next_start, _) in zip(cuts, [*cuts[1:], (size, 0)], strict=True)]


# ---------------------------------------------------------------- parquet
def parquet_row_groups(path: str) -> list[tuple[int, int]]:
    """``(row_group, first_row)`` of every row group of a parquet file (rows numbered from 1)."""
    parquet = _pyarrow_parquet()
    metadata = parquet.ParquetFile(path).metadata
    groups, first = [], 1
    for index in range(metadata.num_row_groups):
        groups.append((index, first))
        first += metadata.row_group(index).num_rows
    return groups


def read_parquet_records(
    path: str,
    *,
    text_column: str = "text",
    id_column: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    extra_columns: tuple[str, ...] = (),
    row_groups: tuple[int, int] | None = None,
) -> Iterator[InputRecord]:
    """Stream the records of a parquet file (or of one row group: ``(index, first_row)``), rows numbered from 1.

    A missing column is an error of the whole input (E235); a null or non-string text, an error of its row."""
    parquet = _pyarrow_parquet()
    if not Path(path).is_file():
        raise InputError("E205", f"Input file {path} does not exist.", hint="Give an existing .parquet file.")
    handle = parquet.ParquetFile(path)
    names = handle.schema_arrow.names
    for wanted in (text_column, id_column, *extra_columns):
        if wanted and wanted not in names:
            raise InputError("E235", f"{path} has no column '{wanted}'.", hint=f"Its columns are: {', '.join(map(repr, names[:20]))}.")
    columns = list(dict.fromkeys(c for c in (text_column, id_column, *extra_columns) if c))
    groups = None if row_groups is None else [row_groups[0]]
    first = 1 if row_groups is None else row_groups[1]
    return _parquet_rows(
        handle.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns, row_groups=groups),
        first,
        (text_column, id_column, extra_columns),
        max_chars,
    )


def _parquet_rows(batches, first: int, columns: tuple[str, str | None, tuple[str, ...]], max_chars: int) -> Iterator[InputRecord]:
    text_column, id_column, extra = columns
    row_number = first - 1
    for batch in batches:
        data = batch.to_pydict()
        for index, text in enumerate(data[text_column]):
            row_number += 1
            record_id = data[id_column][index] if id_column else None
            record = InputRecord(id=str(row_number if record_id is None else record_id), text=None, line=row_number)
            if extra:
                record.fields = {key: None if data[key][index] is None else str(data[key][index]) for key in extra}
            if text is None:
                record.error = f"missing value in column '{text_column}'"
            elif not isinstance(text, str):
                record.error = f"column '{text_column}' is not a string"
            else:
                record.text, record.error = text, check_text(text, max_chars=max_chars)
            yield record


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as parquet
    except ImportError as exc:
        raise ConfigError(
            "E110", "Reading parquet needs the pyarrow package.", hint="Install it: pip install 'jpipe[ray]' (or pyarrow)."
        ) from exc
    return parquet
