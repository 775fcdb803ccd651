"""Streaming batch classification of reviews with several task models (``jpipe classify``).

``TaskClassifiers`` holds one :class:`~pipeline.inference.classifier.Classifier` per task,
each loaded with ``Classifier.from_dir`` from the project's model directories.
``classify_records`` turns ``InputRecord``s (``pipeline.data.readers``) into output rows
and ``OutputWriter`` writes them as JSONL or CSV.

Rows that cannot be classified (empty or whitespace-only text, bytes that are not
UTF-8, over-long text, a missing column or field, a bad JSON line, text without tokens)
become output rows with an ``error`` message; the rest of the batch goes on.

Every row read also carries ``language`` (``ja`` or ``other``) and ``warning``
(``pipeline.text.language.check_language``): a text that is not Japanese keeps its
predicted labels, with a warning that they should not be trusted.

Everything streams: rows are read lazily, classified ``batch_size`` at a time and
written out in input order, so memory does not grow with the input size.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.data.readers import InputRecord
from pipeline.errors import ConfigError
from pipeline.inference.classifier import DEFAULT_BATCH_SIZE, Classifier, Prediction

DEFAULT_TASKS = ("topic", "sentiment")  # the built-in KNBC tasks ([tasks.NAME] adds more)
OUTPUT_FORMATS = ("jsonl", "csv")
DEFAULT_TOP_TOKENS = 5
# Probabilities are written with 8 decimals: equal to Classifier.predict to < 1e-8,
# while a CSV cell stays short (the float32 softmax has ~7 significant digits anyway).
PROBABILITY_DECIMALS = 8


def parse_tasks(text: str, *, known: Iterable[str] = DEFAULT_TASKS) -> tuple[str, ...]:
    """``"topic, sentiment"`` -> ``("topic", "sentiment")``; a task not in ``known`` or no task is an error."""
    known = tuple(known)
    tasks = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in tasks if t not in known]
    if bad or not tasks:
        raise ConfigError(
            "E109",
            f"Unknown task(s): {', '.join(bad) or '(none)'}.",
            hint=f"Valid tasks: {', '.join(known)} (comma-separated); `jpipe task list` shows them, `jpipe task add` adds one.",
        )
    return tasks


def project_tasks(project_dir: str | os.PathLike, *, trained_only: bool = False) -> tuple[str, ...]:
    """The enabled tasks of the project's config (with ``trained_only``: those with a model directory)."""
    from pipeline.config import load_config
    from pipeline.paths import classifier_dir

    names = load_config(project_dir).task_names
    if trained_only:
        names = [name for name in names if (Path(project_dir) / classifier_dir(name) / "config.json").exists()]
    return tuple(names)


def output_format_for(path: str | os.PathLike | None, explicit: str | None = None) -> str:
    """``explicit``, else the output path's extension when it names a format, else ``jsonl``."""
    if explicit is None:
        suffix = Path(path).suffix.lower().lstrip(".") if path else ""
        explicit = suffix if suffix in OUTPUT_FORMATS else "jsonl"
    if explicit not in OUTPUT_FORMATS:
        raise ConfigError("E109", f"Unknown output format '{explicit}'.", hint=f"Valid formats: {', '.join(OUTPUT_FORMATS)}.")
    return explicit


def task_model_dirs(project_dir: str | os.PathLike, *, tasks: Iterable[str] | None = None) -> dict[str, Path]:
    """The model directory of each of ``tasks`` (default: every trained task, else the first configured
    one, whose missing model is then the error)."""
    from pipeline.models.model_dir import require_model_dir
    from pipeline.paths import classifier_dir

    known = project_tasks(project_dir)
    if tasks is None:
        tasks = project_tasks(project_dir, trained_only=True) or known[:1]
    directories = {}
    for task in parse_tasks(",".join(tasks), known=known):
        hint = f"Train the {task} classifier with `jpipe run train_{task}` (or `jpipe run`)."
        directories[task] = require_model_dir(Path(project_dir) / classifier_dir(task), train_hint=hint)
    return directories


