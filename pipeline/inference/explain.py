"""Which tokens a classifier looked at: per-token attention for one text, and an HTML heatmap;
the extractor's decoder alignment as a PNG and HTML heatmap."""

from __future__ import annotations

import json
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


# ------------------------------------------------------- extractor alignment
def alignment_html(explanation: dict[str, Any]) -> str:
    """A standalone HTML table: one row per output token, one column per input token, cells shaded by attention."""
    from html import escape

    head = "".join(f"<th>{escape(token)}</th>" for token in explanation["input_tokens"])
    rows = []
    for token, weights in zip(explanation["output_tokens"], explanation["attention"], strict=True):
        peak = max(weights, default=0.0) or 1.0
        cells = "".join(f'<td style="background: rgba(220, 38, 38, {w / peak:.3f})" title="{w:.4f}">{w:.2f}</td>' for w in weights)
        rows.append(f"<tr><th>{escape(token)}</th>{cells}</tr>")
    records = "".join(f"<li>{escape(json.dumps(r, ensure_ascii=False))}</li>" for r in explanation["records"])
    return f"""<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><title>jpipe extract: alignment</title>
<style>
body {{ font-family: "Noto Sans JP", "Hiragino Sans", "Yu Gothic", sans-serif; margin: 2em; }}
td, th {{ padding: 0.2em 0.3em; font-size: 0.9em; text-align: center; }}
</style></head><body>
<h1>Decoder alignment</h1>
<p>Rows: the decoder's output tokens; columns: the input tokens; darker = more attention (row-normalised shading, hover for the weight).</p>
<table><tr><th></th>{head}</tr>{"".join(rows)}</table>
<h2>Records</h2><ul>{records}</ul>
<p><small>Text: {escape(explanation["text"])}</small></p>
</body></html>
"""


def plot_alignment(explanation: dict[str, Any], *, path: Path) -> None:
    """The alignment heatmap as a PNG (Japanese labels through japanize_matplotlib)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with warnings.catch_warnings():  # japanize_matplotlib uses distutils' LooseVersion
        warnings.simplefilter("ignore")
        import japanize_matplotlib  # noqa: F401  (registers IPAexGothic: Japanese labels instead of boxes)
    from pipeline.io import atomic_path

    weights = np.asarray(explanation["attention"], dtype=float).reshape(len(explanation["output_tokens"]), len(explanation["input_tokens"]))
    inputs, outputs = explanation["input_tokens"], explanation["output_tokens"]
    figure, axis = plt.subplots(figsize=(max(4.0, 0.45 * len(inputs) + 1.5), max(2.5, 0.4 * len(outputs) + 1.5)))
    image = axis.imshow(weights, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
    axis.set_xticks(range(len(inputs)), inputs, rotation=90)
    axis.set_yticks(range(len(outputs)), outputs)
    axis.set_xlabel("input tokens")
    axis.set_ylabel("decoder output")
    figure.colorbar(image, ax=axis, fraction=0.03)
    figure.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


def write_alignment(explanation: dict[str, Any], *, directory: Path) -> dict[str, Path]:
    """``extract-<hash>.png`` and ``.html`` in ``directory``; returns their paths."""
    from pipeline.io import atomic_open, sha256_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"extract-{sha256_text(explanation['text'])[:10]}"
    paths = {"png": stem.with_suffix(".png"), "html": stem.with_suffix(".html")}
    plot_alignment(explanation, path=paths["png"])
    with atomic_open(paths["html"]) as handle:
        handle.write(alignment_html(explanation))
    return paths
