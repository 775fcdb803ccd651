"""Stage ``prepare_<task>``: a file task's labelled rows, validated, split by group and tokenized.

The rows come from ``pipeline.data.tasks.load_task_rows`` (errors E250-E255 name the file and
row); each text is tokenized with the project's tokenizer (``tokenize.split_mode``), exactly as
the corpus sentences are, and written like ``data/tokens/knbc.jsonl``:
``{"sentence_id", "group", "label", "split", "text", "surface", "lemma", "norm", "pos", "tag"}``
to ``data/tasks/<task>/tokens.jsonl``. ``data/tasks/<task>/stats.json`` holds the labels, the
label distribution per split, the skipped rows by reason and the split mode.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.data.tasks import LABEL, SPLITS, load_task_rows
from pipeline.io import write_json
from pipeline.text.tokenize import load_tokenizer

logger = logging.getLogger(__name__)


def prepare_task_stage(ctx) -> dict[str, Any]:
    from pipeline.paths import task_stats, task_tokens

    task = ctx.stage.task
    section = ctx.config.task(task)
    data = load_task_rows(ctx.project_dir, name=task, section=section)
    split_mode = ctx.config["tokenize"]["split_mode"]
    tokenizer = load_tokenizer(split_mode)
    written = 0
    with open(ctx.output(task_tokens(task)), "w", encoding="utf-8") as out:
        for row in data.rows:
            tokens = tokenizer.tokenize(row["text"])
            if not tokens["surface"]:
                data.skipped["no tokens"] += 1
                continue
            record = {"sentence_id": row["id"], "group": row["group"], LABEL: row[LABEL], "split": row["split"], "text": row["text"]}
            out.write(json.dumps({**record, **tokens}, ensure_ascii=False) + "\n")
            written += 1
    distribution = data.distribution()
    for split in SPLITS:
        missing = [label for label, n in distribution[split].items() if n == 0]
        if missing and sum(distribution[split].values()):
            logger.warning("task %s: the %s split has no row labelled %s (small data or few groups)", task, split, ", ".join(missing))
    stats = {
        "task": task,
        "labels": data.labels,
        "rows": written,
        "splits": {split: {"rows": sum(distribution[split].values()), "labels": distribution[split]} for split in SPLITS},
        "groups": len({row["group"] for row in data.rows}),
        "skipped": dict(data.skipped),
        "skipped_examples": data.skipped_examples,
        "split_mode": split_mode,
    }
    write_json(ctx.output(task_stats(task)), stats)
    logger.info(
        "task %s: %d rows (%s), %d skipped",
        task,
        written,
        ", ".join(f"{s} {stats['splits'][s]['rows']}" for s in SPLITS),
        sum(data.skipped.values()),
    )
    return {
        "rows": written,
        **{f"{split}_rows": stats["splits"][split]["rows"] for split in SPLITS},
        "labels": len(data.labels),
        "skipped": sum(data.skipped.values()),
    }
