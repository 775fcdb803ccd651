"""The headline metrics of a project, flattened to ``name -> float``, read from its report and model files.

Names are ``<what>.<metric>``: ``topic.macro_f1_mean`` (test macro-F1, mean over the seeds),
``topic.dev_macro_f1_mean``, ``generator.perplexity_mean``, ``vectors.word2vec.synonym_auc``,
``extractor.seq2seq.record_f1``. Whatever files exist are read, so this works after any run
(a run of one stage, a failed run, an old project): a task trained but not evaluated has its
dev figures only. Run history (:mod:`pipeline.workflow.history`) and MLflow logging record them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from pipeline.paths import (
    CLASSIFIERS_DIR,
    EXTRACTOR_REPORT,
    GENERATOR_REPORT,
    TASKS_REPORT_DIR,
    VECTORS_REPORT,
    classifier_dir,
    task_report_dir,
)

# Keys of a report row kept as headline figures: test macro-F1 / accuracy (kept model, mean, std), and any
# calibration figure (ECE, Brier score, before and after).
_ROW_KEYS = re.compile(r"^(macro_f1|accuracy)(_mean|_std)?$|^(ece|brier)\w*$")
_BASELINES = ("tfidf_linear", "majority")  # a task's baselines: not headline figures
_GENERATOR_KEYS = ("perplexity", "perplexity_mean", "perplexity_std")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _read(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; {} when missing or unreadable (a half-written old file must not stop a run's record)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _row_figures(row: dict[str, Any], prefix: str, out: dict[str, float]) -> None:
    """The headline keys of one report row (and of a nested ``calibration`` table) under ``prefix``."""
    for key, value in row.items():
        if isinstance(value, dict) and key == "calibration":
            _row_figures(value, f"{prefix}calibration.", out)
        elif _ROW_KEYS.match(key) and (number := _number(value)) is not None:
            out[f"{prefix}{key}"] = number


def task_metrics(project_dir: Path, task: str) -> dict[str, float]:
    """One task's test figures (``evaluate_<task>``'s report) and dev figures (its model's metrics.json)."""
    out: dict[str, float] = {}
    report = _read(project_dir / task_report_dir(task) / "report.json")
    for name, row in report.items():
        if isinstance(row, dict) and name not in _BASELINES and "macro_f1" in row:
            _row_figures(row, f"{task}." if name == "bilstm_attention" else f"{task}.{name}.", out)
    model = _read(project_dir / classifier_dir(task) / "metrics.json")
    seeds = model.get("seed_summary") or {}
    figures = {"dev_macro_f1": model.get("dev_macro_f1"), **{key: seeds.get(key) for key in ("dev_macro_f1_mean", "dev_macro_f1_std")}}
    for key, value in figures.items():
        if (number := _number(value)) is not None:
            out[f"{task}.{key}"] = number
    return out


def _generator(project_dir: Path, out: dict[str, float]) -> None:
    report = _read(project_dir / GENERATOR_REPORT)
    for key in _GENERATOR_KEYS:
        if (number := _number((report.get("lstm") or {}).get(key))) is not None:
            out[f"generator.{key}"] = number
    if (number := _number((report.get("ngram") or {}).get("perplexity"))) is not None:
        out["generator.ngram_perplexity"] = number


def _vectors(project_dir: Path, out: dict[str, float]) -> None:
    for source, info in (_read(project_dir / VECTORS_REPORT).get("sources") or {}).items():
        if not isinstance(info, dict):
            continue
        figures = {
            "synonym_auc": (info.get("synonyms") or {}).get("roc_auc"),
            "token_coverage": (info.get("coverage") or {}).get("token_coverage"),
        }
        for key, value in figures.items():
            if (number := _number(value)) is not None:
                out[f"vectors.{source}.{key}"] = number


def _extractor(project_dir: Path, out: dict[str, float]) -> None:
    for system, row in _read(project_dir / EXTRACTOR_REPORT).items():
        if not isinstance(row, dict) or "record_f1" not in row:
            continue
        for key in ("record_f1", "record_f1_std") if system == "seq2seq" else ("record_f1",):
            if (number := _number(row.get(key))) is not None:
                out[f"extractor.{system}.{key}"] = number


def _task_names(project_dir: Path) -> list[str]:
    """Every task with a report or a trained model in the project, sorted."""
    names = {path.parent.name for path in (project_dir / TASKS_REPORT_DIR).glob("*/report.json")}
    names |= {path.parent.name for path in (project_dir / CLASSIFIERS_DIR).glob("*/metrics.json")}
    return sorted(names)


def headline_metrics(project_dir: str | Path, *, tasks: list[str] | None = None) -> dict[str, float]:
    """The project's headline figures, ``name -> float`` sorted by name; ``tasks`` (default: every task found) limits the tasks."""
    root = Path(project_dir)
    out: dict[str, float] = {}
    for task in _task_names(root) if tasks is None else tasks:
        out.update(task_metrics(root, task))
    _generator(root, out)
    _vectors(root, out)
    _extractor(root, out)
    return dict(sorted(out.items()))