@dataclass
class TaskClassifiers:
    """One ``Classifier`` per task; texts are tokenized once per distinct tokenizer."""

    classifiers: dict[str, Classifier]
    batch_size: int = DEFAULT_BATCH_SIZE

    @classmethod
    def from_project(cls, project_dir: str | os.PathLike, *, tasks: Iterable[str] | None = None, **options: Any) -> TaskClassifiers:
        """The project's trained models of ``tasks`` (default: every trained task, else the first
        configured one, whose missing model is then the error); ``options`` go to ``Classifier.from_dir``."""
        classifiers = {task: Classifier.from_dir(path, **options) for task, path in task_model_dirs(project_dir, tasks=tasks).items()}
        return cls(classifiers=classifiers, batch_size=options.get("batch_size", DEFAULT_BATCH_SIZE))

    @classmethod
    def from_engine_models(cls, models: Any) -> TaskClassifiers:
        """The models of an engine's settings (the worker pool's or Ray's: ``model_dirs``, ``device``,
        ``long_policy``, ``batch_size``, ``int8``, ``calibrated``, ``threads``), with torch at ``threads`` threads."""
        import torch

        torch.set_num_threads(max(1, models.threads))
        options = dict(
            device=models.device,
            long_policy=models.long_policy,
            batch_size=models.batch_size,
            int8=models.int8,
            calibrated=models.calibrated,
        )
        classifiers = {task: Classifier.from_dir(path, **options) for task, path in models.model_dirs.items()}
        return cls(classifiers=classifiers, batch_size=models.batch_size)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.classifiers)

    @property
    def labels(self) -> dict[str, list[str]]:
        return {task: c.labels for task, c in self.classifiers.items()}

    def tokenize(self, text: str) -> dict[str, dict[str, list[str]]]:
        """Tokens of ``text`` per split mode used by the models (usually one)."""
        modes = {c.split_mode: c for c in self.classifiers.values()}
        return {mode: c.tokenize(text) for mode, c in modes.items()}

    def classify(self, texts: list[str]) -> list[dict[str, Prediction]]:
        """``{task: Prediction}`` (with attention) per text."""
        return self.classify_tokens([self.tokenize(text) for text in texts])

    def classify_tokens(self, tokenized: list[dict[str, dict[str, list[str]]]]) -> list[dict[str, Prediction]]:
        results: list[dict[str, Prediction]] = [{} for _ in tokenized]
        for task, classifier in self.classifiers.items():
            for index, prediction in enumerate(classifier.predict_tokens([t[classifier.split_mode] for t in tokenized])):
                results[index][task] = prediction
        return results


