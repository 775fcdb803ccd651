"""``jpipe bench classify --backend onnx``: the torch and ONNX Runtime backends on the same texts, same run.

Each task model is exported to ONNX in a temporary copy of its model directory (the
project is not written to). Then, in ``rounds`` alternating rounds (so a change in the
machine's load hits both alike), it times:

- model only, per batch: ``predict_tokens`` of both tasks on texts tokenized beforehand, one call per
  ``batch_size`` texts as ``jpipe classify`` makes them (rows of mixed lengths: padding);
- model only, sorted: one call for all texts, so every batch holds rows of nearly equal length;
- end to end: ``run_classification`` (read rows, tokenize, both models, JSONL to /dev/null).

and reports the medians, the onnx / torch ratios, the label agreement and the largest
probability difference on the benchmark texts, and the load average before and after.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.bench.classify import _timed_run, benchmark_texts
from pipeline.inference.batch import TaskClassifiers, task_model_dirs
from pipeline.inference.classifier import DEFAULT_BATCH_SIZE, Classifier

# calibration.json: both sides apply the same temperature (the kept model's; ensembles are compared as their kept model)
MODEL_FILES = ("config.json", "vocab.json", "labels.json", "model.safetensors", "calibration.json")
MODEL_ONLY_TEXTS = 20_000  # tokenized once, classified by both tasks in every round


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``), or "" where there is none."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return ""


def _onnx_copies(directories: dict[str, Path], root: Path) -> dict[str, Path]:
    """A copy of each model directory under ``root`` with its model.onnx exported there."""
    from pipeline.inference.onnx_backend import export_onnx

    copies = {}
    for task, directory in directories.items():
        copy = root / task
        copy.mkdir(parents=True)
        for name in MODEL_FILES:
            if (directory / name).is_file():
                shutil.copy2(directory / name, copy / name)
        export_onnx(copy)
        copies[task] = copy
    return copies


def _model_seconds(classifiers: TaskClassifiers, tokenized: list[dict], *, batch_size: int) -> float:
    """Seconds of both tasks' models on ``tokenized``, ``batch_size`` texts per call."""
    started = time.perf_counter()
    for start in range(0, len(tokenized), batch_size):
        classifiers.classify_tokens(tokenized[start : start + batch_size])
    return time.perf_counter() - started


def _agreement(torch_side: TaskClassifiers, onnx_side: TaskClassifiers, tokenized: list[dict]) -> dict[str, Any]:
    """Per task: share of equal labels and the largest probability difference."""
    result = {}
    for task, reference in torch_side.classifiers.items():
        other = onnx_side.classifiers[task]
        expected = reference.predict_tokens([t[reference.split_mode] for t in tokenized])
        got = other.predict_tokens([t[other.split_mode] for t in tokenized])
        result[task] = {
            "labels_equal": round(sum(a.label == b.label for a, b in zip(expected, got, strict=True)) / max(1, len(got)), 6),
            "max_probability_difference": max(
                abs(a.probabilities[k] - b.probabilities[k]) for a, b in zip(expected, got, strict=True) for k in a.probabilities
            ),
        }
    return result


def benchmark_onnx(
    *, project_dir: str | os.PathLike, reviews: int = 20_000, batch_size: int = DEFAULT_BATCH_SIZE, rounds: int = 3
) -> dict[str, Any]:
    """torch vs onnx, model only and end to end, medians of ``rounds`` alternating rounds (CPU)."""
    import torch

    project_dir = Path(project_dir)
    texts, source = benchmark_texts(project_dir)
    directories = task_model_dirs(project_dir)
    with tempfile.TemporaryDirectory(prefix="jpipe-onnx-bench-") as tmp:
        copies = _onnx_copies(directories, Path(tmp))
        sides = {
            backend: TaskClassifiers(
                classifiers={t: Classifier.from_dir(p, batch_size=batch_size, backend=backend, ensemble=False) for t, p in dirs.items()},
                batch_size=batch_size,
            )
            for backend, dirs in (("torch", directories), ("onnx", copies))
        }
        unique = [sides["torch"].tokenize(text) for text in texts]
        tokenized = [unique[i % len(unique)] for i in range(min(reviews, MODEL_ONLY_TEXTS))]
        agreement = _agreement(sides["torch"], sides["onnx"], unique)
        before = load_average()
        seconds: dict[str, dict[str, list[float]]] = {b: {"model_only": [], "model_only_sorted": [], "end_to_end": []} for b in sides}
        for _ in range(rounds):
            for backend, classifiers in sides.items():
                seconds[backend]["model_only"].append(_model_seconds(classifiers, tokenized, batch_size=batch_size))
                seconds[backend]["model_only_sorted"].append(_model_seconds(classifiers, tokenized, batch_size=len(tokenized)))
                seconds[backend]["end_to_end"].append(_timed_run(classifiers, texts, reviews=reviews, batch_size=batch_size)[1])
    medians = {b: {k: statistics.median(v) for k, v in runs.items()} for b, runs in seconds.items()}
    counts = {"model_only": len(tokenized), "model_only_sorted": len(tokenized), "end_to_end": reviews}
    return {
        "source": source,
        "distinct_texts": len(texts),
        "reviews": reviews,
        "model_only_texts": len(tokenized),
        "tasks": list(directories),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "rounds": rounds,
        "seconds": seconds,
        "reviews_per_second": {b: {k: round(counts[k] / s, 1) for k, s in m.items()} for b, m in medians.items()},
        "ratio_onnx_vs_torch": {k: round(medians["torch"][k] / medians["onnx"][k], 3) for k in counts},
        "agreement": agreement,
        "load_average_before": before,
        "load_average_after": load_average(),
    }
