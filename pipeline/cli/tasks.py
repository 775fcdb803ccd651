"""``jpipe task add|list|remove``: classification tasks from labelled files (``[tasks.NAME]`` in jpipe.toml)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli._app import app, console, reported, state

task_app = typer.Typer(
    help="Classification tasks from your own labelled files ([tasks.NAME] sections of jpipe.toml).", no_args_is_help=True
)
app.add_typer(task_app, name="task")


def _task_values(
    *, data: Path, text_column: str, label_column: str, id_column: str, group_column: str, labels: str, allow_rare: bool
) -> dict[str, Any]:
    """The ``[tasks.NAME]`` keys the options give (defaults left out, so the section stays short)."""
    from pipeline.data.tasks import stored_path

    values: dict[str, Any] = {"data": stored_path(state.project_dir, str(data)), "text_column": text_column, "label_column": label_column}
    optional = {"id_column": id_column, "group_column": group_column, "allow_rare": allow_rare}
    values.update({key: value for key, value in optional.items() if value})
    if labels:
        values["labels"] = [label.strip() for label in labels.split(",") if label.strip()]
    return values


def _print_added(name: str, data, values: dict[str, Any]) -> None:
    out = console()
    print_ = lambda text: out.print(text, markup=False)  # noqa: E731  (labels may contain [brackets])
    counts = data.distribution()
    print_(f"added task {name}: {len(data.rows)} rows, labels {', '.join(data.labels)} ({values['data']})")
    for split, per_label in counts.items():
        print_(f"  {split:<5} {sum(per_label.values()):>6} rows  " + "  ".join(f"{label} {n}" for label, n in per_label.items()))
    if data.skipped:
        print_(f"  skipped {sum(data.skipped.values())} rows: " + ", ".join(f"{reason} {n}" for reason, n in data.skipped.items()))
        for example in data.skipped_examples:
            print_(f"    {example}")
    print_(f"Train it with `jpipe run` (stages prepare_{name}, train_{name}, evaluate_{name}).")


@task_app.command("add")
def task_add(
    name: Annotated[str, typer.Argument(help="Task name: lowercase letters, digits, _ (its stages are train_NAME ...).")],
    data: Annotated[Path, typer.Option("--data", help="Labelled CSV, TSV or JSONL file (.gz allowed).")],
    text_column: Annotated[str, typer.Option("--text-column", help="Column (or JSONL field) with the text.")] = "text",
    label_column: Annotated[str, typer.Option("--label-column", help="Column (or JSONL field) with the label.")] = "label",
    id_column: Annotated[str, typer.Option("--id-column", help="Column with a row id (default: row number).")] = "",
    group_column: Annotated[str, typer.Option("--group-column", help="Column whose groups never straddle two splits.")] = "",
    labels: Annotated[str, typer.Option("--labels", help="Comma-separated labels in output order (default: sorted labels found).")] = "",
    allow_rare: Annotated[bool, typer.Option("--allow-rare", help="Accept labels with fewer than 5 examples (with a warning).")] = False,
) -> None:
    """Validate a labelled file and add it as task NAME to jpipe.toml (nothing is written when the file is bad)."""
    from pipeline.data.tasks import add_task

    values = _task_values(
        data=data,
        text_column=text_column,
        label_column=label_column,
        id_column=id_column,
        group_column=group_column,
        labels=labels,
        allow_rare=allow_rare,
    )
    with reported():
        rows = add_task(state.project_dir, name=name, values=values)
    _print_added(name, rows, values)


def _task_rows(config) -> list[dict[str, Any]]:
    """One summary per task: data, columns, labels, trained or not, test macro-F1 when evaluated."""
    from pipeline.io import read_json
    from pipeline.paths import classifier_dir, task_report_dir

    rows = []
    for name, task in config.tasks.items():
        report = state.project_dir / task_report_dir(name) / "report.json"
        f1 = read_json(report)["bilstm_attention"]["macro_f1"] if report.exists() else None
        rows.append(
            {
                "name": name,
                "enabled": task.enabled,
                "data": task.data,
                "text_column": task.text_column,
                "label_column": task.label_column,
                "labels": list(task.labels),
                "trained": (state.project_dir / classifier_dir(name) / "config.json").exists(),
                "test_macro_f1": f1,
            }
        )
    return rows


@task_app.command("list")
def task_list(as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False) -> None:
    """The project's tasks: built-in KNBC ones and [tasks.NAME] sections."""
    from pipeline.cli._app import load_project_config

    with reported():
        rows = _task_rows(load_project_config())
    if as_json:
        typer.echo(json.dumps({"tasks": rows}, ensure_ascii=False))
        return
    out = console()
    for row in rows:
        f1 = f"test macro-F1 {row['test_macro_f1']:.4f}" if row["test_macro_f1"] is not None else "not evaluated"
        state_text = ("trained" if row["trained"] else "not trained") if row["enabled"] else "disabled"
        labels = ", ".join(row["labels"]) or "(inferred)"
        out.print(
            f"{row['name']:<12} {row['data']:<24} {row['text_column']} -> {row['label_column']} [{labels}]  {state_text}, {f1}",
            markup=False,
        )


@task_app.command("remove")
def task_remove(name: Annotated[str, typer.Argument(help="Task to remove from jpipe.toml.")]) -> None:
    """Remove [tasks.NAME] from jpipe.toml (its model and data files stay until you delete them)."""
    from pipeline.data.tasks import remove_task

    with reported():
        remove_task(state.project_dir, name=name)
    console().print(f"removed task {name} from jpipe.toml")


def _print_report(name: str, report: dict[str, Any]) -> None:
    out = console()
    print_ = lambda text: out.print(text, markup=False)  # noqa: E731  (labels may contain [brackets])
    models = ("bilstm_attention", "tfidf_linear", "majority")
    print_(f"{name}: test macro-F1 " + " | ".join(f"{m} {report[m]['macro_f1']:.4f} (acc {report[m]['accuracy']:.4f})" for m in models))
    bilstm = report["bilstm_attention"]
    if bilstm.get("seeds", 1) > 1:  # the figure above is the kept seed's; the spread over all of them
        print_(
            f"bilstm_attention over {bilstm['seeds']} seeds: test macro-F1 {bilstm['macro_f1_mean']:.4f} ± {bilstm['macro_f1_std']:.4f} "
            f"(kept seed {bilstm.get('saved_seed')}, the median by dev macro-F1)"
        )
    for pair in report.get("comparisons", []):
        verdict = "within noise" if pair["within_noise"] else "more than the spread"
        print_(f"{pair['a']} - {pair['b']}: {pair['difference']:+.4f} (spread {pair['spread']:.4f}, {verdict})")
    print_(f"{'label':<14} {'precision':>9} {'recall':>7} {'F1':>7} {'support':>8}   (bilstm_attention)")
    for label, scores in report["bilstm_attention"]["per_class"].items():
        print_(f"{label:<14} {scores['precision']:>9.4f} {scores['recall']:>7.4f} {scores['f1']:>7.4f} {scores['support']:>8}")
    for split, counts in report.get("label_distribution", {}).items():
        print_(f"{split:<5} " + "  ".join(f"{label} {n}" for label, n in counts.items()))


@task_app.command("report")
def task_report(
    name: Annotated[str, typer.Argument(help="Task whose test report is shown (after `jpipe run evaluate_NAME`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report JSON.")] = False,
) -> None:
    """Per-class precision/recall/F1, macro-F1 against the majority and TF-IDF baselines, label distribution per split."""
    from pipeline.cli._app import fail, load_project_config
    from pipeline.io import read_json
    from pipeline.paths import task_report_dir

    with reported():
        load_project_config().task(name)
    path = state.project_dir / task_report_dir(name) / "report.json"
    if not path.exists():
        fail(f"Task {name} has no report yet ({path} is missing).", hint=f"Run `jpipe run evaluate_{name}`.")
    report = read_json(path)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
        return
    _print_report(name, report)
    console().print(f"confusion matrix: {path.parent / 'confusion.png'}", markup=False)
