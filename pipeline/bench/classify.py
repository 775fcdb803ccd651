"""``jpipe bench classify``: end-to-end reviews/s of batch classification, and peak memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.data.readers import InputRecord
from pipeline.inference.batch import ClassifySummary, TaskClassifiers, run_classification
from pipeline.inference.classifier import DEFAULT_BATCH_SIZE

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
AGREEMENT_SAMPLE = 2000  # texts on which int8 labels are compared with fp32
TOKENIZE_SAMPLE = 5000  # texts tokenized alone, for the split of the time


def benchmark_texts(project_dir: str | os.PathLike) -> tuple[list[str], str]:
    """Short KNBC test sentences (unseen in training) as "short reviews", else built-in ones."""
    from pipeline.paths import TOKENS

    tokens_path = Path(project_dir) / TOKENS
    texts: list[str] = []
    if tokens_path.exists():
        from pipeline.io import read_jsonl

        texts = [row["text"] for row in read_jsonl(tokens_path) if row.get("split") == "test" and 5 <= len(row["text"]) <= 80]
    return (texts, "KNBC test sentences") if texts else (list(SHORT_REVIEWS), "built-in short reviews")


def _label_agreement(fast: TaskClassifiers, *, project_dir: Path, texts: list[str], device: str, batch_size: int) -> dict[str, float]:
    """Share of labels of the int8 models equal to the fp32 models' labels, per task."""
    reference = TaskClassifiers.from_project(project_dir, device=device, batch_size=batch_size)
    sample = texts[:AGREEMENT_SAMPLE]
    quick, exact = fast.classify(sample), reference.classify(sample)
    return {
        task: round(sum(f[task].label == e[task].label for f, e in zip(quick, exact, strict=True)) / len(sample), 4) for task in fast.tasks
    }


def _timed_run(classifiers: TaskClassifiers, texts: list[str], *, reviews: int, batch_size: int) -> tuple[ClassifySummary, float]:
    """Counts and seconds for ``reviews`` rows (after one warm-up batch), JSONL to /dev/null."""
    import time

    def records() -> Iterator[InputRecord]:
        for index in range(reviews):
            yield InputRecord(id=str(index + 1), text=texts[index % len(texts)])

    with open(os.devnull, "w", encoding="utf-8") as sink:
        warm_up = (InputRecord(id="w", text=t) for t in texts[:batch_size])
        run_classification(records=warm_up, classifiers=classifiers, handle=sink, output_format="jsonl", progress=False)
        started = time.perf_counter()
        summary = run_classification(records=records(), classifiers=classifiers, handle=sink, output_format="jsonl", progress=False)
        return summary, time.perf_counter() - started


def benchmark_classify(
    *, project_dir: str | os.PathLike, reviews: int = 20_000, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu", int8: bool = False
) -> dict[str, Any]:
    """Reviews/s end to end (read rows, tokenize, both models, write JSONL to /dev/null) and peak RSS.

    With ``int8`` the models are quantized, and the share of labels that agree with the fp32
    models on the benchmark texts is reported too."""
    import resource
    import time

    import torch

    project_dir = Path(project_dir)
    texts, source = benchmark_texts(project_dir)
    started_load = time.perf_counter()
    classifiers = TaskClassifiers.from_project(project_dir, device=device, batch_size=batch_size, int8=int8)
    load_seconds = time.perf_counter() - started_load
    agreement = _label_agreement(classifiers, project_dir=project_dir, texts=texts, device=device, batch_size=batch_size) if int8 else None
    summary, seconds = _timed_run(classifiers, texts, reviews=reviews, batch_size=batch_size)
    sample = [texts[i % len(texts)] for i in range(min(reviews, TOKENIZE_SAMPLE))]
    started = time.perf_counter()
    for text in sample:
        classifiers.tokenize(text)
    tokenize_rate = len(sample) / (time.perf_counter() - started)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "reviews": summary.rows,
        "classified": summary.classified,
        "source": source,
        "mean_characters": round(sum(len(t) for t in texts) / len(texts), 1),
        "tasks": list(classifiers.tasks),
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


# Components of ja_ginza that doc.cats does not need: `--via spacy` times the tokenizer + jpipe_classifier.
SPACY_ROUNDS = 4  # alternating timed rounds of `jpipe classify` and `nlp.pipe`
GINZA_COMPONENTS = ("tok2vec", "parser", "attribute_ruler", "ner", "morphologizer", "compound_splitter", "bunsetu_recognizer")


def _spacy_seconds(nlp, texts: list[str], *, reviews: int, batch_size: int) -> float:
    """Seconds of ``nlp.pipe`` over ``reviews`` texts (after a warm-up batch)."""
    import time

    for _ in nlp.pipe(texts[:batch_size], batch_size=batch_size):
        pass
    stream = (texts[index % len(texts)] for index in range(reviews))
    started = time.perf_counter()
    for _ in nlp.pipe(stream, batch_size=batch_size):
        pass
    return time.perf_counter() - started


def benchmark_spacy(
    *, project_dir: str | os.PathLike, reviews: int = 20_000, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu"
) -> dict[str, Any]:
    """``nlp.pipe`` (ja_ginza's tokenizer + ``jpipe_classifier``) against ``jpipe classify`` on the same texts and tasks.

    The two are timed in ``SPACY_ROUNDS`` alternating rounds, so a change in machine load hits both
    alike. Also checks that ``doc.cats`` equals the classify probabilities on the first batch."""
    import spacy
    import torch

    from pipeline.paths import CLASSIFIERS_DIR

    project_dir = Path(project_dir)
    texts, source = benchmark_texts(project_dir)
    classifiers = TaskClassifiers.from_project(project_dir, device=device, batch_size=batch_size)
    nlp = spacy.load("ja_ginza", exclude=list(GINZA_COMPONENTS))
    component = nlp.add_pipe("jpipe_classifier", config={"batch_size": batch_size, "device": device})
    component.load_dirs({task: project_dir / CLASSIFIERS_DIR / task for task in classifiers.tasks})
    per_round = max(1, reviews // SPACY_ROUNDS)
    jpipe_seconds = spacy_seconds = 0.0
    for _ in range(SPACY_ROUNDS):
        jpipe_seconds += _timed_run(classifiers, texts, reviews=per_round, batch_size=batch_size)[1]
        spacy_seconds += _spacy_seconds(nlp, texts, reviews=per_round, batch_size=batch_size)
    docs = list(nlp.pipe(texts[:batch_size], batch_size=batch_size))
    reference = classifiers.classify([doc.text for doc in docs])
    difference = max(
        abs(doc.cats[f"{task}/{label}"] - p)
        for doc, result in zip(docs, reference, strict=True)
        for task in result
        for label, p in result[task].probabilities.items()
    )
    jpipe_rate, rate = per_round * SPACY_ROUNDS / jpipe_seconds, per_round * SPACY_ROUNDS / spacy_seconds
    return {
        "reviews": per_round * SPACY_ROUNDS,
        "rounds": SPACY_ROUNDS,
        "source": source,
        "tasks": list(classifiers.tasks),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "jpipe_classify_reviews_per_second": round(jpipe_rate, 1),
        "spacy_pipe_reviews_per_second": round(rate, 1),
        "spacy_pipe_components": nlp.pipe_names,
        "ratio": round(rate / jpipe_rate, 3),
        "max_probability_difference": float(f"{difference:.2e}"),
    }
