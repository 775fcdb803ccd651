"""Batch classification of reviews and attention explanations (no CLI code here).

A review (one input row) is one *document*: it is tokenized whole, with the same
tokenizer and split mode as the training data, and classified by each task's
BiLSTM + attention model. A model reads at most ``max_tokens`` tokens at once
(``train_<task>.max_tokens``, 200 by default). A longer review is, by default,
*aggregated*: cut into consecutive windows of ``max_tokens`` tokens, each window
classified, and the class probabilities averaged with weights proportional to the
window lengths (attention weights are scaled the same way, so they still sum to 1
over the whole review). ``long_policy="truncate"`` keeps only the first window.

Rows that cannot be classified (empty or whitespace-only text, bytes that are not
UTF-8, text longer than ``max_chars`` characters, a missing column or field, a bad
JSON line) become output rows with an ``error`` message; the rest of the batch goes on.

Everything streams: rows are read lazily, classified ``batch_size`` at a time and
written out in input order, so memory does not grow with the input size.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

TASKS = ("topic", "sentiment")
INPUT_FORMATS = ("txt", "csv", "tsv", "jsonl")
OUTPUT_FORMATS = ("jsonl", "csv")
LONG_POLICIES = ("aggregate", "truncate")
DEFAULT_MAX_CHARS = 10_000
DEFAULT_BATCH_SIZE = 256
DEFAULT_TOP_TOKENS = 5


# ------------------------------------------------------------------ reading
@dataclass
class InputRecord:
    """One input row: its id, its text (None when unreadable) and why it cannot be classified."""

    id: str
    text: str | None
    error: str | None = None


def detect_input_format(path: str, explicit: str | None) -> str:
    if explicit:
        if explicit not in INPUT_FORMATS:
            raise PipelineError(f"Unknown input format '{explicit}'.", hint=f"Valid formats: {', '.join(INPUT_FORMATS)}.")
        return explicit
    if path == "-":
        return "txt"
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    suffix = suffixes[-1].lstrip(".") if suffixes else ""
    if suffix in INPUT_FORMATS:
        return suffix
    if suffix in ("text", ""):
        return "txt"
    if suffix == "json":
        return "jsonl"
    raise PipelineError(
        f"Cannot tell the format of {path} from its extension.",
        hint=f"Use a .txt, .csv, .tsv or .jsonl file, or pass --input-format ({', '.join(INPUT_FORMATS)}).",
    )


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    if not Path(path).exists():
        raise PipelineError(f"Input file {path} does not exist.", hint="Pass a .txt, .csv, .tsv or .jsonl file, or - for stdin.")
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _check_text(text: str, max_chars: int) -> str | None:
    """Why ``text`` cannot be classified, or None."""
    if not text:
        return "empty text"
    if text.isspace():
        return "whitespace-only text"
    if len(text) > max_chars:
        return f"over-long text: {len(text)} characters (limit {max_chars}, see --max-chars)"
    return None


def _decode_line(raw: bytes, line_number: int) -> tuple[str, str | None]:
    """UTF-8 decode one line; on failure the replacement-decoded text and an error message."""
    if line_number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # byte-order mark written by some editors
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", errors="replace"), f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"


def _strip_newline(raw: bytes) -> bytes:
    return raw.rstrip(b"\r\n")


def read_records(
    path: str,
    *,
    input_format: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> Iterator[InputRecord]:
    """Stream ``InputRecord``s from ``path`` (``-`` = stdin); ``text_column`` is the CSV/TSV
    column or the JSONL field. Problems of a single row become ``InputRecord.error``;
    problems of the whole input (missing file, no such column in the header) raise
    ``PipelineError`` here, before anything is written."""
    kind = detect_input_format(path, input_format)
    handle = _open_binary(path)
    try:
        if kind == "txt":
            rows = _read_txt(handle, max_chars)
        elif kind == "jsonl":
            rows = _read_jsonl(handle, text_column, id_column, max_chars)
        else:
            rows = _read_delimited(handle, "," if kind == "csv" else "\t", text_column, id_column, max_chars, path)
    except BaseException:
        _close(handle)
        raise
    return _closing(rows, handle)


def _close(handle: IO[bytes]) -> None:
    if handle is not sys.stdin.buffer:
        handle.close()


def _closing(rows: Iterator[InputRecord], handle: IO[bytes]) -> Iterator[InputRecord]:
    try:
        yield from rows
    finally:
        _close(handle)


def _read_txt(handle: IO[bytes], max_chars: int) -> Iterator[InputRecord]:
    for line_number, raw in enumerate(handle, start=1):
        text, error = _decode_line(_strip_newline(raw), line_number)
        yield InputRecord(id=str(line_number), text=text, error=error or _check_text(text, max_chars))


def _read_jsonl(handle: IO[bytes], text_field: str, id_field: str | None, max_chars: int) -> Iterator[InputRecord]:
    for line_number, raw in enumerate(handle, start=1):
        line, error = _decode_line(_strip_newline(raw), line_number)
        record_id = str(line_number)
        if error:
            yield InputRecord(id=record_id, text=None, error=error)
            continue
        if not line.strip():
            yield InputRecord(id=record_id, text=None, error="empty line")
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield InputRecord(id=record_id, text=None, error=f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(data, dict):
            yield InputRecord(id=record_id, text=None, error="JSON line is not an object")
            continue
        if id_field and data.get(id_field) is not None:
            record_id = str(data[id_field])
        if text_field not in data:
            yield InputRecord(id=record_id, text=None, error=f"missing field '{text_field}' (see --text-field)")
            continue
        text = data[text_field]
        if not isinstance(text, str):
            yield InputRecord(id=record_id, text=None, error=f"field '{text_field}' is not a string")
            continue
        yield InputRecord(id=record_id, text=text, error=_check_text(text, max_chars))


def _read_delimited(handle: IO[bytes], delimiter: str, text_column: str, id_column: str | None, max_chars: int, path: str) -> Iterator[InputRecord]:
    """Reads the header now (so a wrong --text-column fails at once), returns a row generator."""
    # surrogateescape keeps undecodable bytes as lone surrogates, so one bad row is
    # reported on that row instead of stopping the whole file.
    stream = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
    # A huge field must reach the over-long check, not crash the csv module.
    csv.field_size_limit(max(csv.field_size_limit(), 64 * max_chars + 1_000_000))
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        header = [_clean(h).strip() for h in next(reader)]
    except StopIteration:
        return iter(())
    if text_column not in header:
        raise PipelineError(
            f"{path} has no column '{text_column}'.",
            hint=f"Pass --text-column with one of its columns: {', '.join(repr(h) for h in header[:20])}.",
        )
    text_index = header.index(text_column)
    id_index = header.index(id_column) if id_column and id_column in header else None
    if id_column and id_index is None:
        raise PipelineError(f"{path} has no column '{id_column}'.", hint=f"Pass --id-column with one of: {', '.join(header[:20])}.")
    return _delimited_rows(reader, text_column, text_index, id_index, max_chars, "CSV" if delimiter == "," else "TSV")


def _delimited_rows(reader, text_column: str, text_index: int, id_index: int | None, max_chars: int, kind: str) -> Iterator[InputRecord]:
    row_number = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row_number += 1
            yield InputRecord(id=str(row_number), text=None, error=f"malformed {kind} row ({exc})")
            continue
        row_number += 1
        record_id = str(row_number)
        if id_index is not None and id_index < len(row) and row[id_index]:
            record_id = _clean(row[id_index])
        if text_index >= len(row):
            yield InputRecord(id=record_id, text=None, error=f"missing column '{text_column}' (row has {len(row)} fields)")
            continue
        text = row[text_index]
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            yield InputRecord(id=record_id, text=_clean(text), error="not valid UTF-8")
            continue
        yield InputRecord(id=record_id, text=text, error=_check_text(text, max_chars))


def _clean(text: str) -> str:
    """Replace lone surrogates (undecodable bytes) by U+FFFD so the text can be written out."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


