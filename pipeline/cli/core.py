"""Pipeline commands: run, status, config, corpus-stats, bench tokenize."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import SetOption, app, bench_app, console, load_project_config, state
from pipeline.workflow.stages import STAGE_NAMES

logger = logging.getLogger("jpipe")


def _stage_argument_help() -> str:
    return "Stage to run (with any stale upstream). Omit to run every stale stage. One of: " + ", ".join(STAGE_NAMES) + "."


def _print_plan(out, plan: list[tuple[str, list[str]]]) -> None:
    """The dry-run listing: what would run and why."""
    if not plan:
        out.print("Everything is fresh: nothing to run.")
    for name, reasons in plan:
        # stale only because an upstream is: skipped if that upstream writes the same bytes again
        maybe = all(reason.startswith("upstream ") for reason in reasons)
        out.print(f"would run [bold]{name}[/bold]: {'; '.join(reasons)}" + (" (skipped if its inputs come out unchanged)" if maybe else ""))


def _progress_printers(out) -> dict:
    """``Runner.run`` callbacks that print each stage as it starts, ends or is cut off."""

    def started(name: str, reasons: list[str]) -> None:
        out.print(f"[bold cyan]>[/bold cyan] [bold]{name}[/bold] ({'; '.join(reasons)})")

    def finished(name: str, seconds: float, metrics: dict) -> None:
        summary = ", ".join(f"{k}={v}" for k, v in metrics.items() if isinstance(v, (int, float, str)))
        if len(summary) > 160:  # the whole set is in the lock (`jpipe status --json`) and the stage's report
            cut = summary.rfind(", ", 0, 160)
            summary = summary[: cut if cut > 0 else 160] + ", ..."
        out.print(f"[green]done[/green] {name} in {seconds:.1f}s" + (f"  {summary}" if summary else ""))

    def skipped(name: str, notes: list[str]) -> None:
        out.print(f"[green]=[/green] [bold]{name}[/bold] is fresh ({'; '.join(notes) or 'its inputs are unchanged'})")

    def failed(name: str, error: BaseException) -> None:
        code = getattr(error, "code", type(error).__name__)
        out.print(f"[red]failed[/red] {name} ({code})", markup=True, highlight=False)

    return {"on_stage_start": started, "on_stage_end": finished, "on_stage_skip": skipped, "on_stage_fail": failed}


def _tokenize_options(workers: int | None, engine: str | None) -> list[str]:
    """``run --workers/--engine`` as overrides (both keys are outside the fingerprint: they never make a stage stale)."""
    options = [f"tokenize.workers={workers}"] if workers is not None else []
    return options + ([f'tokenize.engine="{engine}"'] if engine is not None else [])


@app.command()
def run(
    stage: Annotated[str | None, typer.Argument(metavar="STAGE", help=_stage_argument_help(), show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Rerun STAGE (or, without STAGE, every stage) even if fresh.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Training stages continue from their last checkpoint after an interruption.")
    ] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            metavar="URL|PATH",
            help="KNBC source: the official URL, a local .tar.bz2 or an extracted directory (also $KNBC_SOURCE).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Show what would run, and why, without running it.")] = False,
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Processes that tokenize the extra corpora (tokenize.workers; 0 = one per core).")
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", metavar="local|ray", help="Who runs the tokenize workers (tokenize.engine).")
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", help="Stages run side by side (independent ones: one per task, the generator), each in its own process.", min=1
        ),
    ] = 1,
    overrides: SetOption = None,
) -> None:
    """Run the stale stages of the pipeline, in dependency order.

    A stage whose upstream reran but wrote byte-identical outputs stays fresh and is skipped.
    With --jobs N, up to N stages whose upstream stages are done run at once (torch gets
    cores/N threads in each); a failing stage stops only the stages that depend on it.
    Examples: `jpipe run` (everything stale), `jpipe run tokenize` (tokenize and
    any stale upstream), `jpipe run tokenize --force --set tokenize.split_mode=A`, `jpipe run --jobs 2`.
    Each run, ok or failed, appends a row to the run history (`jpipe metrics history`, `jpipe metrics diff`).
    """
    from pipeline.workflow.history import recorded_run
    from pipeline.workflow.runner import Runner

    runner = Runner(state.project_dir, load_project_config([*(overrides or []), *_tokenize_options(workers, engine)], source=source))
    out = console()
    if dry_run:
        _print_plan(out, runner.plan(stage, force=force))
        return
    with recorded_run(runner, target=stage, force=force) as history:  # one row in .jpipe/history.db (`jpipe metrics history`)
        ran = runner.run(stage, force=force, resume=resume, jobs=jobs, **history.callbacks(_progress_printers(out)))
    if not ran:
        out.print("Everything is fresh: nothing to run.")


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="The task whose classifier to train (stage train_TASK), e.g. topic.")],
    ddp: Annotated[
        int, typer.Option("--ddp", help="Train data-parallel in N processes on this machine (torchrun; gloo on CPU, nccl on GPUs).", min=1)
    ] = 1,
    force: Annotated[bool, typer.Option("--force", "-f", help="Retrain even if fresh.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint after an interruption.")] = False,
    overrides: SetOption = None,
) -> None:
    """Train one task's classifier (stage train_TASK, after any stale upstream stage), in one process or data-parallel.

    `jpipe train topic --ddp 2` starts 2 processes with torchrun; on several machines start
    `torchrun --nnodes M --nproc_per_node N ... -m pipeline train topic` on each instead.
    Rank 0 alone writes the checkpoints and the model directory; --resume works as in `jpipe run`.
    """
    from pipeline.workflow.distributed import launch, train_task
    from pipeline.workflow.runner import Runner

    if ddp > 1 and "WORLD_SIZE" not in os.environ:
        # the ranks rebuild the config from these arguments: the profile must travel with them
        profile = [item for name in state.profile or [] for item in ("--profile", name)]
        args = [*profile, "--dir", str(state.project_dir), "train", task] + ["--force"] * force + ["--resume"] * resume
        raise typer.Exit(launch(nproc=ddp, args=args + [item for value in overrides or [] for item in ("--set", value)]))
    runner = Runner(state.project_dir, load_project_config(overrides))
    ran = train_task(runner, task, force=force, resume=resume, callbacks=_progress_printers(console()))
    if not ran and os.environ.get("RANK", "0") == "0":
        console().print(f"train_{task} is fresh: nothing to run.")


def _status_table(statuses: list) -> object:
    """A rich table: stage, state, last run, and the reasons (stale) or notes (fresh)."""
    from rich.table import Table

    table = Table(title=f"jpipe status: {state.project_dir}", title_justify="left")
    for column in ("stage", "state", "last run", "reason"):
        table.add_column(column)
    for s in statuses:
        mark = "[green]fresh[/green]" if s.fresh else "[yellow]stale[/yellow]"
        mark = "[bold cyan]running[/bold cyan]" if s.running else mark
        mark = "[bold red]interrupted[/bold red]" if s.interrupted else mark
        last = f"{s.last_run} ({s.duration_s:.1f}s)" if s.last_run and s.duration_s is not None else "-"
        why = "; ".join(s.reasons) if s.reasons else (f"[dim]{'; '.join(s.notes)}[/dim]" if s.notes else "-")
        if s.interrupted:
            why = f"its run's process died mid-stage: `jpipe run` reruns it (`--resume` goes on from its last checkpoint); {why}"
        table.add_row(s.name, mark, last, why)
    return table


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    overrides: SetOption = None,
) -> None:
    """Show each stage as fresh or stale, with the reason (what `jpipe run` would do).

    A fresh stage whose upstream reran with byte-identical outputs carries a note saying so.
    """
    from pipeline.workflow.runner import Runner

    runner = Runner(state.project_dir, load_project_config(overrides))
    statuses = runner.status()
    if as_json:
        payload = {"project": str(state.project_dir), "lock_format": runner.lock.get("format"), "stages": [s.to_json() for s in statuses]}
        typer.echo(json.dumps(payload, ensure_ascii=False, indent=2))
        return
    console().print(_status_table(statuses))
    if runner.unverified:
        unverified = ", ".join(runner.unverified)
        note = f"jpipe.lock comes from an older jpipe that recorded these by file times, which changed: {unverified}."
        console().print(note + " They will be rebuilt.")


@app.command("config")
def show_config(
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Print the default config as commented TOML (a starting jpipe.toml).")
    ] = False,
    overrides: SetOption = None,
) -> None:
    """Print the effective config (defaults < profile < jpipe.toml < --set)."""
    from pipeline.config import SCHEMA, default_toml, task_toml, toml_value

    if defaults:
        typer.echo(default_toml())
        return
    config = load_project_config(overrides)
    for section in SCHEMA:
        typer.echo(f"[{section}]")
        for key, value in config[section].items():
            typer.echo(f"{key} = {toml_value(value)}")
        typer.echo("")
    for name, task in config.tasks.items():
        typer.echo(task_toml(name, task.to_dict()))


@app.command("corpus-stats")
def corpus_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Label distribution (theme, sentiment) per split, from the prepare stage."""
    from pipeline.data.knbc.prepare import load_stats

    stats = load_stats(state.project_dir)
    if as_json:
        typer.echo(json.dumps(stats, ensure_ascii=False, indent=2))
        return
    from rich.table import Table

    out = console()
    for label in ("theme", "sentiment"):
        table = Table(title=f"{label} per split", title_justify="left")
        classes = stats["labels"][label]
        table.add_column("split")
        table.add_column("articles", justify="right")
        table.add_column("sentences", justify="right")
        for name in classes:
            table.add_column(name, justify="right")
        for split, info in stats["splits"].items():
            table.add_row(split, str(info["articles"]), str(info["sentences"]), *(str(info[label].get(c, 0)) for c in classes))
        out.print(table)
    out.print(f"sentences with both positive and negative annotations: {stats['mixed_polarity_sentences']}")


@bench_app.command("tokenize")
def bench_tokenize(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    split_mode: Annotated[str | None, typer.Option(help="Sudachi split mode A/B/C (default: tokenize.split_mode).")] = None,
    full_limit: Annotated[int, typer.Option(help="Sentences for the slow full-GiNZA measurement.")] = 400,
    corpus: Annotated[
        str | None, typer.Option(metavar="PATH", help="A corpus (txt, txt.gz, jsonl) to tokenize into a token store.")
    ] = None,
    lines: Annotated[int, typer.Option(min=0, help="Only the corpus's first LINES lines (0 = all).")] = 0,
    workers: Annotated[str, typer.Option(metavar="N,M", help="Worker counts to measure on the corpus.")] = "1,2",
    corpus_only: Annotated[bool, typer.Option("--corpus-only", help="Skip the KNBC tokenizer comparison.")] = False,
    rounds: Annotated[int, typer.Option(min=1, help="Corpus rounds, worker counts alternating; the fastest of each is shown.")] = 1,
    overrides: SetOption = None,
) -> None:
    """Tokenization speed on the KNBC sentences: full ja_ginza, this pipeline's path, raw SudachiPy.

    With --corpus (or `tokenize.extra_corpora` set): sentences/s and MB/s of tokenizing that corpus into
    the token store with 1 and 2 workers (--workers), its size against the text, and peak memory.
    """
    from pipeline.bench.tokenize import benchmark_tokenizers

    config = load_project_config(overrides)
    mode = split_mode or config["tokenize"]["split_mode"]
    corpus = corpus or next(iter(config["tokenize"]["extra_corpora"]), None)
    if corpus_only or corpus:
        _bench_corpus(as_json, corpus=corpus, config=config, split_mode=mode, lines=lines, workers=workers, rounds=rounds)
        if corpus_only:
            return
    result = benchmark_tokenizers(project_dir=state.project_dir, split_mode=mode, full_limit=full_limit)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    for name, info in result.items():
        if isinstance(info, dict):
            out.print(
                f"{name:12s} {info['sentences_per_second']:>9.0f} sentences/s  ({info['sentences']} sentences, split mode {info['split_mode']})"
            )
    out.print(f"pipeline / sudachipy = {result['pipeline_vs_sudachipy']:.2f}")


