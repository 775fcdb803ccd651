"""``jpipe bench calibration``: temperature scaling and seed ensembles measured on a trained project, without retraining.

For each task whose model directory has every seed (``seeds/<seed>/``):

* each seed: a temperature fitted on the **dev** split (``pipeline.training.calibration.fit_temperature``),
  then test macro-F1, ECE (15 bins) and Brier before and after it; mean ± std over the seeds;
* the seed ensemble: the mean of the seeds' calibrated probabilities, its own temperature fitted on
  dev on that average; test macro-F1, ECE and Brier before (plain mean of the raw probabilities) and after;
* throughput: reviews/s of ``Classifier.from_dir`` on the task's test sentences (tokenizer included),
  the single saved (median-dev) seed against the ensemble of every seed, with the load average.

Nothing is written into the project: the temperatures are fitted here as the training stage would.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

THROUGHPUT_TEXTS = 2000  # test sentences timed per model (repeated when the split is smaller)
DEV_KEYS = ("temperature", "dev_ece_before", "dev_ece_after", "dev_nll_before", "dev_nll_after")


def _split_rows(project_dir: Path, config, task: str) -> tuple[dict[str, list[dict]], list[str], str]:
    """The task's dev and test rows (tokens file), its labels and label field."""
    from pipeline.data.tasks import label_field, task_labels, task_rows_file
    from pipeline.text.tokenize import read_token_rows

    spec = config.task(task)
    tokens_path = project_dir / task_rows_file(config, task)
    labels = task_labels(project_dir, task=task, section=spec, tokens_path=tokens_path)
    rows: dict[str, list[dict]] = {"dev": [], "test": []}
    for row in read_token_rows(tokens_path):
        if row["split"] in rows:
            rows[row["split"]].append(row)
    return rows, labels, label_field(spec)


def _probabilities(directory: Path, rows: dict[str, list[dict]], *, labels: list[str], field: str, device) -> dict[str, Any]:
    """A model directory's raw softmax probabilities on dev and test (as training's dev evaluation computes them)."""
    from pipeline.models.batching import encode_rows
    from pipeline.models.classifier import load_classifier, predict_split

    loaded = load_classifier(directory, device=device)
    result = {}
    for split, split_rows in rows.items():
        encoded = encode_rows(
            split_rows, loaded.vocab, token_field=loaded.token_field, label_field=field, labels=labels, max_tokens=loaded.max_tokens
        )
        result[split] = predict_split(loaded.model, encoded, device=loaded.device)["probabilities"]
        result[f"{split}_targets"] = encoded.labels
    return result


def _figures(probabilities, targets, *, after, labels: list[str]) -> dict[str, float]:
    from pipeline.metrics import brier_score, expected_calibration_error, macro_f1

    return {
        "macro_f1": round(macro_f1(targets, np.asarray(after).argmax(axis=1), num_classes=len(labels)), 4),
        "ece_before": round(expected_calibration_error(probabilities, targets), 4),
        "ece_after": round(expected_calibration_error(after, targets), 4),
        "brier_before": round(brier_score(probabilities, targets), 4),
        "brier_after": round(brier_score(after, targets), 4),
    }


def _spread(runs: list[dict[str, float]]) -> dict[str, float]:
    from pipeline.metrics import mean_std

    result = {}
    for key in ("macro_f1", "ece_before", "ece_after", "brier_before", "brier_after", "temperature"):
        mean, std = mean_std(run[key] for run in runs)
        result[f"{key}_mean"], result[f"{key}_std"] = round(mean, 4), round(std, 4)
    return result