# ------------------------------------------------------------- classifying
@dataclass
class TaskPrediction:
    label: str
    probabilities: dict[str, float]
    tokens: list[str]  # surface forms of the review (all windows)
    weights: list[float]  # attention weight per token, summing to 1 over the review
    windows: int = 1

    def top_tokens(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most attended tokens; a repeated token counts once, with its highest weight."""
        best: dict[str, float] = {}
        for token, weight in zip(self.tokens, self.weights):
            if weight > best.get(token, -1.0):
                best[token] = weight
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]


@dataclass
class ReviewClassifier:
    """The trained models of ``tasks`` plus the project's tokenizer.

    ``classify([text, ...])`` -> one ``{task: TaskPrediction}`` per text.
    """

    project_dir: Path
    tasks: tuple[str, ...] = TASKS
    device: str = "cpu"
    long_policy: str = "aggregate"
    batch_size: int = DEFAULT_BATCH_SIZE
    # int8 dynamic quantization of the LSTM and linear layers (CPU only): ~1.6x faster models,
    # labels agree with fp32 on >99% of KNBC test sentences (`jpipe bench classify` measures it).
    int8: bool = False
    models: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pipeline.models.classifier import load_classifier
        from pipeline.models.runtime import pick_device
        from pipeline.paths import CLASSIFIER_DIRS
        from pipeline.text.tokenize import load_tokenizer, tokenized_split_mode

        if self.long_policy not in LONG_POLICIES:
            raise PipelineError(f"Unknown long-review policy '{self.long_policy}'.", hint=f"Valid: {', '.join(LONG_POLICIES)}.")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise PipelineError(f"Unknown task(s): {', '.join(unknown) or '(none)'}.", hint=f"Valid tasks: {', '.join(TASKS)} (comma-separated).")
        device = pick_device(self.device)
        for task in self.tasks:
            directory = Path(self.project_dir) / CLASSIFIER_DIRS[task]
            if not (directory / "config.json").exists():
                raise PipelineError(f"No trained {task} classifier in {directory}.", hint=f"Train it with `jpipe run train_{task}` (or `jpipe run`).")
            self.models[task] = load_classifier(directory, device=device)
            if self.int8:
                if device.type != "cpu":
                    raise PipelineError("--int8 runs on the CPU only.", hint="Drop --int8, or use --device cpu.")
                self.models[task].model = quantize_int8(self.models[task].model)
        # The tokenizer and split mode of the training data; POS is not needed by the models.
        self.tokenizer = load_tokenizer(tokenized_split_mode(self.project_dir), with_pos=False)

    @property
    def max_tokens(self) -> dict[str, int]:
        return {task: model.max_tokens for task, model in self.models.items()}

    def tokenize(self, text: str) -> dict[str, list[str]]:
        return self.tokenizer.tokenize(text)

    def classify(self, texts: list[str]) -> list[dict[str, TaskPrediction]]:
        tokenized = [self.tokenize(text) for text in texts]
        return self.classify_tokens(tokenized)

    def classify_tokens(self, tokenized: list[dict[str, list[str]]]) -> list[dict[str, TaskPrediction]]:
        results: list[dict[str, TaskPrediction]] = [{} for _ in tokenized]
        for task, loaded in self.models.items():
            for index, prediction in enumerate(self._predict_task(loaded, tokenized)):
                results[index][task] = prediction
        return results

    def _predict_task(self, loaded, tokenized: list[dict[str, list[str]]]) -> list[TaskPrediction]:
        import numpy as np
        import torch

        from pipeline.models.batching import pad_batch

        window = loaded.max_tokens
        # windows: (document index, start token, ids); a document yields >= 1 window
        windows: list[tuple[int, int, np.ndarray]] = []
        for doc, tokens in enumerate(tokenized):
            ids = np.asarray(loaded.encode(tokens[loaded.token_field]), dtype=np.int64)
            starts = [0] if self.long_policy == "truncate" else range(0, max(1, len(ids)), window)
            for start in starts:
                windows.append((doc, start, ids[start : start + window]))
        sequences = [w[2] for w in windows]
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: little padding
        num_classes = len(loaded.labels)
        probabilities = np.zeros((len(windows), num_classes), dtype=np.float32)
        attention: list[np.ndarray | None] = [None] * len(windows)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                indices = order[start : start + self.batch_size]
                ids, batch_lengths = pad_batch(sequences, indices, pad_index=loaded.vocab.pad_index)
                logits, weights = loaded.model(torch.from_numpy(ids).to(loaded.device), torch.from_numpy(batch_lengths))
                probabilities[indices] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                weights = weights.float().cpu().numpy()
                for row, index in enumerate(indices):
                    attention[index] = weights[row, : batch_lengths[row]]

        predictions: list[TaskPrediction] = []
        cursor = 0
        for doc, tokens in enumerate(tokenized):
            surfaces = tokens["surface"]
            doc_probs = np.zeros(num_classes, dtype=np.float64)
            doc_weights = np.zeros(max(1, len(surfaces)), dtype=np.float64)
            total = 0
            count = 0
            while cursor < len(windows) and windows[cursor][0] == doc:
                _, begin, ids = windows[cursor]
                size = len(ids)
                doc_probs += probabilities[cursor] * size
                doc_weights[begin : begin + size] = attention[cursor][: len(doc_weights) - begin] * size
                total += size
                count += 1
                cursor += 1
            doc_probs /= max(total, 1)
            doc_weights /= max(total, 1)
            label_index = int(doc_probs.argmax())
            kept = len(surfaces) if self.long_policy == "aggregate" else min(len(surfaces), window)
            predictions.append(
                TaskPrediction(
                    label=loaded.labels[label_index],
                    probabilities={label: round(float(p), 4) for label, p in zip(loaded.labels, doc_probs)},
                    tokens=list(surfaces[:kept]),
                    weights=[float(w) for w in doc_weights[:kept]],
                    windows=count,
                )
            )
        return predictions


def quantize_int8(model):
    """Dynamic int8 quantization of ``nn.LSTM`` / ``nn.GRU`` / ``nn.Linear`` (weights int8, activations fp32)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch >= 2.10 points to torchao for new code; the eager API is still the one that covers nn.LSTM.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8)


