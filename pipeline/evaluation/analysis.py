"""``jpipe analyze``: a batch of reviews summarised for an analyst (``analysis.json`` + a self-contained ``index.html``).

Every review is classified by every trained task (``pipeline.inference.batch.TaskClassifiers``) and, when the
project has a trained extractor, split into sentences whose opinions (評判) the extractor writes. The input
streams in batches: only counters, bounded top-k heaps and small samples are kept, so memory stays flat in
the number of reviews:

* label counts per task; the least confident reviews per task (smallest margin between the two most
  probable labels, a heap of ``least_confident`` entries);
* opinion targets and expressions: counts with positive / negative splits and at most ``examples`` example
  sentences each, in a counter of at most ``capacity`` distinct strings (beyond it the rarest half is
  dropped, and the report says its counts are lower bounds: ``pruned``);
* with a date column: label counts per day (distinct days only), binned at the end into weeks (a span up to
  ``WEEKLY_SPAN_DAYS``) or months; a date that does not parse keeps its row, is left out of the timeline and
  counted.

Rows that cannot be read or classified (as in ``jpipe classify``) are counted with a few examples.
"""

from __future__ import annotations

import heapq
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from pipeline.data.readers import InputRecord
from pipeline.errors import InputError

logger = logging.getLogger(__name__)

ANALYSIS_VERSION = 1
WEEKLY_SPAN_DAYS = 120  # a timeline spanning more days than this is binned by month
_SENTENCE_END = re.compile(r"[^。！？!?\n]*(?:[。！？!?]+|\n|$)")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日", "%Y-%m", "%Y/%m")
MAX_HIGHLIGHT_TOKENS = 160
# KNBC's implicit "unspecified" target (``[不定]``): an opinion about nothing named, left out of the top targets.
UNSPECIFIED_TARGETS = frozenset({"不定"})


@dataclass(frozen=True)
class AnalysisSettings:
    top: int = 20  # targets / expressions listed
    examples: int = 3  # example sentences kept per target / expression
    least_confident: int = 10  # per task
    capacity: int = 5000  # distinct targets (and expressions) counted before the rarest half is dropped
    error_examples: int = 5


# ------------------------------------------------------------------ pieces
def split_sentences(text: str) -> list[tuple[int, str]]:
    """``(start, sentence)`` of each sentence: up to and including 。！？!? (a run of them), or a line break."""
    result = []
    for match in _SENTENCE_END.finditer(text):
        piece = match.group(0)
        stripped = piece.strip()
        if stripped:
            result.append((match.start() + piece.index(stripped[0]), stripped))
    return result


def parse_date(value: str | None) -> date | None:
    """A date from ISO-like text (``2024-05-01``, ``2024/5/1``, ``2024-05-01T10:00``, ``2024年5月1日``, ``2024-05``); None if none."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        pass
    head = text.split("T")[0].split(" ")[0]
    for pattern in _DATE_FORMATS:
        try:
            return datetime.strptime(head, pattern).date()
        except ValueError:
            continue
    return None


def bucket_start(day: date, unit: str) -> date:
    """The Monday of ``day``'s ISO week (``week``) or the first of its month (``month``)."""
    return day - timedelta(days=day.weekday()) if unit == "week" else day.replace(day=1)


