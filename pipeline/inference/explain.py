"""Which tokens a classifier looked at: per-token attention for one text, and an HTML heatmap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.data.readers import check_text
from pipeline.errors import InputError
from pipeline.inference.batch import TaskClassifiers


def explain(text: str, *, classifiers: TaskClassifiers) -> dict[str, Any]:
    """Label, probabilities and per-token attention of each task for one text."""
    problem = check_text(text, max_chars=math.inf)
    if problem:
        raise InputError(
            "E236", f"Cannot explain: {problem}.", hint='Give a Japanese sentence, e.g. jpipe explain "ラーメンが美味しかった。"'
        )
    prediction = classifiers.classify([text])[0]
    return {
        "text": text,
        "tasks": {
            task: {
                "label": p.label,
                "probabilities": {label: round(value, 4) for label, value in p.probabilities.items()},
                "tokens": p.tokens,
                "weights": [round(w, 5) for w in p.weights],
                "windows": p.windows,
            }
            for task, p in prediction.items()
        },
    }


def explanation_html(explanation: dict[str, Any], *, task: str) -> str:
    """A standalone HTML page: the tokens on a white-to-red background by attention weight."""
    from html import escape

    info = explanation["tasks"][task]
    peak = max(info["weights"], default=0.0) or 1.0
    spans = []
    for token, weight in zip(info["tokens"], info["weights"], strict=True):
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


def write_explanation_html(explanation: dict[str, Any], *, html_dir: Path) -> dict[str, Path]:
    """One HTML file per task, named after the task and a hash of the text; returns their paths."""
    from pipeline.io import atomic_open, sha256_text

    html_dir = Path(html_dir)
    html_dir.mkdir(parents=True, exist_ok=True)
    digest = sha256_text(explanation["text"])[:10]
    paths = {}
    for task in explanation["tasks"]:
        path = html_dir / f"explain-{task}-{digest}.html"
        with atomic_open(path) as handle:
            handle.write(explanation_html(explanation, task=task))
        paths[task] = path
    return paths