# ---------------------------------------------------------------- streaming
def _batched(records: Iterable[InputRecord], size: int) -> Iterator[list[InputRecord]]:
    batch: list[InputRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _tokenize_batch(batch: list[InputRecord], classifier: ReviewClassifier) -> tuple[list[InputRecord], list[dict | None], list[str | None]]:
    """Tokens (or the reason there are none) of every record of a batch."""
    tokenized: list[dict[str, list[str]] | None] = []
    errors: list[str | None] = []
    for record in batch:
        if record.error:
            tokenized.append(None)
            errors.append(record.error)
            continue
        try:
            tokens = classifier.tokenize(record.text)
        except Exception as exc:  # noqa: BLE001 - one bad row must not stop the batch
            tokenized.append(None)
            errors.append(f"tokenizer failed ({type(exc).__name__}: {exc})")
            continue
        if not tokens["surface"]:
            tokenized.append(None)
            errors.append("no tokens in text")
            continue
        tokenized.append(tokens)
        errors.append(None)
    return batch, tokenized, errors


def classify_records(records: Iterable[InputRecord], classifier: ReviewClassifier, *, top_tokens: int = DEFAULT_TOP_TOKENS) -> Iterator[dict[str, Any]]:
    """Output rows (dicts) in input order: ``id``, ``text``, one entry per task, ``error``.

    Two-stage pipeline: a worker thread reads and tokenizes batch i+1 while this
    thread runs the models on batch i (torch releases the GIL inside its kernels),
    so on two cores tokenization and inference overlap. At most two batches are
    in memory at a time.
    """
    from concurrent.futures import ThreadPoolExecutor

    batches = _batched(records, classifier.batch_size)

    def next_batch():
        batch = next(batches, None)
        return None if batch is None else _tokenize_batch(batch, classifier)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-tokenize") as pool:
        pending = pool.submit(next_batch)
        while True:
            prepared = pending.result()
            if prepared is None:
                return
            pending = pool.submit(next_batch)  # only the worker ever touches ``batches``
            batch, tokenized, errors = prepared
            good = [i for i, t in enumerate(tokenized) if t is not None]
            predictions = classifier.classify_tokens([tokenized[i] for i in good]) if good else []
            by_row = dict(zip(good, predictions))
            for index, record in enumerate(batch):
                row: dict[str, Any] = {"id": record.id, "text": record.text}
                prediction = by_row.get(index)
                for task in classifier.tasks:
                    if prediction is None:
                        row[task] = None
                    else:
                        p = prediction[task]
                        row[task] = {
                            "label": p.label,
                            "probabilities": p.probabilities,
                            "top_tokens": [[token, round(weight, 4)] for token, weight in p.top_tokens(top_tokens)],
                        }
                row["error"] = errors[index]
                yield row


class OutputWriter:
    """Writes output rows as JSONL (nested) or CSV (flat columns) to a text handle."""

    def __init__(self, handle: IO[str], *, output_format: str, tasks: tuple[str, ...], labels: dict[str, list[str]]) -> None:
        if output_format not in OUTPUT_FORMATS:
            raise PipelineError(f"Unknown output format '{output_format}'.", hint=f"Valid formats: {', '.join(OUTPUT_FORMATS)}.")
        self.handle = handle
        self.format = output_format
        self.tasks = tasks
        self.labels = labels
        self.columns = ["id", "text"]
        for task in tasks:
            self.columns += [task] + [f"{task}_p_{label}" for label in labels[task]] + [f"{task}_top_tokens"]
        self.columns.append("error")
        if output_format == "csv":
            self.writer = csv.writer(handle, lineterminator="\n")
            self.writer.writerow(self.columns)

    def write(self, row: dict[str, Any]) -> None:
        if self.format == "jsonl":
            self.handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            return
        values: list[Any] = [row["id"], row["text"] if row["text"] is not None else ""]
        for task in self.tasks:
            result = row.get(task)
            if result is None:
                values += [""] * (len(self.labels[task]) + 2)
            else:
                values.append(result["label"])
                values += [result["probabilities"][label] for label in self.labels[task]]
                values.append(" ".join(f"{token}:{weight:.3f}" for token, weight in result["top_tokens"]))
        values.append(row["error"] or "")
        self.writer.writerow(values)


@dataclass
class ClassifySummary:
    rows: int = 0
    classified: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)