def timeline_buckets(per_day: dict[date, dict[str, Counter]], *, unit: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """Per-day label counts binned by week or month (``unit``; default: weeks for a span up to ``WEEKLY_SPAN_DAYS``)."""
    if not per_day:
        return unit or "week", []
    days = sorted(per_day)
    unit = unit or ("week" if (days[-1] - days[0]).days <= WEEKLY_SPAN_DAYS else "month")
    buckets: dict[date, dict[str, Counter]] = {}
    for day in days:
        into = buckets.setdefault(bucket_start(day, unit), {})
        for task, counts in per_day[day].items():
            into.setdefault(task, Counter()).update(counts)
    rows = []
    for start in sorted(buckets):
        counts = {task: dict(sorted(c.items())) for task, c in sorted(buckets[start].items())}
        total = sum(next(iter(buckets[start].values())).values()) if buckets[start] else 0
        rows.append({"start": start.isoformat(), "reviews": total, "counts": counts})
    return unit, rows


@dataclass
class TermCounter:
    """Counts of strings (targets or expressions) with +/- splits and a few examples; at most ``capacity`` strings.

    When a new string would pass ``capacity``, the rarest half is dropped (``pruned`` becomes True): counts of
    strings seen again after that are lower bounds. Memory is bounded by ``capacity`` x ``examples``.
    """

    capacity: int = 5000
    examples: int = 3
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    pruned: bool = False

    def add(self, key: str, *, polarity: str, example: dict[str, Any]) -> None:
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.capacity:
                self._prune()
            entry = self.entries[key] = {"count": 0, "positive": 0, "negative": 0, "neutral": 0, "examples": []}
        entry["count"] += 1
        entry[{"+": "positive", "-": "negative"}.get(polarity, "neutral")] += 1
        if len(entry["examples"]) < self.examples:
            entry["examples"].append(example)

    def _prune(self) -> None:
        keep = sorted(self.entries.items(), key=lambda kv: -kv[1]["count"])[: max(1, self.capacity // 2)]
        self.entries = dict(keep)
        self.pruned = True

    def top(self, k: int) -> list[tuple[str, dict[str, Any]]]:
        """The ``k`` most frequent strings (ties: the first seen first)."""
        return sorted(self.entries.items(), key=lambda kv: -kv[1]["count"])[:k]


@dataclass
class LeastConfident:
    """The ``size`` reviews with the smallest margin (top-1 minus top-2 probability) of one task: a bounded heap."""

    size: int = 10
    heap: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)

    def add(self, *, margin: float, seq: int, item: dict[str, Any]) -> None:
        entry = (-margin, -seq, item)  # the largest margin (then the latest row) is at the top, dropped first
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, entry)
        elif entry > self.heap[0]:
            heapq.heapreplace(self.heap, entry)

    def items(self) -> list[dict[str, Any]]:
        return [item for _, _, item in sorted(self.heap, key=lambda e: (-e[0], -e[1]))]


def margin_of(probabilities: dict[str, float]) -> tuple[float, float]:
    """(top-1 probability, top-1 minus top-2) of a prediction."""
    ranked = sorted(probabilities.values(), reverse=True)
    return ranked[0], ranked[0] - (ranked[1] if len(ranked) > 1 else 0.0)


def highlight(prediction, task: str) -> dict[str, Any] | None:
    """The review's tokens with the task's attention weights (at most ``MAX_HIGHLIGHT_TOKENS``), for shading."""
    if prediction is None or not prediction.tokens:
        return None
    tokens, weights = prediction.tokens[:MAX_HIGHLIGHT_TOKENS], prediction.weights[:MAX_HIGHLIGHT_TOKENS]
    return {"task": task, "tokens": list(tokens), "weights": [round(float(w), 4) for w in weights]}


# -------------------------------------------------------------- aggregate
@dataclass
class Analysis:
    """The running aggregate of a batch of reviews; ``to_json`` gives ``analysis.json``."""

    tasks: dict[str, list[str]]  # task -> labels
    settings: AnalysisSettings = field(default_factory=AnalysisSettings)
    date_column: str | None = None
    extractor_note: str | None = None  # why no opinions were extracted (None: extracted)
    rows: int = 0
    analyzed: int = 0
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    label_counts: dict[str, Counter] = field(default_factory=dict)
    least: dict[str, LeastConfident] = field(default_factory=dict)
    targets: TermCounter = field(default_factory=TermCounter)
    expressions: TermCounter = field(default_factory=TermCounter)
    polarity: Counter = field(default_factory=Counter)
    sentences: int = 0
    per_day: dict[date, dict[str, Counter]] = field(default_factory=dict)
    dated: int = 0
    bad_dates: int = 0
    bad_date_examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.settings
        self.label_counts = {task: Counter() for task in self.tasks}
        self.least = {task: LeastConfident(size=s.least_confident) for task in self.tasks}
        self.targets = TermCounter(capacity=s.capacity, examples=s.examples)
        self.expressions = TermCounter(capacity=s.capacity, examples=s.examples)

    @property
    def highlight_task(self) -> str | None:
        """The task whose attention shades the example reviews: sentiment when there is one, else the first."""
        return "sentiment" if "sentiment" in self.tasks else next(iter(self.tasks), None)

    def add_error(self, record: InputRecord, error: str) -> None:
        self.rows += 1
        self.errors += 1
        if len(self.error_examples) < self.settings.error_examples:
            self.error_examples.append(f"row {record.id}: {error}")

    def add(self, record: InputRecord, predictions: dict[str, Any], opinions: list[tuple[str, dict]] | None) -> None:
        """One classified review: its predictions per task and its (sentence, record) opinions (None: not extracted)."""
        self.rows += 1
        self.analyzed += 1
        seq = self.rows
        review = {
            "seq": seq,
            "id": record.id,
            "text": record.text,
            "labels": {task: p.label for task, p in predictions.items()},
            "highlight": highlight(predictions.get(self.highlight_task), self.highlight_task),
        }
        for task, prediction in predictions.items():
            self.label_counts[task][prediction.label] += 1
            top, margin = margin_of(prediction.probabilities)
            item = {"review": review, "label": prediction.label, "probability": round(top, 4), "margin": round(margin, 4)}
            self.least[task].add(margin=margin, seq=seq, item=item)
        if opinions is not None:
            self.sentences += len(split_sentences(record.text or ""))
        self._add_opinions(review, opinions)
        self._add_date(record, review["labels"])

    def _add_opinions(self, review: dict[str, Any], opinions: list[tuple[str, dict]] | None) -> None:
        for sentence, opinion in opinions or ():
            sign = opinion.get("polarity") or "none"
            self.polarity[sign] += 1
            example = {
                "review": review,
                "sentence": sentence,
                "type": opinion["type"],
                "polarity": sign,
                "expression": opinion["expression"],
            }
            self.expressions.add(opinion["expression"], polarity=sign, example=example)
            if opinion.get("target") and opinion["target"] not in UNSPECIFIED_TARGETS:
                self.targets.add(opinion["target"], polarity=sign, example={**example, "target": opinion["target"]})

    def _add_date(self, record: InputRecord, labels: dict[str, str]) -> None:
        if self.date_column is None:
            return
        value = (record.fields or {}).get(self.date_column)
        day = parse_date(value)
        if day is None:
            self.bad_dates += 1
            if len(self.bad_date_examples) < self.settings.error_examples:
                self.bad_date_examples.append(f"row {record.id}: {value!r}")
            return
        self.dated += 1
        counts = self.per_day.setdefault(day, {})
        for task, label in labels.items():
            counts.setdefault(task, Counter())[label] += 1

    # ------------------------------------------------------------ output
    def to_json(self, *, source: str | None = None, seconds: float | None = None) -> dict[str, Any]:
        """``analysis.json``: counts, top terms with examples, least confident reviews, timeline; the cited reviews."""
        cited: dict[int, dict[str, Any]] = {}

        def cite(review: dict[str, Any]) -> str:
            cited.setdefault(review["seq"], review)
            return review_anchor(review["seq"])

        tasks = {}
        for task, labels in self.tasks.items():
            counts = self.label_counts[task]
            least = [
                {**{k: v for k, v in item.items() if k != "review"}, "review": cite(item["review"])} for item in self.least[task].items()
            ]
            tasks[task] = {"labels": labels, "counts": {label: counts.get(label, 0) for label in labels}, "least_confident": least}
        result: dict[str, Any] = {
            "version": ANALYSIS_VERSION,
            "source": source,
            "rows": self.rows,
            "analyzed": self.analyzed,
            "errors": self.errors,
            "error_examples": self.error_examples,
            "highlight_task": self.highlight_task,
            "tasks": tasks,
            "opinions": self._opinions_json(cite),
            "timeline": self._timeline_json(),
        }
        if seconds is not None:
            result["seconds"] = round(seconds, 2)
            result["reviews_per_second"] = round(self.rows / seconds, 1) if seconds > 0 else None
        result["reviews"] = {review_anchor(seq): _review_json(review) for seq, review in sorted(cited.items())}
        return result

    def _opinions_json(self, cite) -> dict[str, Any]:
        extracted = self.extractor_note is None

        def terms(counter: TermCounter) -> list[dict[str, Any]]:
            rows = []
            for text, entry in counter.top(self.settings.top):
                examples = [{**{k: v for k, v in e.items() if k != "review"}, "review": cite(e["review"])} for e in entry["examples"]]
                rows.append({"text": text, **{k: entry[k] for k in ("count", "positive", "negative", "neutral")}, "examples": examples})
            return rows

        return {
            "extracted": extracted,
            "note": self.extractor_note,
            "sentences": self.sentences,
            "records": sum(self.polarity.values()),
            "polarity": {key: self.polarity.get(key, 0) for key in ("+", "-", "none")},
            "targets": terms(self.targets) if extracted else [],
            "expressions": terms(self.expressions) if extracted else [],
            "distinct_targets": len(self.targets.entries),
            "distinct_expressions": len(self.expressions.entries),
            "pruned": self.targets.pruned or self.expressions.pruned,
        }

    def _timeline_json(self) -> dict[str, Any] | None:
        if self.date_column is None:
            return None
        unit, buckets = timeline_buckets(self.per_day)
        return {
            "date_column": self.date_column,
            "unit": unit,
            "dated": self.dated,
            "bad_dates": self.bad_dates,
            "bad_date_examples": self.bad_date_examples,
            "buckets": buckets,
        }


def review_anchor(seq: int) -> str:
    """The HTML id of a cited review: its row number in the input (ids may hold any character)."""
    return f"review-{seq}"


def _review_json(review: dict[str, Any]) -> dict[str, Any]:
    return {"row": review["seq"], "id": review["id"], "text": review["text"], "labels": review["labels"], "highlight": review["highlight"]}


# ------------------------------------------------------------- extraction
@dataclass
class SentenceBatch:
    """The sentences of a batch of reviews, tokenized for the extractor (done in the reader thread)."""

    owners: list[int]  # the review (index in the batch's analyzed rows) of each sentence
    sentences: list[str]
    tokens: list[list[str]]


def prepare_sentences(extractor, texts: list[str]) -> SentenceBatch:
    """Split each review into sentences (``split_sentences``) and tokenize them as the extractor was trained."""
    batch = SentenceBatch(owners=[], sentences=[], tokens=[])
    for review, text in enumerate(texts):
        for _, sentence in split_sentences(text):
            batch.owners.append(review)
            batch.sentences.append(sentence)
            batch.tokens.append(extractor.tokenizer.tokenize(sentence)["surface"])
    return batch


def extract_sentences(extractor, sentences: list[str], tokens: list[list[str]]) -> list[list[dict[str, Any]]]:
    """Opinion records of many tokenized sentences, decoded greedily in one batch (a sentence of more than the
    extractor's ``max_tokens`` tokens goes through ``Extractor.extract_one``'s windows); no tokens: no record."""
    from pipeline.data.opinions import parse
    from pipeline.models.seq2seq import decode_ids, encode_source, pad_sources

    results: list[list[dict[str, Any]]] = [[] for _ in sentences]
    items, rows = [], []
    for index, (sentence, words) in enumerate(zip(sentences, tokens, strict=True)):
        if len(words) > extractor.max_tokens:
            results[index] = extractor.extract_one(sentence)
        elif words:
            vocabularies = {"source_vocab": extractor.source_vocab, "target_vocab": extractor.target_vocab}
            items.append(encode_source(words, max_tokens=extractor.max_tokens, **vocabularies))
            rows.append(index)
    if items:
        import torch

        tensors = pad_sources(items, target_vocab_size=len(extractor.target_vocab), device=extractor.device)
        with torch.inference_mode():
            hypotheses = extractor.model.greedy(*tensors, max_length=extractor.max_output_tokens)
        for index, item, hypothesis in zip(rows, items, hypotheses, strict=True):
            output = decode_ids(hypothesis.ids, item, target_vocab=extractor.target_vocab)
            results[index] = parse(output, text=sentences[index])
    return results


def review_opinions(extractor, prepared: SentenceBatch, reviews: int) -> list[list[tuple[str, dict[str, Any]]]]:
    """(sentence, record) of each of ``reviews`` reviews, the sentences of the whole batch decoded together."""
    found: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(reviews)]
    records = extract_sentences(extractor, prepared.sentences, prepared.tokens)
    for review, sentence, sentence_records in zip(prepared.owners, prepared.sentences, records, strict=True):
        found[review] += [(sentence, record) for record in sentence_records]
    return found


