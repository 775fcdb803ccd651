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

BEAM_HELP = "Beam size of the decoder (1 = greedy)."


def _load(model_dir: Path | None, device: str):
    from pipeline.inference.extractor import Extractor, default_extractor_dir

    return Extractor.from_dir(model_dir or default_extractor_dir(state.project_dir), device=device)


def _records_of_file(extractor, *, path: str, options: dict, beam: int, output: Path | None) -> tuple[int, int]:
    """Write one JSON row per input row (``{id, text, records, error}``); returns (rows, rows with errors)."""
    from pipeline.data.readers import read_records
    from pipeline.inference.extractor import extract_records
    from pipeline.io import atomic_open

    rows = errors = 0

    def write(handle) -> None:
        nonlocal rows, errors
        for row in extract_records(read_records(path, **options), extractor=extractor, beam=beam):
            rows, errors = rows + 1, errors + (row["error"] is not None)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    if output is None:
        write(sys.stdout)
    else:
        with atomic_open(output) as handle:
            write(handle)
    return rows, errors


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
    text: Annotated[str | None, typer.Argument(help="A Japanese sentence (or several); omit it with --input.")] = None,
    input_path: Annotated[
        str | None, typer.Option("--input", "-i", help="File of texts: .txt / .csv / .tsv / .jsonl (optionally .gz), - for stdin.")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="JSONL output file for --input (default: stdout).")] = None,
    text_column: Annotated[str, typer.Option("--text-column", help="CSV/TSV column or JSONL field with the text.")] = "text",
    id_column: Annotated[str | None, typer.Option("--id-column", help="Column or field used as the row id.")] = None,
    input_format: Annotated[str | None, typer.Option("--input-format", help="txt, csv, tsv or jsonl (default: extension).")] = None,
    max_chars: Annotated[int, typer.Option("--max-chars", help="Longer rows get an 'over-long' error.", min=1)] = 10_000,
    beam: Annotated[int, typer.Option("--beam", help=BEAM_HELP, min=1, max=32)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per text).")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Also write the decoder's alignment heatmap (PNG and HTML).")] = False,
    html_dir: Annotated[Path | None, typer.Option("--html-dir", help="Where --explain writes (default models/report/explain/).")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Extractor directory (default models/extractor).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Extract opinions (評判): records {type, polarity, expression, target, expression_span}.

    Examples: jpipe extract "駅前のラーメン屋はスープが美味しかった。" --beam 5,
    jpipe extract --input reviews.csv --text-column review -o opinions.jsonl,
    jpipe extract "..." --explain (alignment heatmap).
    """
    if (text is None) == (input_path is None):
        fail("Give either a TEXT or --input FILE.", 'Example: jpipe extract "店は狭いが美味しい。"', code=2)
    extractor = _load(model_dir, device)
    if input_path is not None:
        options = dict(input_format=input_format, text_column=text_column, id_column=id_column, max_chars=max_chars)
        rows, errors = _records_of_file(extractor, path=input_path, options=options, beam=beam, output=output)
        console(stderr=True).print(f"extracted from {rows - errors} of {rows} rows; {errors} with errors", markup=False)
        if rows and errors == rows:
            fail("No row could be read.", "Check the input format and --text-column; each row's 'error' says why.")
        return
    from pipeline.data.readers import check_text

    if (problem := check_text(text, max_chars=max_chars)) is not None:
        fail(f"Cannot extract: {problem}.", "Give a non-empty sentence.")
    _print_records(text, extractor.extract_one(text, beam=beam), as_json=as_json)
    if explain:
        _explain(extractor, text, beam=beam, html_dir=html_dir)