def run_classification(
    *,
    records: Iterable[InputRecord],
    classifier: ReviewClassifier,
    handle: IO[str],
    output_format: str,
    top_tokens: int = DEFAULT_TOP_TOKENS,
    progress: bool = True,
) -> ClassifySummary:
    """Classify ``records`` and write them to ``handle``; returns counts."""
    from tqdm import tqdm

    writer = OutputWriter(handle, output_format=output_format, tasks=classifier.tasks, labels={t: m.labels for t, m in classifier.models.items()})
    summary = ClassifySummary()
    bar = tqdm(desc="classify", unit=" reviews", file=sys.stderr, disable=not progress, mininterval=0.5, smoothing=0.1)
    try:
        for row in classify_records(records, classifier, top_tokens=top_tokens):
            writer.write(row)
            summary.rows += 1
            if row["error"]:
                summary.errors += 1
                if len(summary.error_examples) < 5:
                    summary.error_examples.append(f"row {row['id']}: {row['error']}")
            else:
                summary.classified += 1
            bar.update(1)
    finally:
        bar.close()
    return summary


# ------------------------------------------------------------------ explain
def explain(text: str, classifier: ReviewClassifier) -> dict[str, Any]:
    """Label, probabilities and per-token attention of each task for one text."""
    problem = _check_text(text, math.inf)  # type: ignore[arg-type]
    if problem:
        raise PipelineError(f"Cannot explain: {problem}.", hint='Pass a Japanese sentence, e.g. jpipe explain "ラーメンが美味しかった。"')
    prediction = classifier.classify([text])[0]
    return {
        "text": text,
        "tasks": {
            task: {"label": p.label, "probabilities": p.probabilities, "tokens": p.tokens, "weights": [round(w, 5) for w in p.weights], "windows": p.windows}
            for task, p in prediction.items()
        },
    }


