"""Stage ``report``: merge every evaluation into ``models/report/metrics.json``.

Shape: ``{"topic": {...}, "sentiment": {...}, <other tasks>, "generator": {...}, "vectors": {...}}``
(the classifier tasks at top level, as users and the issue tracker expect). The tasks alone
also go to ``models/report/classifiers.json``.
"""

from __future__ import annotations

from typing import Any

from pipeline.io import read_json, write_json


def report_stage(ctx) -> dict[str, Any]:
    from pipeline.paths import CLASSIFIERS_REPORT, EXTRACTOR_REPORT, GENERATOR_REPORT, METRICS, VECTORS_REPORT, task_report_dir

    tasks = {task: read_json(ctx.input(task_report_dir(task)) / "report.json") for task in ctx.config.task_names}
    write_json(ctx.output(CLASSIFIERS_REPORT), tasks)
    metrics: dict[str, Any] = dict(tasks)
    metrics["generator"] = read_json(ctx.input(GENERATOR_REPORT))
    metrics["vectors"] = read_json(ctx.input(VECTORS_REPORT))
    if ctx.path(EXTRACTOR_REPORT).exists():
        metrics["extractor"] = read_json(ctx.path(EXTRACTOR_REPORT))
    write_json(ctx.output(METRICS), metrics)
    summary: dict[str, Any] = {}
    for task in tasks:
        model = metrics.get(task, {}).get("bilstm_attention", {})
        if "macro_f1" in model:
            summary[f"{task}_macro_f1"] = round(model["macro_f1"], 4)
    for name in ("lstm", "ngram"):
        value = metrics["generator"].get(name, {}).get("perplexity")
        if value is not None:
            summary[f"{name}_perplexity"] = round(value, 2)
    if "extractor" in metrics:
        summary["extractor_record_f1"] = metrics["extractor"]["seq2seq"]["record_f1"]
    return summary
