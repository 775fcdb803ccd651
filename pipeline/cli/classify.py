"""Commands: classify, explain, bench train, bench classify.

Only typer, the standard library and light pipeline modules are imported here;
torch and the tokenizer load inside the command bodies.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import SetOption, app, bench_app, console, fail, load_project_config, reported, state
from pipeline.cli._inputs import (
    IdColumnOption,
    InputFileOption,
    InputFormatOption,
    MaxCharsOption,
    ReadOptions,
    TextColumnOption,
    TextFieldOption,
    TextInput,
    TextOption,
    TextOrFileArgument,
    resolve_input,
)

TASKS_HELP = "Comma-separated tasks, e.g. topic,sentiment (default: every trained task; `jpipe task list` shows them)."
THREADS_HELP = "Torch threads for the models (0 = all cores but one, which tokenizes the next batch meanwhile)."
INT8_HELP = "CPU only: int8 dynamic quantization of the models, about 1.6x faster; labels may differ from fp32 on <1% of texts."
BACKEND_HELP = "torch, or onnx: each model's model.onnx (`jpipe export onnx`) run by ONNX Runtime, CPU only (pip install 'jpipe[onnx]')."
WORKERS_HELP = (
    "--engine local: worker processes that tokenize and classify chunks of rows, one torch thread each (default: the usable "
    "cores on the CPU, 1 on a GPU; 1 = this process only). An input of one batch or less runs in this process."
)
ENGINE_HELP = (
    "local: this process (a reader thread + torch threads); ray: Ray Data actors, on this machine or a cluster (pip install 'jpipe[ray]')."
)
CALIBRATION_HELP = (
    "Calibrated probabilities: each model's temperature fitted on dev (calibration.json, written by training); "
    "--no-calibration gives the raw softmax. Labels are the same either way (a seed ensemble's may differ slightly)."
)
LONG_HELP = (
    "Reviews longer than the model's max_tokens (200 tokens by default, train_<task>.max_tokens): 'aggregate' = classify every "
    "200-token window and average the probabilities weighted by window length; 'truncate' = keep the first window only."
)


# `classify` has many options; they are grouped by what they are about, each group checked
# when it is built (before any model loads), so the command body stays a few calls.
@dataclass(frozen=True)
class InputOptions:
    """Where the reviews come from (one text, a file or stdin: ``pipeline.cli._inputs``) and how rows are read."""

    source: TextInput
    read: ReadOptions
    kind: str  # txt, csv, tsv, jsonl or parquet; "text" for a single text

    @classmethod
    def build(cls, *, source: TextInput, read: ReadOptions) -> InputOptions:
        return cls(source=source, read=read, kind=source.format(read) if source.is_file else "text")

    def records(self):
        return self.source.records(self.read)


@dataclass(frozen=True)
class ModelOptions:
    """Which task models run, where, and how long reviews are handled."""

    tasks: tuple[str, ...] | None
    long_policy: str
    batch_size: int
    device: str
    threads: int
    int8: bool
    backend: str = "torch"
    calibrated: bool = True

    def load(self):
        """The project's ``TaskClassifiers`` (one ``Classifier.from_dir`` per task)."""
        from pipeline.inference.batch import TaskClassifiers

        _set_inference_threads(self.threads)
        return TaskClassifiers.from_project(
            state.project_dir,
            tasks=self.tasks,
            device=self.device,
            long_policy=self.long_policy,
            batch_size=self.batch_size,
            int8=self.int8,
            backend=self.backend,
            calibrated=self.calibrated,
        )


@dataclass(frozen=True)
class OutputOptions:
    """Where and how the output rows are written."""

    path: Path | None
    format: str
    top_tokens: int
    progress: bool

    @classmethod
    def build(cls, *, path: Path | None, output_format: str | None, top_tokens: int, progress: bool, engine: str) -> OutputOptions:
        from pipeline.inference.batch import output_format_for

        if engine == "ray":
            from pipeline.inference.ray_engine import ray_output_format

            if path is None:
                fail("The Ray engine writes a directory of shards.", "Name the output directory with --output.")
            return cls(path=path, format=ray_output_format(output_format), top_tokens=top_tokens, progress=False)
        if engine != "local":
            fail(f"Unknown engine {engine!r}.", "Use --engine local or --engine ray.")
        # The progress bar goes to stderr, and only to a terminal.
        return cls(
            path=path, format=output_format_for(path, output_format), top_tokens=top_tokens, progress=progress and sys.stderr.isatty()
        )