# ----------------------------------------------------------------- stream
def analyze_records(
    records: Iterable[InputRecord],
    *,
    classifiers,
    extractor=None,
    analysis: Analysis,
    progress: bool = False,
) -> Analysis:
    """Classify (and extract from) every record into ``analysis``, a batch at a time.

    As in ``classify_records``, a worker thread reads and tokenizes batch i+1 (for the classifiers and, split
    into sentences, for the extractor) while this thread runs the models on batch i; at most two batches are
    in memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from pipeline.inference.batch import _tokenize_batch, chunked

    batches = chunked(records, classifiers.batch_size)

    def next_batch():
        batch = next(batches, None)
        if batch is None:
            return None
        prepared = _tokenize_batch(batch, classifiers)
        good = [i for i, tokens in enumerate(prepared[1]) if tokens is not None]
        sentences = prepare_sentences(extractor, [batch[i].text for i in good]) if extractor is not None else None
        return prepared, good, sentences

    bar = tqdm(desc="analyze", unit=" reviews", file=sys.stderr, disable=not progress, mininterval=0.5, smoothing=0.1)
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-analyze") as pool:
            pending = pool.submit(next_batch)
            while (ready := pending.result()) is not None:
                pending = pool.submit(next_batch)
                _analyze_batch(*ready, classifiers=classifiers, extractor=extractor, analysis=analysis)
                bar.update(len(ready[0][0]))
    finally:
        bar.close()
    return analysis


def _analyze_batch(prepared, good: list[int], sentences: SentenceBatch | None, *, classifiers, extractor, analysis: Analysis) -> None:
    for record, predictions, opinions, error in batch_results(prepared, good, sentences, classifiers=classifiers, extractor=extractor):
        if predictions is None:
            analysis.add_error(record, error or "not classified")
        else:
            analysis.add(record, predictions, opinions)


def batch_results(prepared, good: list[int], sentences: SentenceBatch | None, *, classifiers, extractor) -> list[tuple]:
    """``(record, {task: Prediction} or None, [(sentence, opinion)] or None, error)`` of every row of a tokenized batch."""
    batch, tokenized, errors = prepared
    predictions = dict(zip(good, classifiers.classify_tokens([tokenized[i] for i in good]) if good else [], strict=True))
    opinions: dict[int, list] = {}
    if extractor is not None and sentences is not None:
        opinions = dict(zip(good, review_opinions(extractor, sentences, len(good)), strict=True))
    return [
        (record, predictions.get(index), opinions.get(index) if extractor is not None else None, errors[index])
        for index, record in enumerate(batch)
    ]


def check_not_empty(analysis: Analysis, *, source: str) -> None:
    """E237 when the input had no row at all (an empty file, or a header alone)."""
    if analysis.rows == 0:
        raise InputError(
            "E237", f"{source} has no rows to analyze.", hint="Give a file with one review per row (and a header row for CSV/TSV)."
        )


def check_jsonl_field(path: str, *, field_name: str) -> None:
    """E235 (listing the fields) when the first JSON object of a JSONL file has no ``field_name``: every row would fail."""
    import gzip
    import json

    if path == "-":
        return
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                first = json.loads(line)
            except json.JSONDecodeError:
                return  # a per-row error, as in classify
            if isinstance(first, dict) and field_name not in first:
                found = ", ".join(repr(k) for k in list(first)[:20])
                raise InputError("E235", f"{path} has no field '{field_name}' (first row).", hint=f"Its fields are: {found}.")
            return


@dataclass
class Engine:
    """Who analyzes: ``load()`` -> (``TaskClassifiers``, ``Extractor`` or None) in this process, or, with ``workers``
    > 1 and more than one batch of rows, ``spec`` (``analysis_workers.AnalysisModels``) in worker processes."""

    load: Any
    spec: Any = None
    workers: int = 1
    batch_size: int = 256


def run_analysis(
    *,
    records: Iterable[InputRecord],
    engine: Engine,
    output_dir,
    source: str,
    date_column: str | None = None,
    extractor_note: str | None = None,
    settings: AnalysisSettings | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Analyze ``records`` and write ``output_dir/analysis.json`` and ``output_dir/index.html``; returns the JSON."""
    from itertools import chain, islice
    from pathlib import Path

    from pipeline.evaluation.analysis_report import render_report
    from pipeline.io import atomic_open, write_json

    def make_analysis(labels):
        return Analysis(tasks=labels, settings=settings or AnalysisSettings(), date_column=date_column, extractor_note=extractor_note)

    start = time.perf_counter()
    records = iter(records)
    head = list(islice(records, engine.batch_size + 1))
    memory = None
    if engine.workers > 1 and engine.spec is not None and len(head) > engine.batch_size:
        from pipeline.evaluation.analysis_workers import analyze_parallel

        rows = chain(head, records)
        analysis, memory = analyze_parallel(rows, spec=engine.spec, make_analysis=make_analysis, workers=engine.workers, progress=progress)
    else:
        classifiers, extractor = engine.load()
        analysis = make_analysis(classifiers.labels)
        analyze_records(chain(head, records), classifiers=classifiers, extractor=extractor, analysis=analysis, progress=progress)
    check_not_empty(analysis, source=source)
    data = analysis.to_json(source=source, seconds=time.perf_counter() - start)
    data["workers"] = engine.workers if memory is not None else 1
    if memory is not None:
        import os

        from pipeline.inference.workers import worker_memory

        data["worker_memory"] = memory
        data["parent_memory"] = worker_memory(os.getpid())  # VmHWM: this process's peak, models not loaded here
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "analysis.json", data)
    with atomic_open(directory / "index.html") as handle:
        handle.write(render_report(data))
    logger.debug("analyzed %d reviews (%d errors) in %.1fs -> %s", data["rows"], data["errors"], data["seconds"], directory)
    return data
