"""``jpipe analyze --workers N``: the reviews tokenized, classified and their opinions extracted in worker processes.

The pool of ``jpipe classify --workers`` (:class:`pipeline.inference.workers.WorkerPool`: spawn, one torch thread
per worker, the workers die with the parent, a dead worker is E409). Each worker loads the classifiers and the
extractor once and turns a chunk of ``batch_size`` rows into per-row results (``analysis.batch_results``, the
in-process code); the parent folds them into the ``Analysis`` in input order, so the figures equal those of the
in-process path. An input of one chunk runs in this process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pipeline.data.readers import InputRecord

_WORKER: dict[str, Any] = {}


@dataclass(frozen=True)
class AnalysisModels:
    """What a worker loads (picklable): task -> classifier directory, the extractor directory (or None)."""

    model_dirs: dict[str, str]
    extractor_dir: str | None = None
    device: str = "cpu"
    batch_size: int = 256
    threads: int = 1


def _models(spec: AnalysisModels):
    """The worker's (``TaskClassifiers``, ``Extractor`` or None), loaded on the first chunk."""
    if "models" not in _WORKER:
        import torch

        from pipeline.inference.batch import TaskClassifiers
        from pipeline.inference.classifier import Classifier
        from pipeline.inference.extractor import Extractor

        torch.set_num_threads(max(1, spec.threads))
        options = {"device": spec.device, "batch_size": spec.batch_size}
        classifiers = TaskClassifiers(
            classifiers={task: Classifier.from_dir(path, **options) for task, path in spec.model_dirs.items()}, batch_size=spec.batch_size
        )
        extractor = Extractor.from_dir(spec.extractor_dir, device=spec.device) if spec.extractor_dir else None
        _WORKER["models"] = (classifiers, extractor)
    return _WORKER["models"]


def analyze_chunk(records: list[InputRecord], spec: AnalysisModels) -> tuple[list[tuple], int]:
    """One chunk -> its per-row results (``analysis.batch_results``), this pid."""
    from pipeline.evaluation.analysis import batch_results, prepare_sentences
    from pipeline.inference.batch import _tokenize_batch

    classifiers, extractor = _models(spec)
    prepared = _tokenize_batch(records, classifiers)
    good = [i for i, tokens in enumerate(prepared[1]) if tokens is not None]
    sentences = prepare_sentences(extractor, [records[i].text for i in good]) if extractor is not None else None
    return batch_results(prepared, good, sentences, classifiers=classifiers, extractor=extractor), os.getpid()


def describe(spec: AnalysisModels) -> tuple[dict[str, list[str]], int]:
    """The labels of every task (``TaskClassifiers.labels``), read in a worker (the parent loads no model)."""
    return _models(spec)[0].labels, os.getpid()


def analyze_parallel(records: Iterable[InputRecord], *, spec: AnalysisModels, make_analysis, workers: int, progress: bool = False):
    """Fold every row of ``records`` into ``make_analysis(labels)`` (worker processes); returns (the analysis, the
    workers' memory as ``worker_memory`` reads it)."""
    from tqdm import tqdm

    from pipeline.inference.batch import chunked
    from pipeline.inference.workers import WorkerPool

    bar = tqdm(desc="analyze", unit=" reviews", file=sys.stderr, disable=not progress, mininterval=0.5, smoothing=0.1)
    try:
        with WorkerPool(workers) as pool:
            analysis = make_analysis(pool.submit(describe, spec).result()[0])
            for results in pool.ordered(analyze_chunk, chunked(records, spec.batch_size), spec):
                for record, predictions, opinions, error in results:
                    if predictions is None:
                        analysis.add_error(record, error or "not classified")
                    else:
                        analysis.add(record, predictions, opinions)
                bar.update(len(results))
            return analysis, pool.memory()
    finally:
        bar.close()