def _throughput(model_dir: Path, member_dirs: list[Path], texts: list[str], *, temperature: float, device: str) -> dict[str, Any]:
    """Reviews/s of the saved seed alone and of the ensemble (after a warm-up batch), and the load average."""
    from pipeline.inference.classifier import Classifier

    single = Classifier.from_dir(model_dir, device=device, ensemble=False)
    ensemble = Classifier.from_dir(model_dir, device=device, members=member_dirs, ensemble_temperature=temperature)
    result: dict[str, Any] = {"texts": len(texts)}
    for name, classifier in (("single", single), ("ensemble", ensemble)):
        classifier.predict(texts[:64])
        started = time.perf_counter()
        for start in range(0, len(texts), classifier.batch_size):
            classifier.predict(texts[start : start + classifier.batch_size])
        result[f"{name}_reviews_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
    result["ratio"] = round(result["ensemble_reviews_per_s"] / result["single_reviews_per_s"], 3)
    result["load_average"] = [round(value, 2) for value in os.getloadavg()]
    return result


def benchmark_task(
    project_dir: Path, config, task: str, *, device: str = "cpu", throughput_texts: int = THROUGHPUT_TEXTS
) -> dict[str, Any]:
    """Per seed and ensemble calibration figures of one task (see the module docstring)."""
    from pipeline.errors import ModelError
    from pipeline.models.calibration import apply_temperature
    from pipeline.models.model_dir import read_model_dir, seed_model_dirs
    from pipeline.models.runtime import pick_device
    from pipeline.paths import classifier_dir
    from pipeline.training.calibration import calibration_record, ensemble_probabilities

    model_dir = project_dir / classifier_dir(task)
    member_dirs = seed_model_dirs(model_dir)
    if len(member_dirs) < 2:
        raise ModelError(
            "E301",
            f"{model_dir} has no seeds/ with two or more seeds.",
            hint=f"Train task {task} with [classifier] seeds = 5 (`jpipe run`).",
        )
    rows, labels, field = _split_rows(project_dir, config, task)
    torch_device = pick_device(device)
    outputs = [_probabilities(directory, rows, labels=labels, field=field, device=torch_device) for directory in member_dirs]
    dev_targets, test_targets = outputs[0]["dev_targets"], outputs[0]["test_targets"]
    runs = []
    for directory, output in zip(member_dirs, outputs, strict=True):
        dev = calibration_record(output["dev"], dev_targets)  # what train_<task> writes as calibration.json
        after = apply_temperature(output["test"], dev["temperature"])
        figures = _figures(output["test"], test_targets, after=after, labels=labels)
        runs.append({"seed": int(directory.name), **{key: dev[key] for key in DEV_KEYS}, **figures})
    temperatures = [run["temperature"] for run in runs]
    ensemble_dev = calibration_record(ensemble_probabilities([o["dev"] for o in outputs], temperatures), dev_targets)
    ensemble_temperature = ensemble_dev["temperature"]
    raw_mean = np.mean([o["test"] for o in outputs], axis=0)
    after = apply_temperature(ensemble_probabilities([o["test"] for o in outputs], temperatures), ensemble_temperature)
    saved_seed = read_model_dir(model_dir)["metrics"].get("seed_summary", {}).get("saved_seed")
    texts = [row["text"] for row in rows["test"]]
    texts = (texts * (throughput_texts // max(1, len(texts)) + 1))[:throughput_texts]
    return {
        "task": task,
        "dev_rows": len(dev_targets),
        "test_rows": len(test_targets),
        "seeds": runs,
        "saved_seed": saved_seed,
        "saved": next((run for run in runs if run["seed"] == saved_seed), None),
        **_spread(runs),
        "ensemble": {**{key: ensemble_dev[key] for key in DEV_KEYS}, **_figures(raw_mean, test_targets, after=after, labels=labels)},
        "throughput": _throughput(model_dir, member_dirs, texts, temperature=ensemble_temperature, device=device),
    }


def benchmark_calibration(
    *, project_dir: str | os.PathLike, tasks: list[str] | None = None, device: str = "cpu", throughput_texts: int = THROUGHPUT_TEXTS
) -> dict[str, Any]:
    """:func:`benchmark_task` for ``tasks`` (default: every task with trained seeds)."""
    from pipeline.config import load_config
    from pipeline.models.model_dir import seed_model_dirs
    from pipeline.paths import classifier_dir

    project_dir = Path(project_dir)
    config = load_config(project_dir)
    if not tasks:
        tasks = [task for task in config.task_names if len(seed_model_dirs(project_dir / classifier_dir(task))) > 1]
    return {
        "tasks": {task: benchmark_task(project_dir, config, task, device=device, throughput_texts=throughput_texts) for task in tasks},
        "threads": _torch_threads(),
        "cpus": os.cpu_count(),
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def report_lines(result: dict[str, Any]) -> list[str]:
    """The human-readable table of :func:`benchmark_calibration`'s result."""
    lines = [f"Temperature scaling fitted on dev; test figures (ECE: 15 bins). torch threads {result['threads']}, {result['cpus']} CPUs."]
    for task, r in result["tasks"].items():
        pm = lambda key, r=r: f"{r[f'{key}_mean']:.4f} ± {r[f'{key}_std']:.4f}"  # noqa: E731
        e, t = r["ensemble"], r["throughput"]
        lines += [
            "",
            f"{task}: {len(r['seeds'])} seeds, dev {r['dev_rows']} / test {r['test_rows']} rows",
            f"  seeds    macro-F1 {pm('macro_f1')}  T {pm('temperature')}",
            f"           ECE   {pm('ece_before')} -> {pm('ece_after')}",
            f"           Brier {pm('brier_before')} -> {pm('brier_after')}",
        ]
        if r["saved"]:
            s = r["saved"]
            lines.append(
                f"  saved seed {s['seed']}: macro-F1 {s['macro_f1']:.4f}  ECE {s['ece_before']:.4f} -> {s['ece_after']:.4f}  "
                f"Brier {s['brier_before']:.4f} -> {s['brier_after']:.4f}  T {s['temperature']} (dev ECE {s['dev_ece_before']:.4f} -> {s['dev_ece_after']:.4f})"
            )
        lines += [
            f"  ensemble macro-F1 {e['macro_f1']:.4f}  ECE {e['ece_before']:.4f} -> {e['ece_after']:.4f}  "
            f"Brier {e['brier_before']:.4f} -> {e['brier_after']:.4f}  T {e['temperature']} (dev ECE {e['dev_ece_before']:.4f} -> {e['dev_ece_after']:.4f})",
            f"  throughput on {t['texts']} test sentences: saved seed {t['single_reviews_per_s']} reviews/s, "
            f"ensemble {t['ensemble_reviews_per_s']} reviews/s (x{t['ratio']}); load average {t['load_average']}",
        ]
    return lines