def _bench_corpus(as_json: bool, *, corpus: str | None, config, split_mode: str, lines: int, workers: str, rounds: int) -> None:
    """``bench tokenize --corpus``: run and print the token-store benchmark."""
    from pathlib import Path

    from pipeline.bench.tokenize import benchmark_corpus
    from pipeline.cli._app import fail

    if not corpus:
        fail("No corpus to measure.", hint="Name a corpus file to measure, or set tokenize.extra_corpora.")
    path = Path(corpus) if Path(corpus).is_absolute() else state.project_dir / corpus
    counts = tuple(int(part) for part in workers.split(",") if part.strip())
    section = config["tokenize"]
    result = benchmark_corpus(
        corpus=path,
        workers=counts,
        lines=lines,
        split_mode=split_mode,
        fields=tuple(section["store_fields"]),
        shard_lines=section["shard_lines"],
        rounds=rounds,
    )
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    out.print(f"corpus {result['corpus']}: {result['sentences']} sentences, {result['tokens']} tokens, {result['text_mb']} MB of text")
    for key, run in result["runs"].items():
        out.print(
            f"  {key} worker(s): {run['sentences_per_second']:>9.0f} sentences/s  {run['mb_per_second']:.3f} MB/s  "
            f"({run['seconds']} s, x{result['speedup'][key]:.2f}; CPU s: main {run['cpu_seconds_main']}, workers {run['cpu_seconds_workers']})"
            + (f"; rounds: {', '.join(f'{s} s' for s in run['all_seconds'])}" if result["rounds"] > 1 else "")
        )
    out.print(f"  token store: {result['store_mb']} MB = {result['store_to_text']:.2f} x the text ({', '.join(result['fields'])})")
    rss = result["peak_rss_mb"]
    out.print(f"  peak RSS: main process {rss['main']} MB, largest worker process {rss['largest_worker']} MB ({result['cpus']} CPUs)")


