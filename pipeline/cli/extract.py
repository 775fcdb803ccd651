"""Command: extract (opinion records from a text or a file, optionally with the decoder's alignment heatmap).

Only typer, the standard library and light pipeline modules are imported here;
torch and the tokenizer load inside the command body.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import app, console, fail, state
from pipeline.cli._inputs import (
    IdColumnOption,
    InputFileOption,
    InputFormatOption,
    MaxCharsOption,
    ReadOptions,
    TextColumnOption,
    TextFieldOption,
    TextOption,
    TextOrFileArgument,
    resolve_input,
)

BEAM_HELP = "Beam size of the decoder (1 = greedy)."
WORKERS_HELP = (
    "A file of texts: worker processes that decode chunks of rows, one torch thread each (default: the usable cores on the CPU, "
    "1 on a GPU; 1 = this process only). An input of one chunk (32 rows) or less runs in this process."
)


def _extract_file(records, *, model_dir: Path | None, device: str, beam: int, output: Path | None, workers: int | None) -> tuple[int, int]:
    """The rows of a file, in this process (``--workers 1``) or in worker processes; returns (rows, rows with errors)."""
    from pipeline.inference.workers import default_workers

    workers = workers or default_workers(device)
    if workers > 1:
        return _records_in_workers(records=records, model_dir=model_dir, device=device, beam=beam, output=output, workers=workers)
    return _records_of_file(_load(model_dir, device), records=records, beam=beam, output=output)


def _load(model_dir: Path | None, device: str):
    from pipeline.inference.extractor import Extractor, default_extractor_dir

    return Extractor.from_dir(model_dir or default_extractor_dir(state.project_dir), device=device)


def _records_of_file(extractor, *, records, beam: int, output: Path | None) -> tuple[int, int]:
    """Write one JSON row per input row (``{id, text, records, error}``); returns (rows, rows with errors)."""
    from pipeline.inference.extractor import extract_records
    from pipeline.io import atomic_open

    rows = errors = 0

    def write(handle) -> None:
        nonlocal rows, errors
        for row in extract_records(records, extractor=extractor, beam=beam):
            rows, errors = rows + 1, errors + (row["error"] is not None)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    if output is None:
        write(sys.stdout)
    else:
        with atomic_open(output) as handle:
            write(handle)
    return rows, errors


def _records_in_workers(*, records, model_dir: Path | None, device: str, beam: int, output: Path | None, workers: int) -> tuple[int, int]:
    """``_records_of_file`` with ``workers`` processes (``pipeline.inference.extract_workers``); the same rows, in order."""
    from pipeline.inference.extract_workers import ExtractorSpec, run_parallel_extraction
    from pipeline.inference.extractor import default_extractor_dir
    from pipeline.io import atomic_open
    from pipeline.models.model_dir import require_model_dir

    directory = require_model_dir(
        model_dir or default_extractor_dir(state.project_dir), train_hint="Train it with `jpipe run train_extractor`."
    )
    spec = ExtractorSpec(model_dir=str(Path(directory).resolve()), device=device, beam=beam)
    options = dict(records=records, spec=spec, workers=workers, load_local=lambda: _load(model_dir, device))
    if output is None:
        return run_parallel_extraction(handle=sys.stdout, **options)
    with atomic_open(output) as handle:
        return run_parallel_extraction(handle=handle, **options)


def _print_records(text: str, records: list[dict], *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"text": text, "records": records}, ensure_ascii=False))
        return
    out = console()
    out.print(text, markup=False, highlight=False)
    if not records:
        out.print("  (no opinion)")
    for r in records:
        span = f"[{r['expression_span'][0]}:{r['expression_span'][1]}]" if r["expression_span"] else "[-]"
        out.print(f"  {r['type']} ({r['polarity'] or '·'})  {r['expression']} {span}  <- target: {r['target'] or '-'}", markup=False)


def _explain(extractor, text: str, *, beam: int, html_dir: Path | None) -> None:
    from pipeline.inference.explain import write_alignment
    from pipeline.paths import REPORT_DIR

    explanation = extractor.explain(text, beam=beam)
    paths = write_alignment(explanation, directory=html_dir or state.project_dir / REPORT_DIR / "explain")
    console(stderr=True).print(f"alignment heatmap: {paths['png']} and {paths['html']}", markup=False, highlight=False)


@app.command()
def extract(
    argument: TextOrFileArgument = None,
    input_path: InputFileOption = None,
    text: TextOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL output file for a file of texts (default: stdout).")] = None,
    text_column: TextColumnOption = None,
    text_field: TextFieldOption = None,
    id_column: IdColumnOption = None,
    input_format: InputFormatOption = None,
    max_chars: MaxCharsOption = 10_000,
    beam: Annotated[int, typer.Option("--beam", help=BEAM_HELP, min=1, max=32)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per text; a file always gives JSONL).")] = False,
    explain: Annotated[
        bool, typer.Option("--explain", help="Also write the decoder's alignment heatmap (PNG and HTML) of one text.")
    ] = False,
    html_dir: Annotated[Path | None, typer.Option("--html-dir", help="Where --explain writes (default models/report/explain/).")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Extractor directory (default models/extractor).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
    workers: Annotated[int | None, typer.Option("--workers", help=WORKERS_HELP, min=1, show_default=False)] = None,
) -> None:
    """Extract opinions (評判): records {type, polarity, expression, target, expression_span}.

    The input is one text (TEXT or --text), or a file of texts (FILE, --input FILE, or - for
    stdin; see docs/input.md): a file gives one JSON row {id, text, records, error} per input row.

    Examples: jpipe extract "駅前のラーメン屋はスープが美味しかった。" --beam 5,
    jpipe extract reviews.csv --text-column review -o opinions.jsonl,
    jpipe extract "..." --explain (alignment heatmap).
    """
    where = resolve_input(argument=argument, input_path=input_path, text=text, example='jpipe extract "店は狭いが美味しい。"')
    read = ReadOptions(input_format=input_format, text_column=text_column, text_field=text_field, id_column=id_column, max_chars=max_chars)
    if where.is_file and explain:
        fail("--explain draws the heatmap of one text, not of a file.", 'Give the text itself: jpipe extract "..." --explain', code=2)
    records = where.records(read)  # a missing file, column or unknown format fails here, before the model loads
    if where.is_file:
        rows, errors = _extract_file(records, model_dir=model_dir, device=device, beam=beam, output=output, workers=workers)
        console(stderr=True).print(f"extracted from {rows - errors} of {rows} rows; {errors} with errors", markup=False)
        if rows and errors == rows:
            fail("No row could be read.", "Check the input format and --text-column / --text-field; each row's 'error' says why.")
        return
    extractor = _load(model_dir, device)
    (record,) = records
    if record.error is not None:
        fail(f"Cannot extract: {record.error}.", "Give a non-empty sentence.")
    _print_records(record.text, extractor.extract_one(record.text, beam=beam), as_json=as_json)
    if explain:
        _explain(extractor, record.text, beam=beam, html_dir=html_dir)