def explanation_html(explanation: dict[str, Any], task: str) -> str:
    """A standalone HTML page: the tokens on a white-to-red background by attention weight."""
    from html import escape

    info = explanation["tasks"][task]
    peak = max(info["weights"], default=0.0) or 1.0
    spans = []
    for token, weight in zip(info["tokens"], info["weights"]):
        alpha = weight / peak
        spans.append(
            f'<span class="tok" style="background: rgba(220, 38, 38, {alpha:.3f}); color: {"#fff" if alpha > 0.6 else "#111"}" '
            f'title="{weight:.4f}">{escape(token)}</span>'
        )
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td>{prob:.3f}</td><td><div class='bar' style='width:{prob * 200:.0f}px'></div></td></tr>"
        for label, prob in info["probabilities"].items()
    )
    return f"""<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><title>jpipe explain: {escape(task)}</title>
<style>
body {{ font-family: "Noto Sans JP", "Hiragino Sans", "Yu Gothic", sans-serif; margin: 2em; max-width: 60em; }}
.tok {{ display: inline-block; padding: 0.15em 0.2em; margin: 0.1em; border-radius: 3px; font-size: 1.3em; }}
.bar {{ height: 0.8em; background: #2563eb; }}
td {{ padding: 0.1em 0.6em; }}
</style></head><body>
<h1>{escape(task)}: {escape(info["label"])}</h1>
<p>Attention weight of each token (darker = more weight; hover for the value; weights sum to 1).</p>
<div>{"".join(spans)}</div>
<h2>Class probabilities</h2><table>{rows}</table>
<p><small>Text: {escape(explanation["text"])}</small></p>
</body></html>
"""