@dataclass(frozen=True)
class RayOptions:
    """``--engine ray``: which cluster, how many actors."""

    address: str | None
    actors: int

    def run(self, source: InputOptions, models: ModelOptions, target: OutputOptions):
        """Classify on Ray; returns the ``RaySummary``."""
        if not source.source.is_file:
            fail("The Ray engine reads a file, not a single text.", "Give a file (or --input FILE), or use --engine local.")
        from pipeline.inference.ray_engine import RayModels, RaySource, run_ray_classification

        ray_models = RayModels(**_engine_model_fields(models, target))
        read = source.read
        ray_source = RaySource(
            path=source.source.path,
            kind=source.kind,
            text_column=read.column_for(source.kind),
            id_column=read.id_column,
            max_chars=read.max_chars,
        )
        return run_ray_classification(
            source=ray_source,
            models=ray_models,
            output_dir=target.path,
            output_format=target.format,
            address=self.address,
            actors=self.actors,
        )


def _parse_tasks(text: str) -> tuple[str, ...] | None:
    """The tasks named by ``--task``; None (every trained task) when it is empty."""
    from pipeline.inference.batch import parse_tasks, project_tasks

    return parse_tasks(text, known=project_tasks(state.project_dir)) if text.strip() else None


# long: one Typer option per parameter (the signature is the --help text); the body is a few calls
@app.command()
def classify(
    argument: TextOrFileArgument = None,
    input_path: InputFileOption = None,
    text: TextOption = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Output file (.csv or .jsonl; default: stdout); with --engine ray, a directory of shards."),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format", help="Output format: jsonl or csv (default: from --output's extension, else jsonl); --engine ray: jsonl or parquet."
        ),
    ] = None,
    task: Annotated[str, typer.Option("--task", help=TASKS_HELP)] = "",
    text_column: TextColumnOption = None,
    text_field: TextFieldOption = None,
    id_column: IdColumnOption = None,
    input_format: InputFormatOption = None,
    long_policy: Annotated[str, typer.Option("--long", help=LONG_HELP)] = "aggregate",
    max_chars: MaxCharsOption = 10_000,
    top_tokens: Annotated[int, typer.Option("--top-tokens", help="Most attended tokens listed per task.", min=0)] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Reviews per batch.", min=1)] = 256,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")] = "cpu",
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr (shown only on a terminal).")] = True,
    threads: Annotated[int, typer.Option("--threads", help=THREADS_HELP, min=0)] = 0,
    int8: Annotated[bool, typer.Option("--int8", help=INT8_HELP)] = False,
    backend: Annotated[str, typer.Option("--backend", help=BACKEND_HELP)] = "torch",
    engine: Annotated[str, typer.Option("--engine", help=ENGINE_HELP)] = "local",
    address: Annotated[
        str | None, typer.Option("--address", help="--engine ray: the cluster (auto, HOST:PORT or ray://HOST:PORT); default: a local Ray.")
    ] = None,
    actors: Annotated[int, typer.Option("--actors", help="--engine ray: model actors (one CPU each).", min=1)] = 2,
    workers: Annotated[int | None, typer.Option("--workers", help=WORKERS_HELP, min=1, show_default=False)] = None,
    calibration: Annotated[bool, typer.Option("--calibration/--no-calibration", help=CALIBRATION_HELP)] = True,
) -> None:
    """Classify reviews (topic and sentiment) with the trained models, streaming in batches.

    The input is one review (TEXT or --text), or a file of reviews (FILE, --input FILE,
    or - for stdin): see docs/input.md. Each input row is one review (a document of one
    or more sentences), tokenized like the training data. Reviews longer than the model's max_tokens (200 tokens
    by default) are aggregated over 200-token windows by default (--long).
    Each output row has: id, text, and per task the label, the probability of every
    class and the most attended tokens. Rows that cannot be classified (empty,
    whitespace-only, not UTF-8, longer than --max-chars, missing column/field,
    bad JSON) get an 'error' and the run goes on; the exit code is 1 only when no
    row could be classified.

    With --engine ray the rows are classified by Ray Data actors (a local Ray, or the
    cluster at --address) and written as shards part-*.jsonl / part-*.parquet in the
    --output directory; each row carries 'seq', its position in the input.

    Examples: `jpipe classify "駅前のラーメン屋はスープが美味しかった。"`,
    `jpipe classify reviews.txt -o out.csv`,
    `jpipe classify reviews.csv --text-column body --task sentiment`,
    `cat reviews.txt | jpipe classify - --format csv`,
    `jpipe classify reviews.jsonl --engine ray --actors 2 -o out/`.
    """
    read = ReadOptions(input_format=input_format, text_column=text_column, text_field=text_field, id_column=id_column, max_chars=max_chars)
    where = resolve_input(argument=argument, input_path=input_path, text=text, example="jpipe classify reviews.csv --text-column review")
    source = InputOptions.build(source=where, read=read)
    target = OutputOptions.build(path=output, output_format=output_format, top_tokens=top_tokens, progress=progress, engine=engine)
    models = ModelOptions(
        tasks=_parse_tasks(task),
        long_policy=long_policy,
        batch_size=batch_size,
        device=device,
        threads=threads,
        int8=int8,
        backend=backend,
        calibrated=calibration,
    )
    if backend != "torch" and engine == "ray":
        fail("The Ray engine runs the torch backend only.", "Use --engine local with --backend onnx.")
    if engine == "ray":
        summary = RayOptions(address=address, actors=actors).run(source, models, target)
    else:
        summary = _classify(source, models, target, workers=workers)
    _report(summary, target)


def _classify(source: InputOptions, models: ModelOptions, target: OutputOptions, *, workers: int | None = None):
    """Read, classify and write every row; returns the ``ClassifySummary``."""
    from pipeline.inference.workers import default_workers

    workers = workers or default_workers(models.device)
    if workers > 1 and source.source.is_file and models.backend == "torch":  # the worker processes load torch models
        return _classify_parallel(source, models, target, workers=workers)
    from pipeline.inference.batch import run_classification
    from pipeline.io import atomic_open

    records = source.records()
    classifiers = models.load()
    options = dict(
        records=records, classifiers=classifiers, output_format=target.format, top_tokens=target.top_tokens, progress=target.progress
    )
    if target.path is None:
        summary = run_classification(handle=sys.stdout, **options)
        sys.stdout.flush()
        return summary
    with atomic_open(target.path, newline="") as handle:
        return run_classification(handle=handle, **options)


def _engine_model_fields(models: ModelOptions, target: OutputOptions) -> dict:
    """What Ray actors and worker processes need to load the models: plain values, as they cross processes."""
    from pipeline.inference.batch import task_model_dirs

    directories = task_model_dirs(state.project_dir, tasks=models.tasks)
    return {
        "model_dirs": {task: str(path.resolve()) for task, path in directories.items()},
        "batch_size": models.batch_size,
        "device": models.device,
        "long_policy": models.long_policy,
        "int8": models.int8,
        "threads": max(1, models.threads),
        "top_tokens": target.top_tokens,
        "calibrated": models.calibrated,
    }


def _classify_parallel(source: InputOptions, models: ModelOptions, target: OutputOptions, *, workers: int):
    """``--workers N``: N processes classify chunks of rows (``pipeline.inference.workers``); returns the summary."""
    from pipeline.inference.workers import WorkerModels, run_parallel_classification
    from pipeline.io import atomic_open

    records = source.records()  # a missing file or column fails here, before any process starts
    spec = WorkerModels(output_format=target.format, **_engine_model_fields(models, target))
    options = dict(records=records, models=spec, workers=workers, progress=target.progress, load_local=models.load)
    if target.path is None:
        summary = run_parallel_classification(handle=sys.stdout, **options)
        sys.stdout.flush()
        return summary
    with atomic_open(target.path, newline="") as handle:
        return run_parallel_classification(handle=handle, **options)


def _report(summary, target: OutputOptions) -> None:
    """One line on stderr with the counts; exit status 1 when no row could be classified."""
    message = f"classified {summary.classified} of {summary.rows} rows"
    if summary.errors:
        message += f"; {summary.errors} with errors (see the 'error' field), e.g. " + "; ".join(summary.error_examples[:3])
    not_japanese = getattr(summary, "not_japanese", 0)
    if not_japanese:
        examples = "; ".join(getattr(summary, "not_japanese_examples", [])[:3])
        message += f"; {not_japanese} not Japanese (labels kept, see the 'warning' field), e.g. {examples}"
    if target.path is not None:
        message += f" -> {target.path}"
    if summary.classified == 0:
        fail(
            f"No row could be classified ({summary.rows} rows read).",
            "Check the input format and --text-column / --text-field; the 'error' field of each output row says why.",
        )
    console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)


def _set_inference_threads(threads: int) -> int:
    """Torch threads for inference: one core is left to the tokenizer thread by default."""
    import os

    import torch

    chosen = threads if threads > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(chosen)
    return chosen


def _weight_style(weight: float, peak: float) -> str:
    """White-to-red background for a weight relative to the review's largest weight."""
    share = weight / peak if peak > 0 else 0.0
    fade = int(255 - 200 * share)
    return f"{'white' if share > 0.6 else 'black'} on rgb(255,{fade},{fade})"


@app.command()
def explain(
    argument: TextOrFileArgument = None,
    input_path: InputFileOption = None,
    text: TextOption = None,
    task: Annotated[str, typer.Option("--task", help=TASKS_HELP)] = "",
    text_column: TextColumnOption = None,
    text_field: TextFieldOption = None,
    id_column: IdColumnOption = None,
    input_format: InputFormatOption = None,
    max_chars: MaxCharsOption = 10_000,
    html_dir: Annotated[
        Path | None,
        typer.Option(
            "--html-dir",
            help="Where the HTML heatmaps go (one file per task, explain-<task>-<hash>.html). Default: models/report/explain/ in the project.",
        ),
    ] = None,
    html: Annotated[bool, typer.Option("--html/--no-html", help="Write the HTML heatmaps.")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the tokens, weights and probabilities as JSON (a file: one object per line).")
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
) -> None:
    """Classify a review and show which tokens the attention looked at.

    The terminal shows each task's label and probabilities, then the tokens on a
    white-to-red background (red = high attention weight; weights sum to 1).
    An HTML heatmap per task is written to --html-dir (default models/report/explain/).
    A file of reviews (FILE, --input FILE or - for stdin; see docs/input.md) is explained
    row by row; with --json, one object per row {id, text, tasks, html, error}.

    Example: jpipe explain "駅前のラーメン屋はスープが美味しかった。"
    """
    from pipeline.inference.batch import TaskClassifiers
    from pipeline.paths import REPORT_DIR

    where = resolve_input(
        argument=argument, input_path=input_path, text=text, example='jpipe explain "駅前のラーメン屋はスープが美味しかった。"'
    )
    read = ReadOptions(input_format=input_format, text_column=text_column, text_field=text_field, id_column=id_column, max_chars=max_chars)
    records = where.records(read)  # a missing file, column or unknown format fails here, before the models load
    classifiers = TaskClassifiers.from_project(state.project_dir, tasks=_parse_tasks(task), device=device)
    html_root = (html_dir if html_dir is not None else state.project_dir / REPORT_DIR / "explain") if html else None
    if where.is_file:
        _explain_rows(records, classifiers=classifiers, html_root=html_root, as_json=as_json)
        return
    (record,) = records
    if record.error:
        from pipeline.errors import InputError

        raise InputError(
            "E236", f"Cannot explain: {record.error}.", hint='Give a Japanese sentence, e.g. jpipe explain "ラーメンが美味しかった。"'
        )
    result, paths = _explain_text(record.text, classifiers=classifiers, html_root=html_root)
    if as_json:
        typer.echo(json.dumps({**result, "html": {task: str(path) for task, path in paths.items()}}, ensure_ascii=False, indent=2))
        return
    _print_explanation(result, paths)


def _explain_text(text: str, *, classifiers, html_root: Path | None) -> tuple[dict, dict[str, Path]]:
    """The explanation of one text and the heatmap files written for it (none when ``html_root`` is None)."""
    from pipeline.inference.explain import explain as explain_text
    from pipeline.inference.explain import write_explanation_html

    result = explain_text(text, classifiers=classifiers)
    return result, (write_explanation_html(result, html_dir=html_root) if html_root is not None else {})


def _explain_rows(records, *, classifiers, html_root: Path | None, as_json: bool) -> None:
    """Explain every row of a file; a row that cannot be explained gets an error and the run goes on."""
    from pipeline.errors import InputError

    out = console()
    rows = errors = 0
    for record in records:
        rows += 1
        result, paths, error = None, {}, record.error
        if error is None:
            try:
                result, paths = _explain_text(record.text, classifiers=classifiers, html_root=html_root)
            except InputError as exc:
                error = exc.message
        errors += error is not None
        if as_json:
            row = {"id": record.id, "text": record.text, "tasks": result["tasks"] if result else None}
            typer.echo(json.dumps(row | {"html": {t: str(p) for t, p in paths.items()}, "error": error}, ensure_ascii=False))
            continue
        out.print(f"[{record.id}] {record.text if record.text is not None else ''}", markup=False, highlight=False)
        if error is not None:
            out.print(f"  error: {error}\n", markup=False, highlight=False)
        else:
            _print_explanation(result, paths)
    console(stderr=True).print(f"explained {rows - errors} of {rows} rows; {errors} with errors", markup=False, highlight=False)
    if rows and errors == rows:
        fail("No row could be explained.", "Check the input format and --text-column / --text-field; each row's error says why.")


def _print_explanation(result: dict, paths: dict[str, Path]) -> None:
    """Per task: label and probabilities, the tokens on a white-to-red background, the top tokens."""
    from rich.text import Text

    out = console()
    for name, info in result["tasks"].items():
        probabilities = "  ".join(f"{label} {p:.3f}" for label, p in sorted(info["probabilities"].items(), key=lambda kv: -kv[1]))
        out.print(Text.assemble((f"{name}: ", "bold"), (info["label"], "bold green"), f"   ({probabilities})"))
        peak = max(info["weights"], default=0.0)
        line = Text()
        for token, weight in zip(info["tokens"], info["weights"], strict=True):
            line.append(f" {token} ", style=_weight_style(weight, peak))
            line.append(" ")
        out.print(line)
        ranked = sorted(zip(info["tokens"], info["weights"], strict=True), key=lambda tw: -tw[1])[:5]
        out.print("  top: " + ", ".join(f"{token} {weight:.3f}" for token, weight in ranked), markup=False, highlight=False)
        if name in paths:
            out.print(f"  heatmap: {paths[name]}", markup=False, highlight=False)
        out.print("")


@bench_app.command("train")
def bench_train(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    task: Annotated[str, typer.Option("--task", help="The task whose classifier settings and batches are used.")] = "topic",
    steps: Annotated[int, typer.Option("--steps", help="Timed training steps (after 5 warm-up steps).", min=1)] = 50,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Sentences per batch (default: the task's classifier batch_size).", min=1)
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (default: the task's classifier device).")] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="classifier; lm: pretrain_lm's language model, adaptive vs full softmax (tokens/s); "
            "extractor: the opinion extractor, packed teacher forcing vs step by step (sentences/s).",
        ),
    ] = "classifier",
    overrides: SetOption = None,
) -> None:
    """Training-step throughput: the classifier vs a bare (cuDNN on GPU) BiLSTM forward+backward of the same
    shapes; --model lm: pretrain_lm's LM, adaptive vs full softmax; --model extractor: packed vs step-by-step."""
    if model not in ("classifier", "lm", "extractor"):
        fail(f"Unknown --model '{model}'.", hint="Choose classifier, lm or extractor.", code=2)
    config = load_project_config(overrides)
    if model == "lm":
        result, lines = _bench_train_lm(config, steps=steps, device=device)
    elif model == "extractor":
        result, lines = _bench_train_extractor(config, steps=steps, device=device)
    else:
        result, lines = _bench_train_classifier(config, task=task, steps=steps, batch_size=batch_size, device=device)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    for line in lines:
        out.print(line)


def _bench_train_classifier(config, *, task: str, steps: int, batch_size: int | None, device: str | None) -> tuple[dict, list[str]]:
    from pipeline.bench.train import benchmark_training

    result = benchmark_training(
        project_dir=state.project_dir, section=config.classifier_for(task), task=task, steps=steps, batch_size=batch_size, device=device
    )
    return result, [
        f"device {result['device']} (AMP {result['amp']}, {result['threads']} threads), batch {result['batch_size']}, {result['steps']} steps, {result['data']} batches of ~{result['mean_batch_tokens']} tokens",
        f"classifier training step : {result['train_step']['sentences_per_second']:>10.1f} sentences/s",
        f"bare RNN forward+backward: {result['bare_rnn_forward_backward']['sentences_per_second']:>10.1f} sentences/s",
        f"ratio                    : {result['ratio']:.3f}",
    ]


def _bench_train_lm(config, *, steps: int, device: str | None) -> tuple[dict, list[str]]:
    from pipeline.bench.train import benchmark_lm_training

    result = benchmark_lm_training(
        project_dir=state.project_dir, section=config["pretrain_lm"], classifier=config["classifier"], steps=steps, device=device
    )
    return result, [
        f"device {result['device']} ({result['threads']} threads), vocabulary {result['vocab_size']} ({result['vocab_from']}), "
        f"embedding {result['embedding_dim']}, hidden {result['hidden_size']}, batch {result['batch_size']} x {result['bptt']} tokens, {result['steps']} steps",
        f"LM training step, adaptive softmax: {result['adaptive_softmax_tokens_per_second']:>10.1f} tokens/s",
        f"LM training step, full softmax    : {result['full_softmax_tokens_per_second']:>10.1f} tokens/s",
        f"speed-up                          : {result['speedup']:.2f}x",
    ]


def _bench_train_extractor(config, *, steps: int, device: str | None) -> tuple[dict, list[str]]:
    from pipeline.bench.train import benchmark_extractor_training

    result = benchmark_extractor_training(project_dir=state.project_dir, section=config["train_extractor"], steps=steps, device=device)
    return result, [
        f"device {result['device']} ({result['threads']} threads), batch {result['batch_size']}, {result['steps']} KNBC training batches",
        f"extractor training step, packed teacher forcing: {result['packed_sentences_per_second']:>8.1f} sentences/s",
        f"extractor training step, step by step          : {result['stepwise_sentences_per_second']:>8.1f} sentences/s",
        f"speed-up                                       : {result['speedup']:.2f}x",
    ]


@bench_app.command("classify")
def bench_classify(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    reviews: Annotated[int, typer.Option("--reviews", help="Short reviews to classify.", min=1)] = 20_000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Reviews per batch.", min=1)] = 256,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
    threads: Annotated[int, typer.Option("--threads", help=THREADS_HELP, min=0)] = 0,
    int8: Annotated[bool, typer.Option("--int8", help=INT8_HELP)] = False,
    via: Annotated[
        str, typer.Option("--via", help="jpipe: `classify` alone; spacy: also nlp.pipe with the jpipe_classifier component, and the ratio.")
    ] = "jpipe",
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="ray: the local and Ray engines on the same reviews (default 200,000), 1 vs --actors actors, peak memory."
        ),
    ] = "local",
    actors: Annotated[int, typer.Option("--actors", help="--engine ray: Ray actors.", min=1)] = 2,
    workers: Annotated[
        int,
        typer.Option("--workers", help="N > 1: `classify --workers 1` (in this process) against --workers N, alternating rounds.", min=1),
    ] = 1,
    rounds: Annotated[
        int, typer.Option("--rounds", help="--workers, --backend onnx: timed rounds of each; the medians are compared.", min=1)
    ] = 3,
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="onnx: the torch and ONNX Runtime backends on the same texts, --rounds alternating rounds (model only, end to end).",
        ),
    ] = "torch",
) -> None:
    """End-to-end reviews/s of `classify` (tokenize + both models + JSONL output) on short reviews, and peak memory."""
    from pipeline.bench.classify import benchmark_classify, benchmark_spacy

    _set_inference_threads(threads)
    if backend != "torch":
        _print_onnx_bench(backend=backend, reviews=reviews, batch_size=batch_size, rounds=rounds, as_json=as_json)
        return
    if workers > 1:
        _print_workers_bench(reviews=reviews, batch_size=batch_size, workers=workers, rounds=rounds, as_json=as_json)
        return
    if via not in ("jpipe", "spacy") or engine not in ("local", "ray"):
        fail(f"--via must be jpipe or spacy (got {via!r}), --engine local or ray (got {engine!r}).")
    if engine == "ray":
        _print_ray_bench(reviews=reviews, actors=actors, batch_size=batch_size, as_json=as_json)
        return
    if via == "spacy":
        _print_spacy_bench(benchmark_spacy(project_dir=state.project_dir, reviews=reviews, batch_size=batch_size, device=device), as_json)
        return
    _print_local_bench(
        benchmark_classify(project_dir=state.project_dir, reviews=reviews, batch_size=batch_size, device=device, int8=int8), as_json
    )


