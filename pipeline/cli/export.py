"""``jpipe export spacy OUT_DIR``: a spaCy pipeline directory with the trained classifiers inside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import app, console, reported, state

export_app = typer.Typer(help="Export trained models for use outside jpipe.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("spacy")
def export_spacy(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write (replaced if it exists); open it with spacy.load(OUT_DIR).")],
    task: Annotated[str, typer.Option("--task", help="Comma-separated tasks (default: every trained task).")] = "",
    base: Annotated[str, typer.Option("--base", help="spaCy pipeline the component is added to.")] = "ja_ginza",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Write BASE (ja_ginza) + the jpipe_classifier component, with the task models copied inside.

    doc.cats then holds "<task>/<label>" probabilities, e.g. doc.cats["sentiment/positive"].
    """
    from pipeline.inference.spacy_component import export_pipeline
    from pipeline.paths import CLASSIFIERS_DIR

    tasks = [t.strip() for t in task.split(",") if t.strip()] or None
    with reported():
        result = export_pipeline(model_path=state.project_dir / CLASSIFIERS_DIR, out_dir=out_dir, base=base, tasks=tasks)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    console().print(f"wrote {result['path']}: {' + '.join(result['pipe_names'])}", markup=False)
    console().print(f"doc.cats keys: {', '.join(result['labels'])}", markup=False)
