"""``jpipe tune TASK``: search a task's classifier settings on dev macro-F1 (Optuna), report, apply the best."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer

from pipeline.cli._app import SetOption, app, console, load_project_config, reported, state


def _print_trial():
    def progress(trial, study, target: int | None) -> None:
        from pipeline.workflow.tune import finished_trials

        done = len(finished_trials(study))
        value = f"{trial.value:.4f}" if trial.value is not None else "-"
        if trial.state.name == "PRUNED":
            value = f"pruned at epoch {trial.user_attrs.get('pruned_at_epoch', trial.last_step)}"
        try:
            best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "no complete trial yet"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        seconds = trial.user_attrs.get("seconds")
        typer.echo(f"trial {done}/{target if target else '?'} (#{trial.number}) {value}, {best}  [{seconds}s]  {params}")

    return progress


def _now() -> str | None:
    try:
        from pipeline.workflow.history import now_iso
    except ImportError:
        return None
    return now_iso()


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _print_summary(study) -> None:
    from pipeline.workflow.tune import finished_trials

    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "fail") if states.count(s))
    typer.echo(f"study {study.study_name}: {len(finished_trials(study))} finished trials ({counts or 'none'})")
    try:
        best = study.best_trial
    except ValueError:
        return
    params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
    typer.echo(f"best dev macro-F1 {best.value:.4f} (trial {best.number}): {params}")


def _print_report(study, rows: list[dict], paths: list, out) -> None:
    from rich.table import Table

    table = Table(title=f"jpipe tune {study.study_name}", title_justify="left")
    for column in ("trial", "state", "dev macro-F1", "epochs", "seconds", "params"):
        table.add_column(column)
    for row in rows:
        f1 = f"{row['dev_macro_f1']:.4f}" if row["dev_macro_f1"] is not None else "-"
        params = ", ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        table.add_row(str(row["number"]), row["state"], f1, str(row["epochs"] or "-"), str(row["seconds"] or "-"), params)
    out.print(table)
    for path in paths:
        out.print(f"wrote {path}", markup=False, highlight=False)


def _record_history(study, *, config, task: str, started_at: str | None) -> None:
    """Append the study to the run history (``pipeline.workflow.history.record_tune``, item 4 of issue 25)."""
    try:
        from pipeline.workflow.history import record_tune
    except ImportError:  # a checkout without the run history
        return
    from pipeline.workflow.tune import finished_trials

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value) if complete else None
    pruned = sum(t.state.name == "PRUNED" for t in study.get_trials(deepcopy=False))
    record_tune(
        state.project_dir,
        task=task,
        best_value=best.value if best else None,
        params=dict(best.params) if best else {},
        n_trials=len(finished_trials(study)),
        config=config,
        started_at=started_at,
        study=study.study_name,
        details={"pruned": pruned, "sampler": "TPESampler", "pruner": config["tune"]["pruner"]},
    )


def _run(config, task: str, *, trials: int | None, minutes: float | None, fresh: bool):
    from pipeline.workflow.tune import run_study

    started_at = _now()
    if not state.verbose:  # one line per trial; the epochs with --verbose
        logging.getLogger("pipeline.training").setLevel(logging.WARNING)
    study = run_study(
        project_dir=state.project_dir, config=config, task=task, trials=trials, minutes=minutes, fresh=fresh, progress=_print_trial()
    )
    _print_summary(study)
    _record_history(study, config=config, task=task, started_at=started_at)
    return study


def _report(study, task: str, *, as_json: bool) -> None:
    from pipeline.workflow.tune import TUNE_REPORT_DIR, trial_rows, write_plots

    rows = trial_rows(study)
    paths = write_plots(study, state.project_dir / TUNE_REPORT_DIR / task) if rows else []
    if as_json:
        typer.echo(json.dumps({"task": task, "trials": rows, "plots": [str(p) for p in paths]}, ensure_ascii=False))
    else:
        _print_report(study, rows, paths, console())


def _apply(study, task: str) -> None:
    from pipeline.paths import classifier_dir
    from pipeline.workflow.tune import apply_params, best_params

    values = best_params(study)
    path = apply_params(state.project_dir, task, values, profile=state.profile)
    typer.echo(
        f"wrote {', '.join(f'{k} = {_short(v)}' for k, v in values.items())} into [tasks.{task}.classifier] of {path}; "
        f"`jpipe run train_{task}` retrains {classifier_dir(task)} with them."
    )


@app.command("tune")
def tune(
    task: Annotated[str, typer.Argument(help="The task whose classifier settings to search, e.g. topic or a task of yours.")],
    trials: Annotated[
        int | None, typer.Option("--trials", help="Run until the study holds N finished trials (a killed study resumes to N).", min=1)
    ] = None,
    minutes: Annotated[float | None, typer.Option("--minutes", help="Start no trial after M minutes.", min=0.01)] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the best trial's values into [tasks.TASK.classifier] of jpipe.toml.")
    ] = False,
    report: Annotated[
        bool, typer.Option("--report", help="Print the trials table; plot the history and parameter importances (PNG).")
    ] = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the task's study first (or an unreadable .jpipe/tune.db).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --report: print the trials as JSON.")] = False,
    overrides: SetOption = None,
) -> None:
    """Search TASK's classifier settings (Optuna TPE + pruning on dev macro-F1; test is never read).

    The study is kept in .jpipe/tune.db and resumes when run again. Without --trials or --minutes it runs
    20 trials, unless --apply or --report is given alone (they then use the stored study).
    """
    from pipeline.workflow import tune as tuning

    with reported():
        config = load_project_config(overrides)
        config.task(task)
        study = None
        if trials is not None or minutes is not None or fresh or not (apply or report):
            study = _run(config, task, trials=trials, minutes=minutes, fresh=fresh)
        study = study or tuning.open_study(state.project_dir, task)
        if report:
            _report(study, task, as_json=as_json)
        if apply:
            _apply(study, task)