def write_explanation_html(explanation: dict[str, Any], html_dir: Path) -> dict[str, Path]:
    """One HTML file per task, named after the task and a hash of the text; returns their paths."""
    from pipeline.io import atomic_open, sha256_text

    html_dir.mkdir(parents=True, exist_ok=True)
    digest = sha256_text(explanation["text"])[:10]
    paths = {}
    for task in explanation["tasks"]:
        path = html_dir / f"explain-{task}-{digest}.html"
        with atomic_open(path) as handle:
            handle.write(explanation_html(explanation, task))
        paths[task] = path
    return paths


# ---------------------------------------------------------------- benchmark
SHORT_REVIEWS = [
    "ラーメンがとても美味しかった。",
    "この携帯は電池の持ちが悪い。",
    "紅葉の季節の京都は最高です。",
    "昨日の試合は本当に残念だった。",
    "店員さんの対応が丁寧で好印象でした。",
    "画面が大きくて見やすいです。",
    "お寺が多くて一日では回りきれない。",
    "応援しているチームが優勝した！",
]


def benchmark_classify(*, project_dir: Path, reviews: int = 20_000, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", int8: bool = False) -> dict[str, Any]:
    """Reviews/s end to end (read rows, tokenize, both models, write JSONL to /dev/null) and peak RSS.

    With ``int8`` the models are quantized, and the share of labels that agree with the fp32
    models on the benchmark texts is reported too."""
    import resource
    import time

    import torch

    from pipeline.paths import TOKENS

    tokens_path = Path(project_dir) / TOKENS
    texts: list[str] = []
    if tokens_path.exists():
        from pipeline.io import read_jsonl

        # Short KNBC test sentences as "short reviews" (unseen in training).
        texts = [row["text"] for row in read_jsonl(tokens_path) if row.get("split") == "test" and 5 <= len(row["text"]) <= 80]
    source = "KNBC test sentences" if texts else "built-in short reviews"
    texts = texts or SHORT_REVIEWS
    started_load = time.perf_counter()
    classifier = ReviewClassifier(project_dir=Path(project_dir), device=device, batch_size=batch_size, int8=int8)
    load_seconds = time.perf_counter() - started_load
    agreement = None
    if int8:
        reference = ReviewClassifier(project_dir=Path(project_dir), device=device, batch_size=batch_size)
        sample = texts[:2000]
        fast, exact = classifier.classify(sample), reference.classify(sample)
        agreement = {task: round(sum(f[task].label == e[task].label for f, e in zip(fast, exact)) / len(sample), 4) for task in classifier.tasks}
        del reference

    def records() -> Iterator[InputRecord]:
        for index in range(reviews):
            yield InputRecord(id=str(index + 1), text=texts[index % len(texts)])

    with open(os.devnull, "w", encoding="utf-8") as sink:
        run_classification(records=(InputRecord(id="w", text=t) for t in texts[:batch_size]), classifier=classifier, handle=sink, output_format="jsonl", progress=False)
        started = time.perf_counter()
        summary = run_classification(records=records(), classifier=classifier, handle=sink, output_format="jsonl", progress=False)
        seconds = time.perf_counter() - started
    # Tokenization alone, for the split of the time.
    sample = [texts[i % len(texts)] for i in range(min(reviews, 5000))]
    started = time.perf_counter()
    for text in sample:
        classifier.tokenize(text)
    tokenize_rate = len(sample) / (time.perf_counter() - started)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "reviews": summary.rows,
        "classified": summary.classified,
        "source": source,
        "mean_characters": round(sum(len(t) for t in texts) / len(texts), 1),
        "tasks": list(classifier.tasks),
        "device": device,
        "int8": int8,
        "label_agreement_with_fp32": agreement,
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "reviews_per_second": round(summary.rows / seconds, 1),
        "tokenize_only_reviews_per_second": round(tokenize_rate, 1),
        "model_load_seconds": round(load_seconds, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }
