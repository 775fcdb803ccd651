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


def _with_ensemble_members(directories: dict[str, Path]) -> dict[str, Path]:
    """``directories`` plus the members of each seed ensemble (``ensemble.json``), as ``<task>/seeds/<seed>``:
    the ONNX backend runs every member."""
    from pipeline.models.calibration import read_ensemble

    result = {}
    for name, directory in directories.items():
        result[name] = directory
        spec = read_ensemble(directory)
        for member, member_dir in zip(spec["members"], spec["member_dirs"], strict=True) if spec else ():
            result[f"{name}/{member}"] = member_dir
    return result


@export_app.command("onnx")
def export_onnx(
    model_dir: Annotated[
        Path | None, typer.Argument(help="A classifier model directory (default: the project's trained task models, or --task's).")
    ] = None,
    task: Annotated[str, typer.Option("--task", help="Comma-separated tasks of the project (default: every trained task).")] = "",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write the ONNX file (one model only; default: MODEL_DIR/model.onnx).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per model.")] = False,
) -> None:
    """Write each classifier (and each member of a seed ensemble) as model.onnx in its model directory, for `jpipe classify --backend onnx`.

    The graph has dynamic batch and sequence axes and reproduces the packed BiLSTM + masked
    attention exactly; it is checked against the torch model before it is written (atomically).
    Needs the onnx extra: pip install 'jpipe[onnx]'. Example: `jpipe export onnx --task topic,sentiment`.
    """
    from pipeline.cli._app import fail
    from pipeline.inference.onnx_backend import export_onnx as export_model

    with reported():
        if model_dir is not None:
            directories = {model_dir.name: model_dir}
        else:
            from pipeline.inference.batch import parse_tasks, project_tasks, task_model_dirs

            tasks = parse_tasks(task, known=project_tasks(state.project_dir)) if task.strip() else None
            directories = task_model_dirs(state.project_dir, tasks=tasks)
        if output is not None and len(directories) != 1:
            fail("--output names one file, but several models are exported.", "Name one MODEL_DIR or one --task with --output.")
        directories = _with_ensemble_members(directories) if output is None else directories
        for name, directory in directories.items():
            result = export_model(directory, output=output)
            if as_json:
                typer.echo(json.dumps({"model": name, **result}, ensure_ascii=False))
                continue
            console().print(
                f"{name}: wrote {result['path']} ({result['bytes'] / 1e6:.1f} MB, opset {result['opset']}; "
                f"largest difference to torch {result['max_difference_to_torch']:.1e})",
                markup=False,
                soft_wrap=True,
            )