@bench_app.command("language")
def bench_language(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    corpus: Annotated[Path | None, typer.Option(metavar="PATH", help="Japanese lines to check too (txt or txt.gz).")] = None,
    other_dir: Annotated[
        Path | None, typer.Option("--other-dir", metavar="DIR", help="GnuPG's help.<lang>.txt files: text in 26 languages.")
    ] = Path("/usr/share/gnupg"),
    sample: Annotated[int, typer.Option(min=1, help="Lines drawn from --corpus.")] = 50000,
) -> None:
    """How often the not-Japanese check flags Japanese text (KNBC, --corpus) and other languages (GnuPG's help texts)."""
    from pipeline.bench.language import benchmark_language

    result = benchmark_language(project_dir=state.project_dir, corpus=corpus, other_dir=other_dir, sample=sample)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    for group in ("japanese", "other"):
        for name, info in result[group].items():
            out.print(f"{group:8s} {name:18s} {info['flagged']:>5d} of {info['texts']:>5d} flagged ({info['flagged_share']:.2%})")
    if "other_flagged_share" in result:
        out.print(f"other languages together: {result['other_flagged_share']:.2%} flagged")


@bench_app.command("jobs")
def bench_jobs(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Jobs of the parallel run.", min=2)] = 2,
    stages: Annotated[
        str, typer.Option("--stages", help="Comma-separated stages to time.")
    ] = "train_topic,train_sentiment,train_generator",
    overrides: SetOption = None,
) -> None:
    """Wall time of training stages with `jpipe run --jobs N` vs one job, on two copies of this (fully run) project."""
    from pipeline.bench.jobs import benchmark_jobs

    names = tuple(name.strip() for name in stages.split(",") if name.strip())
    result = benchmark_jobs(project_dir=state.project_dir, config=load_project_config(overrides), jobs=jobs, stages=names)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    out.print(f"{', '.join(result['stages'])} on {result['cores']} cores")
    for name, run in result["runs"].items():
        dev = "; ".join(f"{stage} " + ", ".join(f"{k} {v}" for k, v in figures.items()) for stage, figures in run["dev"].items())
        out.print(f"{name:22s} --jobs {run['jobs']}, {run['torch_threads']} torch thread(s)/stage: {run['seconds']:>7.1f}s   {dev}")
    out.print(f"speed-up {result['speedup']:.2f}x (vs one job), {result['speedup_same_threads']:.2f}x (vs one job, same threads)")
    same, same_threads = result["same_weights_as_one_job"], result["same_weights_as_one_job_same_threads"]
    out.print(f"same weights as one job: {same}; as one job with the same threads: {same_threads} ({result['weights_files']} weight files)")