# ---------------------------------------------------------------- streaming
def chunked(records: Iterable[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    """Lists of ``size`` records (the last one shorter), read lazily."""
    batch: list[InputRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _tokenize_batch(
    batch: list[InputRecord], classifiers: TaskClassifiers
) -> tuple[list[InputRecord], list[dict | None], list[str | None]]:
    """Tokens (or the reason there are none) of every record of a batch."""
    tokenized: list[dict | None] = []
    errors: list[str | None] = []
    for record in batch:
        tokens, error = None, record.error
        if error is None:
            try:
                tokens = classifiers.tokenize(record.text)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the batch
                error = f"tokenizer failed ({type(exc).__name__}: {exc})"
        if tokens is not None and not any(t["surface"] for t in tokens.values()):
            tokens, error = None, "no tokens in text"
        tokenized.append(tokens)
        errors.append(error)
    return batch, tokenized, errors


def _task_output(prediction: Prediction | None, top_tokens: int) -> dict[str, Any] | None:
    if prediction is None:
        return None
    return {
        "label": prediction.label,
        "probabilities": {label: round(p, PROBABILITY_DECIMALS) for label, p in prediction.probabilities.items()},
        "top_tokens": [[token, round(weight, 4)] for token, weight in prediction.top_tokens(top_tokens)],
    }


def classify_records(
    records: Iterable[InputRecord], classifiers: TaskClassifiers, *, top_tokens: int = DEFAULT_TOP_TOKENS
) -> Iterator[dict[str, Any]]:
    """Output rows (dicts) in input order: ``id``, ``text``, one entry per task, ``error``.

    Two-stage pipeline: a worker thread reads and tokenizes batch i+1 while this
    thread runs the models on batch i (torch releases the GIL inside its kernels),
    so on two cores tokenization and inference overlap. At most two batches are
    in memory at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    batches = chunked(records, classifiers.batch_size)

    def next_batch():
        batch = next(batches, None)
        return None if batch is None else _tokenize_batch(batch, classifiers)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-tokenize") as pool:
        pending = pool.submit(next_batch)
        while (prepared := pending.result()) is not None:
            pending = pool.submit(next_batch)  # only the worker ever touches ``batches``
            yield from _output_rows(prepared, classifiers, top_tokens)


def classify_batch(batch: list[InputRecord], classifiers: TaskClassifiers, *, top_tokens: int = DEFAULT_TOP_TOKENS) -> list[dict[str, Any]]:
    """One batch of records -> its output rows, as ``classify_records`` makes them, without the reader thread
    (the Ray engine's actors call this: one process per actor already keeps a core busy)."""
    return list(_output_rows(_tokenize_batch(batch, classifiers), classifiers, top_tokens))


def _output_rows(prepared: tuple[list[InputRecord], list[dict | None], list[str | None]], classifiers: TaskClassifiers, top_tokens: int):
    """Run the models on the rows of a tokenized batch that have tokens; every row comes out, in order."""
    batch, tokenized, errors = prepared
    good = [i for i, t in enumerate(tokenized) if t is not None]
    by_row = dict(zip(good, classifiers.classify_tokens([tokenized[i] for i in good]) if good else [], strict=True))
    for index, record in enumerate(batch):
        prediction = by_row.get(index, {})
        row: dict[str, Any] = {"id": record.id, "text": record.text}
        row.update({task: _task_output(prediction.get(task), top_tokens) for task in classifiers.tasks})
        row.update(language_fields(record))
        row["error"] = errors[index]
        yield row


def language_fields(record: InputRecord) -> dict[str, str | None]:
    """``language`` (ja / other) and ``warning`` of a row the reader accepted; both None for a row it rejected."""
    if record.error is not None or record.text is None:
        return {"language": None, "warning": None}
    from pipeline.text.language import check_language

    check = check_language(record.text)
    return {"language": "ja" if check.japanese else "other", "warning": check.warning}


class OutputWriter:
    """Writes output rows as JSONL (nested) or CSV (flat columns) to a text handle."""

    def __init__(
        self, handle: IO[str], *, output_format: str, tasks: tuple[str, ...], labels: dict[str, list[str]], header: bool = True
    ) -> None:
        self.handle = handle
        self.format = output_format_for(None, output_format)
        self.tasks = tasks
        self.labels = labels
        self.columns = ["id", "text"]
        for task in tasks:
            self.columns += [task] + [f"{task}_p_{label}" for label in labels[task]] + [f"{task}_top_tokens"]
        self.columns += ["language", "warning", "error"]
        if self.format == "csv":
            self.writer = csv.writer(handle, lineterminator="\n")
            if header:
                self.writer.writerow(self.columns)

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        self.writer.writerow(["" if value is None else value for value in flat_values(row, tasks=self.tasks, labels=self.labels)])


def flat_values(row: dict[str, Any], *, tasks: tuple[str, ...], labels: dict[str, list[str]]) -> list[Any]:
    """An output row as the flat columns of ``OutputWriter.columns`` (CSV, parquet); None where a row has no value."""
    values: list[Any] = [row["id"], row["text"]]
    for task in tasks:
        result = row.get(task)
        if result is None:
            values += [None] * (len(labels[task]) + 2)
        else:
            values.append(result["label"])
            values += [result["probabilities"][label] for label in labels[task]]
            values.append(" ".join(f"{token}:{weight:.3f}" for token, weight in result["top_tokens"]))
    values += [row.get("language"), row.get("warning"), row["error"]]
    return values


@dataclass
class ClassifySummary:
    rows: int = 0
    classified: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    not_japanese: int = 0  # rows whose language check says "other" (they keep their labels, with a warning)
    not_japanese_examples: list[str] = field(default_factory=list)

    def add(self, *, row_id: str, error: str | None, warning: str | None) -> None:
        """Count one output row."""
        self.rows += 1
        if error:
            self.errors += 1
            if len(self.error_examples) < 5:
                self.error_examples.append(f"row {row_id}: {error}")
        else:
            self.classified += 1
        if warning:
            self.not_japanese += 1
            if len(self.not_japanese_examples) < 5:
                self.not_japanese_examples.append(f"row {row_id}: {warning}")


def run_classification(
    *,
    records: Iterable[InputRecord],
    classifiers: TaskClassifiers,
    handle: IO[str],
    output_format: str,
    top_tokens: int = DEFAULT_TOP_TOKENS,
    progress: bool = True,
) -> ClassifySummary:
    """Classify ``records`` and write them to ``handle``; returns counts."""
    from tqdm import tqdm

    writer = OutputWriter(handle, output_format=output_format, tasks=classifiers.tasks, labels=classifiers.labels)
    summary = ClassifySummary()
    bar = tqdm(desc="classify", unit=" reviews", file=sys.stderr, disable=not progress, mininterval=0.5, smoothing=0.1)
    try:
        for row in classify_records(records, classifiers, top_tokens=top_tokens):
            writer.write(row)
            summary.add(row_id=row["id"], error=row["error"], warning=row["warning"])
            bar.update(1)
    finally:
        bar.close()
    return summary
