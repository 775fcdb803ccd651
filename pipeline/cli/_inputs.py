"""The one input convention of every command that reads texts: classify, extract, explain and score.

- ``TEXT|FILE`` (positional): an existing file (or ``-``, standard input) is read as a file of
  texts; anything else is the text itself. An argument that looks like a file name (one of the
  known extensions, or a ``/``) but names no file is an error (E205), never a text to classify.
- ``--input/-i FILE``: always a file (``-`` = standard input).
- ``--text TEXT``: always the text itself, even one that looks like a file name.
- ``--text-column`` (CSV/TSV/parquet), ``--text-field`` (JSONL), ``--id-column``, ``--input-format``
  and ``--max-chars`` read the file as ``pipeline.data.readers.read_records`` does.

The option types below are declared once and used by every such command, so the flags and their
help read the same everywhere. Only typer, the standard library and light pipeline modules are
imported here (``jpipe --help`` loads no model library).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.errors import InputError

if TYPE_CHECKING:
    from pipeline.data.readers import InputRecord

STDIN = "-"
# A positional argument ending so (or holding a path separator) is taken for a file name.
PATH_SUFFIXES = (".txt", ".text", ".csv", ".tsv", ".jsonl", ".json", ".gz", ".parquet")
MAX_PATH_CHARS = 4096

TextOrFileArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="TEXT|FILE",
        help="The text itself, or a file of texts (an existing file: .txt one per line, .csv / .tsv, .jsonl, optionally .gz, "
        ".parquet), or - for stdin. A name that looks like a file (.txt, .csv, ..., or with a /) but does not exist is an error: "
        "give such a text with --text.",
        show_default=False,
    ),
]
InputFileOption = Annotated[
    str | None,
    typer.Option("--input", "-i", metavar="FILE", help="A file of texts (never read as a text itself); - for stdin.", show_default=False),
]
TextOption = Annotated[
    str | None, typer.Option("--text", metavar="TEXT", help="The text itself, even one that looks like a file name.", show_default=False)
]
TextColumnOption = Annotated[
    str | None,
    typer.Option(
        "--text-column",
        metavar="NAME",
        help="CSV/TSV/parquet column holding the text (default: text); also the JSONL field when --text-field is not given.",
        show_default=False,
    ),
]
TextFieldOption = Annotated[
    str | None,
    typer.Option(
        "--text-field",
        metavar="NAME",
        help="JSONL field holding the text (default: text); also the CSV/TSV column when --text-column is not given.",
        show_default=False,
    ),
]
IdColumnOption = Annotated[
    str | None,
    typer.Option(
        "--id-column",
        metavar="NAME",
        help="CSV/TSV/parquet column or JSONL field used as the row id (default: the row / line number, from 1).",
        show_default=False,
    ),
]
InputFormatOption = Annotated[
    str | None,
    typer.Option(
        "--input-format",
        metavar="FORMAT",
        help="txt, csv, tsv, jsonl or parquet (default: from the file's extension; stdin: txt).",
        show_default=False,
    ),
]
MaxCharsOption = Annotated[
    int,
    typer.Option("--max-chars", help="Texts longer than this many characters are not processed: they get an 'over-long' error.", min=1),
]


@dataclass(frozen=True)
class ReadOptions:
    """How the rows of a file are read (the column options); a single text ignores them but ``max_chars``."""

    input_format: str | None = None
    text_column: str | None = None
    text_field: str | None = None
    id_column: str | None = None
    max_chars: int = 10_000

    def column_for(self, kind: str) -> str:
        """The column (CSV/TSV/parquet) or field (JSONL) that holds the text, for a file of format ``kind``."""
        first, second = (self.text_field, self.text_column) if kind == "jsonl" else (self.text_column, self.text_field)
        return first or second or "text"


@dataclass(frozen=True)
class TextInput:
    """Where a command's texts come from: one text (``text``) or a file of texts (``path``; ``-`` = stdin)."""

    text: str | None = None
    path: str | None = None

    @property
    def is_file(self) -> bool:
        return self.path is not None

    def format(self, options: ReadOptions) -> str:
        """The input format of the file (txt, csv, tsv, jsonl or parquet); E207 when it cannot be told."""
        from pipeline.data.readers import detect_input_format

        return detect_input_format(self.path or STDIN, input_format=options.input_format)

    def records(self, options: ReadOptions) -> Iterator[InputRecord]:
        """The rows: the file's (per-row problems in ``InputRecord.error``), or the one text as row ``1``."""
        from pipeline.data.readers import InputRecord, check_text, read_records

        if self.path is None:
            text = self.text or ""
            return iter([InputRecord(id="1", text=text, error=check_text(text, max_chars=options.max_chars), line=1)])
        kind = self.format(options)
        return read_records(
            self.path, input_format=kind, text_column=options.column_for(kind), id_column=options.id_column, max_chars=options.max_chars
        )


def looks_like_path(value: str) -> bool:
    """True for a one-line argument that ends in a known input extension or holds a path separator."""
    if not value or len(value) > MAX_PATH_CHARS or "\n" in value or "\r" in value:
        return False
    separators = {"/", os.sep, os.altsep} - {None}
    if any(separator in value for separator in separators):
        return True
    return any(value.lower().endswith(suffix) for suffix in PATH_SUFFIXES)


def classify_argument(value: str) -> TextInput:
    """A positional TEXT|FILE: ``-`` and existing files are files; a missing file-like name is E205; else a text."""
    if value == STDIN:
        return TextInput(path=STDIN)
    try:
        path = Path(value)
        exists, is_dir = path.is_file(), path.is_dir()
    except (OSError, ValueError):  # a text too long for a file name, or with a NUL byte
        exists = is_dir = False
    if exists:
        return TextInput(path=value)
    if is_dir:
        raise InputError("E205", f"{value} is a directory, not a file of texts.", hint="Give a .txt, .csv, .tsv, .jsonl or .parquet file.")
    if looks_like_path(value):
        raise InputError(
            "E205",
            f"Input file {value} does not exist (it looks like a file name, so it is not taken as a text).",
            hint="Check the path; a text that looks like a file name has to be marked as a text.",
        )
    return TextInput(text=value)


def resolve_input(*, argument: str | None, input_path: str | None, text: str | None, example: str) -> TextInput:
    """The one source of a command's texts: exactly one of TEXT|FILE, ``--input FILE`` and ``--text TEXT``.

    None or more than one is a usage error (exit 2) that shows ``example``."""
    from pipeline.cli._app import fail

    given = [name for name, value in (("TEXT|FILE", argument), ("--input", input_path), ("--text", text)) if value is not None]
    if len(given) != 1:
        problem = "No input given" if not given else f"Give one input, not {' and '.join(given)}"
        fail(f"{problem}: a TEXT or FILE argument, --input FILE or --text TEXT.", f"Example: {example}", code=2)
    if input_path is not None:
        return TextInput(path=input_path)
    if text is not None:
        return TextInput(text=text)
    return classify_argument(argument)