def _print_local_bench(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    out.print(
        f"{result['reviews_per_second']:.0f} reviews/s end to end ({result['reviews']} {result['source']}, mean {result['mean_characters']} characters, {result['threads']} threads)"
    )
    out.print(f"tokenization alone: {result['tokenize_only_reviews_per_second']:.0f} reviews/s; peak RSS {result['peak_rss_mb']} MB")
    if result["label_agreement_with_fp32"]:
        out.print("int8 labels equal to fp32: " + ", ".join(f"{t} {100 * v:.2f}%" for t, v in result["label_agreement_with_fp32"].items()))


def _print_workers_bench(*, reviews: int, batch_size: int, workers: int, rounds: int, as_json: bool) -> None:
    from pipeline.bench.classify_workers import benchmark_workers

    result = benchmark_workers(project_dir=state.project_dir, reviews=reviews, batch_size=batch_size, workers=workers, rounds=rounds)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    out.print(
        f"{result['reviews']} reviews ({result['source']}, mean {result['mean_characters']} characters), {result['cores']} cores, "
        f"{rounds} alternating rounds, wall clock with model loading; load average {result['load_average_before']} before"
    )
    for n in (1, workers):
        runs = ", ".join(f"{s:.1f}" for s in result[f"seconds_workers_{n}"])
        out.print(f"--workers {n}: {result[f'reviews_per_second_workers_{n}']:>8.0f} reviews/s (median; runs {runs} s)")
    out.print(f"ratio {workers} / 1: {result['ratio']:.3f}; load average {result['load_average_after']} after")
    out.print(
        f"CPU cost: {result['reviews_per_cpu_second_workers_1']:.0f} reviews per CPU second (--workers 1), "
        f"{result[f'reviews_per_cpu_second_workers_{workers}']:.0f} (--workers {workers}, the workers included); "
        f"start of {workers} workers with their models: {result['startup_seconds_workers']:.1f} s"
    )
    for memory in result["worker_memory_mb"]:
        out.print(
            "worker {pid}: VmRSS {VmRSS} MB = RssAnon {RssAnon} MB (private) + RssFile {RssFile} MB (file pages, shared); peak {VmHWM} MB".format(
                **memory
            )
        )
    out.print(f"in-process engine (--workers 1): peak RSS {result['in_process_peak_rss_mb']} MB")


def _print_onnx_bench(*, backend: str, reviews: int, batch_size: int, rounds: int, as_json: bool) -> None:
    if backend != "onnx":
        fail(f"Unknown --backend {backend!r}.", "Use --backend torch or --backend onnx.")
    from pipeline.bench.classify_onnx import benchmark_onnx

    with reported():
        result = benchmark_onnx(project_dir=state.project_dir, reviews=reviews, batch_size=batch_size, rounds=rounds)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    out.print(
        f"{result['reviews']} reviews end to end, {result['model_only_texts']} texts model only ({result['source']}, "
        f"tasks {'+'.join(result['tasks'])}), {result['threads']} thread(s), {rounds} alternating rounds, medians; CPU"
    )
    rates = result["reviews_per_second"]
    for kind in ("model_only", "model_only_sorted", "end_to_end"):
        out.print(
            f"{kind:17s}: torch {rates['torch'][kind]:>8.0f}/s  onnx {rates['onnx'][kind]:>8.0f}/s  "
            f"onnx/torch {result['ratio_onnx_vs_torch'][kind]:.3f}"
        )
    for task, agree in result["agreement"].items():
        out.print(
            f"{task}: labels equal {100 * agree['labels_equal']:.2f}%, largest probability difference {agree['max_probability_difference']:.1e}"
        )
    out.print(f"load average {result['load_average_before']} before, {result['load_average_after']} after (shared machine)")


def _print_ray_bench(*, reviews: int, actors: int, batch_size: int, as_json: bool) -> None:
    from pipeline.bench.classify_ray import benchmark_ray_classify

    # 20,000 is the local benchmark's default; the Ray comparison is about 200,000 reviews.
    result = benchmark_ray_classify(
        project_dir=state.project_dir, reviews=200_000 if reviews == 20_000 else reviews, actors=actors, batch_size=batch_size
    )
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    runs = result["runs"]
    out.print(
        f"{result['reviews']} reviews ({result['source']}, {result['cores']} cores), batch {result['batch_size']}; wall clock, model loading included"
    )
    for name, run in runs.items():
        extra = f", {run['actors']} actor(s), Ray start {run['ray_start_seconds']:.1f}s" if "actors" in run else ""
        out.print(
            f"{name:18s} {run['rows']:>8d} reviews {run['reviews_per_second']:>8.0f} reviews/s  peak {run['peak_mb']:>7.0f} MB{extra}"
        )
    out.print(f"ray / local: {result['ray_vs_local']:.3f} (goal >= 0.85); {actors} actors / 1 actor: {result['actor_scaling']:.3f}")
    fit = result["fit"]
    out.print(
        "fixed + marginal: local {:.1f}s + {:.0f} reviews/s, ray {:.1f}s + {:.0f} reviews/s".format(
            fit["local"]["fixed_seconds"],
            fit["local"]["marginal_reviews_per_second"],
            fit["ray"]["fixed_seconds"],
            fit["ray"]["marginal_reviews_per_second"],
        )
    )
    growth = result["peak_mb_growth"]
    out.print(f"peak memory x{growth['local']:.2f} (local), x{growth['ray']:.2f} (ray) for 4x the reviews")


def _print_spacy_bench(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    out.print(f"jpipe classify: {result['jpipe_classify_reviews_per_second']:.0f} reviews/s ({result['reviews']} {result['source']})")
    out.print(f"nlp.pipe ({' + '.join(result['spacy_pipe_components'])}): {result['spacy_pipe_reviews_per_second']:.0f} reviews/s")
    out.print(
        f"ratio {result['ratio']:.3f} (goal >= 0.7); largest doc.cats - classify difference {result['max_probability_difference']:.1e}"
    )


@bench_app.command("calibration")
def bench_calibration(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    task: Annotated[str, typer.Option("--task", help="Comma-separated tasks (default: every task trained with several seeds).")] = "",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "cpu",
    texts: Annotated[int, typer.Option("--texts", help="Test sentences classified for the throughput figures.", min=1)] = 2000,
    threads: Annotated[int, typer.Option("--threads", help=THREADS_HELP, min=0)] = 0,
) -> None:
    """Temperature scaling and seed ensembles on the project's trained seeds, without retraining: per task, test
    macro-F1, ECE (15 bins) and Brier before / after a dev-fitted temperature for every seed (mean ± std) and for
    the ensemble of all seeds, and reviews/s of the ensemble against the saved seed."""
    from pipeline.bench.calibration import benchmark_calibration, report_lines

    _set_inference_threads(threads)
    tasks = [name.strip() for name in task.split(",") if name.strip()]
    result = benchmark_calibration(project_dir=state.project_dir, tasks=tasks, device=device, throughput_texts=texts)
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    out = console()
    for line in report_lines(result):
        out.print(line, highlight=False)
