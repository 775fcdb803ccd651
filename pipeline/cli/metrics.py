"""``jpipe metrics history`` and ``jpipe metrics diff``: the run history of ``.jpipe/history.db``.

Light: no torch, spaCy or pandas (sqlite3, json and rich only).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from pipeline.cli._app import app, console, state

metrics_app = typer.Typer(
    help="The run history: every `jpipe run` and `jpipe tune` with its config fingerprint and headline metrics.", no_args_is_help=True
)
app.add_typer(metrics_app, name="metrics")

# Which metrics `history` shows as columns, best first (`diff` shows them all).
_COLUMN_ORDER = (
    re.compile(r"^[^.]+\.macro_f1_mean$"),
    re.compile(r"^[^.]+\.tune_best_\w+$"),
    re.compile(r"^generator\.perplexity_mean$"),
    re.compile(r"^extractor\.seq2seq\.record_f1$"),
    re.compile(r"^vectors\.[^.]+\.synonym_auc$"),
)


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if signed and value == 0:
        return "0"
    if float(value).is_integer() and abs(value) >= 1:
        return f"{value:+.0f}" if signed else f"{value:.0f}"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def headline_columns(runs: list, *, limit: int = 5) -> list[str]:
    """The metric names shown as columns: tasks' test macro-F1 means, tune bests, perplexity, extractor F1, synonym AUC."""
    names = sorted({name for run in runs for name in run.metrics})
    chosen: list[str] = []
    for pattern in _COLUMN_ORDER:
        chosen += [name for name in names if pattern.match(name) and name not in chosen]
    return chosen[:limit]


def _stages_text(run) -> str:
    stages = run.stages or {}
    if run.kind != "run":
        return f"{run.details.get('n_trials', '?')} trials" if run.kind == "tune" else "-"
    if stages.get("failed"):
        return f"failed at {', '.join(stages['failed'])}"
    text = f"{len(stages.get('ran', []))} ran, {len(stages.get('fresh', [])) + len(stages.get('cut_off', []))} fresh"
    return text + (f" ({stages['target']})" if stages.get("target") else "")


def history_table(runs: list) -> Any:
    """A rich table of ``runs``, newest last."""
    from rich.table import Table

    columns = headline_columns(runs)
    table = Table(title=f"jpipe metrics history: {state.project_dir}", title_justify="left")
    for name in ("run", "finished (UTC)", "kind", "status", "config", "stages"):
        table.add_column(name)
    for name in columns:  # "topic" over "macro_f1_mean": narrow columns
        table.add_column(name.replace(".", "\n", 1), justify="right", overflow="fold")
    for run in runs:
        status = {"ok": "[green]ok[/green]", "failed": "[red]failed[/red]"}.get(run.status, f"[yellow]{run.status}[/yellow]")
        when = run.finished_at.replace("T", " ")[:19]
        row = [run.id, when, run.kind, status, (run.fingerprint or "-")[:8], _stages_text(run)]
        table.add_row(*row, *(_number(run.metrics.get(name)) for name in columns))
    return table


@metrics_app.command("history")
def history(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show the last N runs.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print every field of each run (config, stages, all metrics) as JSON.")] = False,
) -> None:
    """List the runs of this project (each `jpipe run` and `jpipe tune`): id, time, status, config fingerprint, headline metrics."""
    from pipeline.workflow.history import read_runs

    runs = read_runs(state.project_dir, limit=limit)
    if as_json:
        typer.echo(json.dumps([run.to_json() for run in runs], ensure_ascii=False, indent=2))
        return
    console().print(history_table(runs))


def _run_line(label: str, info: dict[str, Any]) -> str:
    return f"{label}: {info['id']} ({info['kind']}, {info['status']}, finished {info['finished_at']}, config {info['fingerprint'] or '-'})"


def print_diff(result: dict[str, Any], *, all_metrics: bool) -> None:
    """The metrics table (metric, old, new, change) and the changed config keys (key, old, new)."""
    from rich.table import Table

    out = console()
    out.print(_run_line("A", result["old"]), markup=False)
    out.print(_run_line("B", result["new"]), markup=False)
    if result["metrics"]:
        table = Table(title="metrics", title_justify="left")
        for name in ("metric", "A", "B", "change"):
            table.add_column(name, justify="left" if name == "metric" else "right")
        for row in result["metrics"]:
            table.add_row(row["metric"], _number(row["old"]), _number(row["new"]), _number(row["change"], signed=True))
        out.print(table)
    else:
        out.print("metrics: no metric changed" + ("" if all_metrics else " (--all shows them all)"))
    if not result["config"]:
        same = "same fingerprint" if result["same_fingerprint"] else "fingerprint differs"
        out.print(f"config: no key changed ({same})")
        return
    table = Table(title=f"config ({'same fingerprint' if result['same_fingerprint'] else 'fingerprint changed'})", title_justify="left")
    for name in ("key", "A", "B", "in fingerprint"):
        table.add_column(name, overflow="fold")
    for row in result["config"]:
        values = (json.dumps(row[side], ensure_ascii=False) if row[side] is not None else "-" for side in ("old", "new"))
        table.add_row(row["key"], *values, {True: "yes", False: "no"}.get(row["fingerprinted"], "-"))
    out.print(table)


# ignore_unknown_options: -2 is a run position, not an option
@metrics_app.command("diff", context_settings={"ignore_unknown_options": True})
def diff(
    a: Annotated[
        str | None,
        typer.Argument(metavar="A", help="The older run: an id, a unique start of one, or -2, -3... (default: the run before B)."),
    ] = None,
    b: Annotated[str | None, typer.Argument(metavar="B", help="The newer run (default: the last run, -1).")] = None,
    all_metrics: Annotated[bool, typer.Option("--all", help="Show unchanged metrics too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Compare two runs, as `dvc metrics diff` does: each metric's old and new value and change, and the config keys that changed.

    Without A and B: the last run against the run of the same kind before it. `jpipe metrics diff -3` compares
    the third-last run with the last one.
    """
    from pipeline.workflow.history import diff_runs, pick_pair, read_runs

    old, new = pick_pair(read_runs(state.project_dir), a, b)
    result = diff_runs(old, new, all_metrics=all_metrics)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    print_diff(result, all_metrics=all_metrics)
