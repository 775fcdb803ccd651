"""Command: analyze (a batch of reviews -> DIR/analysis.json and a self-contained DIR/index.html).

Only typer, the standard library and light pipeline modules are imported here;
torch and the tokenizer load inside the command body.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import app, console, fail, state
from pipeline.cli._inputs import (
    IdColumnOption,
    InputFormatOption,
    MaxCharsOption,
    ReadOptions,
    TextColumnOption,
    TextFieldOption,
    classify_argument,
)

WORKERS_HELP = (
    "Worker processes that tokenize, classify and extract chunks of rows, one torch thread each (default: the usable cores on "
    "the CPU, 1 on a GPU; 1 = this process only). An input of one batch or less runs in this process."
)
NO_EXTRACTOR_NOTE = "No opinions: the project has no trained extractor (models/extractor); train one with `jpipe run train_extractor`."


def _records(path: str, read: ReadOptions, date_column: str | None):
    """The rows of the file (the date column as an extra field); E235 for a missing column, E205 for a missing file."""
    from pipeline.data.readers import read_records
    from pipeline.evaluation.analysis import check_jsonl_field

    source = classify_argument(path)
    if not source.is_file:
        fail(f"{path} is not a file of reviews.", "Give a .txt, .csv, .tsv or .jsonl file (or - for stdin).", code=2)
    kind = source.format(read)
    if kind == "jsonl":
        check_jsonl_field(path, field_name=read.column_for(kind))
    extra = (date_column,) if date_column else ()
    return read_records(
        path, input_format=kind, text_column=read.column_for(kind), id_column=read.id_column, max_chars=read.max_chars, extra_columns=extra
    )


def _extractor_dir(enabled: bool) -> tuple[Path | None, str | None]:
    """(the project's extractor directory, None) or (None, why there is none)."""
    if not enabled:
        return None, "No opinions: extraction was turned off (--no-extract)."
    from pipeline.inference.extractor import default_extractor_dir

    directory = default_extractor_dir(state.project_dir)
    if not (directory / "config.json").exists():
        return None, NO_EXTRACTOR_NOTE
    return directory, None


def _engine(*, tasks: str, extract: bool, device: str, batch_size: int, threads: int, workers: int | None):
    """The ``Engine`` (``pipeline.evaluation.analysis``): models loaded here, or the spec the worker processes load; and the
    extractor note."""
    from pipeline.cli.classify import _parse_tasks, _set_inference_threads
    from pipeline.evaluation.analysis import Engine
    from pipeline.evaluation.analysis_workers import AnalysisModels
    from pipeline.inference.batch import TaskClassifiers, task_model_dirs
    from pipeline.inference.workers import default_workers

    chosen = _parse_tasks(tasks)
    extractor_dir, note = _extractor_dir(extract)

    def load():
        from pipeline.inference.extractor import Extractor

        _set_inference_threads(threads)
        classifiers = TaskClassifiers.from_project(state.project_dir, tasks=chosen, device=device, batch_size=batch_size)
        return classifiers, Extractor.from_dir(extractor_dir, device=device) if extractor_dir else None

    directories = {task: str(path.resolve()) for task, path in task_model_dirs(state.project_dir, tasks=chosen).items()}
    spec = AnalysisModels(
        model_dirs=directories, extractor_dir=str(extractor_dir) if extractor_dir else None, device=device, batch_size=batch_size
    )
    return Engine(load=load, spec=spec, workers=workers or default_workers(device), batch_size=batch_size), note


# long: one Typer option per parameter (the signature is the --help text); the body is a few calls
@app.command()
def analyze(
    reviews: Annotated[
        str,
        typer.Argument(
            metavar="REVIEWS", help="A file of reviews: .txt (one per line), .csv, .tsv or .jsonl (optionally .gz), or - for stdin."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for analysis.json and index.html (created if needed).")],
    text_column: TextColumnOption = None,
    text_field: TextFieldOption = None,
    id_column: IdColumnOption = None,
    date_column: Annotated[
        str | None,
        typer.Option(
            "--date-column",
            metavar="NAME",
            help="CSV/TSV column or JSONL field with the review's date: label shares per week or month.",
            show_default=False,
        ),
    ] = None,
    input_format: InputFormatOption = None,
    max_chars: MaxCharsOption = 10_000,
    task: Annotated[str, typer.Option("--task", help="Comma-separated tasks (default: every trained task).")] = "",
    extract: Annotated[
        bool, typer.Option("--extract/--no-extract", help="Extract opinions when the project has a trained extractor.")
    ] = True,
    top: Annotated[int, typer.Option("--top", help="Opinion targets and expressions listed.", min=1)] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Reviews per batch.", min=1)] = 256,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")] = "cpu",
    threads: Annotated[
        int, typer.Option("--threads", help="Torch threads (0 = all cores but one, which reads and tokenizes the next batch).", min=0)
    ] = 0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr (shown only on a terminal).")] = True,
    workers: Annotated[int | None, typer.Option("--workers", help=WORKERS_HELP, min=1, show_default=False)] = None,
) -> None:
    """Analyze a batch of reviews: label counts per task, top opinion targets and expressions with example sentences,
    the least confident reviews, attention highlights and (with --date-column) label shares per week or month.

    Writes OUTPUT/analysis.json and OUTPUT/index.html (one self-contained page: no network needed). Rows that
    cannot be read or classified are counted, as in `jpipe classify`; a date that does not parse keeps its row,
    out of the timeline. Example: `jpipe analyze reviews.csv --text-column review --date-column date -o report/`.
    """
    from pipeline.evaluation.analysis import AnalysisSettings, run_analysis

    read = ReadOptions(input_format=input_format, text_column=text_column, text_field=text_field, id_column=id_column, max_chars=max_chars)
    records = _records(reviews, read, date_column)
    engine, note = _engine(tasks=task, extract=extract, device=device, batch_size=batch_size, threads=threads, workers=workers)
    data = run_analysis(
        records=records, engine=engine, output_dir=output, source=reviews, date_column=date_column,
        extractor_note=note, settings=AnalysisSettings(top=top), progress=progress and sys.stderr.isatty(),
    )  # fmt: skip
    _report(data, output)


def _report(data: dict, output: Path) -> None:
    message = f"analyzed {data['analyzed']} of {data['rows']} rows in {data['seconds']:.1f} s ({data['reviews_per_second']} reviews/s)"
    if data["errors"]:
        message += f"; {data['errors']} failed, e.g. " + "; ".join(data["error_examples"][:3])
    opinions = data["opinions"]
    message += f"; {opinions['records']} opinions" if opinions["extracted"] else f"; {opinions['note'].rstrip('.')}"
    timeline = data.get("timeline")
    if timeline:
        message += f"; timeline per {timeline['unit']}: {timeline['dated']} dated, {timeline['bad_dates']} bad dates"
    console(stderr=True).print(f"{message} -> {output / 'index.html'}", markup=False, highlight=False, soft_wrap=True)
    if data["analyzed"] == 0:
        fail(f"No row could be analyzed ({data['rows']} rows read).", "Check --text-column / --text-field; the report lists the failures.")
