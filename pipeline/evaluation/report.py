"""Stage ``report``: merge every evaluation into ``models/report/metrics.json``.

Shape: ``{"topic": {...}, "sentiment": {...}, <other tasks>, "generator": {...}, "vectors": {...}}``
(the classifier tasks at top level, as users and the issue tracker expect). The tasks alone
also go to ``models/report/classifiers.json``, and as a Markdown table to
``models/report/classifiers.md``: each row's test macro-F1 as mean ± std over its seeds (a
baseline is one deterministic run: std 0) and, under it, each pair of rows whose difference is
"within noise": ``|mean_a - mean_b| <= max(std_a, std_b)`` (``pipeline.metrics.within_noise``).
"""

from __future__ import annotations

from typing import Any

from pipeline.io import read_json, write_json

ROWS = ("bilstm_attention", "bilstm_ensemble", "tfidf_linear", "majority")  # bilstm_ensemble: with [classifier] ensemble = true
CALIBRATION_FIGURES = (("ece", "ECE"), ("brier", "Brier"))


def _spread(row: dict[str, Any], key: str = "macro_f1") -> tuple[float, float, int]:
    """(mean, std, seeds) of a row; a report written before seeds existed counts as one run."""
    return row.get(f"{key}_mean", row[key]), row.get(f"{key}_std", 0.0), row.get("seeds", 1)


def classifier_table(tasks: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of every task's test rows, and which differences are within noise."""
    from pipeline.metrics import within_noise

    lines = ["# Classifiers: test split", ""]
    lines += [
        "Test macro-F1 and accuracy as mean ± std over the seeds of each row (population std; a baseline is one",
        "deterministic run, std 0). *Kept* is the saved model's own figure (BiLSTM: the seed with the median dev",
        "macro-F1). Two rows are **within noise** when |mean_a - mean_b| <= max(std_a, std_b).",
        "",
    ]
    for task, report in tasks.items():
        rows = [name for name in ROWS if name in report and "macro_f1" in report[name]]
        lines += [
            f"## {task}",
            "",
            "| model | seeds | macro-F1 mean ± std | kept macro-F1 | accuracy mean ± std |",
            "|---|---|---|---|---|",
        ]
        for name in rows:
            mean, std, seeds = _spread(report[name])
            accuracy, accuracy_std, _ = _spread(report[name], "accuracy")
            kept = report[name]["macro_f1"]
            lines.append(f"| {name} | {seeds} | {mean:.4f} ± {std:.4f} | {kept:.4f} | {accuracy:.4f} ± {accuracy_std:.4f} |")
        lines.append("")
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                (mean_a, std_a, _), (mean_b, std_b, _) = _spread(report[a]), _spread(report[b])
                noise = within_noise(mean_a=mean_a, std_a=std_a, mean_b=mean_b, std_b=std_b)
                verdict = "within noise" if noise else f"{'above' if mean_a > mean_b else 'below'} by more than the spread"
                lines.append(f"- {a} vs {b}: {mean_a - mean_b:+.4f} (spread {max(std_a, std_b):.4f}): {verdict}")
        lines += ["", *calibration_lines(report)]
    return "\n".join(lines)


def calibration_lines(report: dict[str, Any]) -> list[str]:
    """The task's test ECE (15 bins) and Brier before / after the dev-fitted temperatures (none in an older report)."""
    rows = []
    bilstm = report.get("bilstm_attention", {}).get("calibration")
    if bilstm:
        cells = [
            f"{bilstm[f'{key}_{when}_mean']:.4f} ± {bilstm[f'{key}_{when}_std']:.4f}"
            for key, _ in CALIBRATION_FIGURES
            for when in ("before", "after")
        ]
        rows.append(f"| bilstm_attention (mean ± std over the seeds) | {' | '.join(cells)} |")
    ensemble = report.get("bilstm_ensemble", {}).get("calibration")
    if ensemble:
        cells = [f"{ensemble[f'{key}_{when}']:.4f}" for key, _ in CALIBRATION_FIGURES for when in ("before", "after")]
        rows.append(f"| bilstm_ensemble (T = {ensemble['temperature']}) | {' | '.join(cells)} |")
    if not rows:
        return []
    header = " | ".join(f"{name} {when}" for _, name in CALIBRATION_FIGURES for when in ("before", "after"))
    return [
        "Calibration on test (temperatures fitted on dev; ECE over 15 bins):",
        "",
        f"| model | {header} |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def stage_times(project_dir) -> dict[str, Any]:
    """Wall seconds of each stage's last run, from ``jpipe.lock`` (the report's own run is not in it yet)."""
    from pathlib import Path

    from pipeline.paths import LOCK_FILENAME

    path = Path(project_dir) / LOCK_FILENAME
    stages = read_json(path).get("stages", {}) if path.exists() else {}
    seconds = {name: entry["duration_s"] for name, entry in stages.items() if entry.get("duration_s") is not None and name != "report"}
    return {
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "note": "each stage's last run as recorded in jpipe.lock; stages that were fresh keep the time of the run that built them",
    }


def report_stage(ctx) -> dict[str, Any]:
    from pipeline.io import atomic_open
    from pipeline.paths import (
        CLASSIFIERS_REPORT,
        CLASSIFIERS_TABLE,
        EXTRACTOR_REPORT,
        GENERATOR_REPORT,
        METRICS,
        VECTORS_REPORT,
        task_report_dir,
    )

    tasks = {task: read_json(ctx.input(task_report_dir(task)) / "report.json") for task in ctx.config.task_names}
    write_json(ctx.output(CLASSIFIERS_REPORT), tasks)
    with atomic_open(ctx.output(CLASSIFIERS_TABLE), encoding="utf-8") as handle:
        handle.write(classifier_table(tasks))
    metrics: dict[str, Any] = dict(tasks)
    metrics["generator"] = read_json(ctx.input(GENERATOR_REPORT))
    metrics["vectors"] = read_json(ctx.input(VECTORS_REPORT))
    if ctx.path(EXTRACTOR_REPORT).exists():
        metrics["extractor"] = read_json(ctx.path(EXTRACTOR_REPORT))
    metrics["stage_times"] = stage_times(ctx.project_dir)
    write_json(ctx.output(METRICS), metrics)
    summary: dict[str, Any] = {}
    for task in tasks:
        model = metrics.get(task, {}).get("bilstm_attention", {})
        if "macro_f1" in model:
            summary[f"{task}_macro_f1"] = round(model["macro_f1"], 4)
        if model.get("seeds", 1) > 1:
            summary[f"{task}_macro_f1_mean"] = model["macro_f1_mean"]
            summary[f"{task}_macro_f1_std"] = model["macro_f1_std"]
        if "calibration" in model:
            summary[f"{task}_ece_after_mean"] = model["calibration"]["ece_after_mean"]
    for name in ("lstm", "ngram"):
        value = metrics["generator"].get(name, {}).get("perplexity")
        if value is not None:
            summary[f"{name}_perplexity"] = round(value, 2)
    if "perplexity_mean" in metrics["generator"].get("lstm", {}):
        summary["lstm_perplexity_mean"] = metrics["generator"]["lstm"]["perplexity_mean"]
        summary["lstm_perplexity_std"] = metrics["generator"]["lstm"]["perplexity_std"]
    if "extractor" in metrics:
        seq2seq = metrics["extractor"]["seq2seq"]  # mean over the seeds
        summary["extractor_record_f1"], summary["extractor_record_f1_std"] = seq2seq["record_f1"], seq2seq["record_f1_std"]
    summary["stages_seconds"] = metrics["stage_times"]["total_seconds"]
    return summary
