"""``index.html`` of ``jpipe analyze``: one self-contained page rendered from ``analysis.json``.

Inline CSS, a few lines of inline JavaScript (the attention shading switch) and inline SVG charts; no
external file, font or script, so it opens offline. Japanese text uses the system's CJK fonts (Noto Sans
CJK JP, Hiragino, Yu Gothic, Meiryo). Every count shown carries ``data-*`` attributes naming what it
counts, so a test can read the rendered page back against ``analysis.json``.
"""

from __future__ import annotations

from html import escape
from typing import Any

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
FONT_STACK = '"Noto Sans CJK JP", "Noto Sans JP", "Hiragino Sans", "Hiragino Kaku Gothic ProN", "Yu Gothic", Meiryo, sans-serif'
_CSS = """
body { font-family: FONTS; margin: 0 auto; max-width: 1100px; padding: 1rem 1.5rem; color: #222; line-height: 1.55; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; padding-bottom: .2rem; margin-top: 1.6rem; } h3 { margin: .6rem 0 .2rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; } th, td { padding: .25rem .6rem; border-bottom: 1px solid #eee; vertical-align: top; }
th { text-align: left; background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.summary span { display: inline-block; margin-right: 1.5rem; } .summary b { font-size: 1.3rem; }
.pos { color: #2a7a2a; } .neg { color: #c0392b; } .muted { color: #777; font-size: .9rem; }
.examples { margin: 0; padding-left: 1.1rem; font-size: .92rem; } .review { border: 1px solid #e3e3e3; border-radius: 6px; padding: .5rem .8rem; margin: .6rem 0; }
.review:target { outline: 3px solid #f2c14e; } .tok { border-radius: 2px; } body.plain .tok { background: none !important; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; } .legend span { margin-right: .8rem; font-size: .9rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .25rem; vertical-align: middle; }
""".replace("FONTS", FONT_STACK)
_SCRIPT = """
document.getElementById('shade').addEventListener('change', function (e) { document.body.classList.toggle('plain', !e.target.checked); });
"""


def render_report(data: dict[str, Any]) -> str:
    """The whole page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="ja"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>jpipe analyze: {escape(str(data.get('source') or 'reviews'))}</title>",
        f"<style>{_CSS}</style></head><body>",
        _summary(data),
        _distributions(data),
        _opinions(data["opinions"]),
        _least_confident(data),
        _timeline(data),
        _reviews(data),
        f"<script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _summary(data: dict[str, Any]) -> str:
    seconds = f" in {data['seconds']:.1f} s" if data.get("seconds") is not None else ""
    items = [("rows", "reviews read"), ("analyzed", "analyzed"), ("errors", "failed")]
    spans = "".join(f'<span><b id="summary-{key}" data-count="{data[key]}">{data[key]:,}</b> {label}</span>' for key, label in items)
    errors = ""
    if data["error_examples"]:
        errors = '<p class="muted">Failed rows, e.g.: ' + "; ".join(escape(e) for e in data["error_examples"]) + "</p>"
    return (
        f'<h1>Review analysis</h1><p class="muted">{escape(str(data.get("source") or ""))}{seconds} · '
        '<label><input type="checkbox" id="shade" checked> attention shading</label></p>'
        f'<div class="summary">{spans}</div>{errors}'
    )


def _bar(count: int, peak: int, color: str) -> str:
    """An inline SVG bar of ``count`` relative to ``peak`` (one table cell of the label chart)."""
    width = 160 * count / (peak or 1)
    return f'<svg width="164" height="14" role="img" aria-label="{count}"><rect x="0" y="1" width="{width:.1f}" height="12" fill="{color}"></rect></svg>'


def _distributions(data: dict[str, Any]) -> str:
    blocks = ["<h2>Labels</h2>", '<div class="charts">']
    for task, info in data["tasks"].items():
        total = sum(info["counts"].values()) or 1
        peak = max(info["counts"].values(), default=0)
        rows = "".join(
            f'<tr><td>{escape(label)}</td><td class="num count" data-task="{escape(task)}" data-label="{escape(label)}">{count}</td>'
            f'<td class="num">{100 * count / total:.1f} %</td><td>{_bar(count, peak, PALETTE[i % len(PALETTE)])}</td></tr>'
            for i, (label, count) in enumerate(info["counts"].items())
        )
        blocks.append(
            f'<div><h3>{escape(task)}</h3><table class="labels" data-task="{escape(task)}"><tr><th>label</th><th>reviews</th><th>share</th>'
            f"<th></th></tr>{rows}</table></div>"
        )
    return "".join(blocks) + "</div>"


def _terms(kind: str, title: str, terms: list[dict[str, Any]]) -> str:
    if not terms:
        return f'<h3>{title}</h3><p class="muted">none found</p>'
    rows = []
    for rank, term in enumerate(terms, start=1):
        examples = "".join(
            f'<li><a href="#{e["review"]}">{escape(e["sentence"])}</a> <span class="muted">{escape(e["type"])}</span></li>'
            for e in term["examples"]
        )
        rows.append(
            f'<tr class="term" data-kind="{kind}" data-rank="{rank}"><td>{escape(term["text"])}</td>'
            f'<td class="num" data-field="count">{term["count"]}</td><td class="num pos" data-field="positive">{term["positive"]}</td>'
            f'<td class="num neg" data-field="negative">{term["negative"]}</td><td><ul class="examples">{examples}</ul></td></tr>'
        )
    header = "<tr><th>text</th><th>count</th><th>+</th><th>−</th><th>example sentences</th></tr>"
    return f'<h3>{title}</h3><table id="{kind}">{header}{"".join(rows)}</table>'


def _opinions(opinions: dict[str, Any]) -> str:
    if not opinions["extracted"]:
        return f'<h2>Opinions (評判)</h2><p class="muted" id="opinions-note">{escape(opinions["note"] or "not extracted")}</p>'
    polarity = opinions["polarity"]
    counts = (
        f'<p><span id="opinion-records" data-count="{opinions["records"]}">{opinions["records"]:,}</span> opinions in '
        f'{opinions["sentences"]:,} sentences: <span class="pos">{polarity["+"]:,} positive</span>, '
        f'<span class="neg">{polarity["-"]:,} negative</span>, {polarity["none"]:,} without polarity (当為, 要望).</p>'
    )
    pruned = '<p class="muted">Counts are lower bounds: more distinct strings than the counter keeps.</p>' if opinions["pruned"] else ""
    return (
        "<h2>Opinions (評判)</h2>"
        + counts
        + pruned
        + _terms("targets", "Top targets", opinions["targets"])
        + _terms("expressions", "Top expressions", opinions["expressions"])
    )


def _least_confident(data: dict[str, Any]) -> str:
    blocks = [
        "<h2>Least confident reviews</h2>",
        '<p class="muted">Smallest margin between the two most probable labels: the reviews worth labelling next.</p>',
    ]
    for task, info in data["tasks"].items():
        rows = "".join(
            f'<tr><td><a href="#{item["review"]}">{escape(str(data["reviews"][item["review"]]["id"]))}</a></td>'
            f"<td>{_shaded(data['reviews'][item['review']]['highlight'], data['reviews'][item['review']]['text'] or '')}</td>"
            f'<td>{escape(item["label"])}</td><td class="num">{item["probability"]:.3f}</td><td class="num">{item["margin"]:.3f}</td></tr>'
            for item in info["least_confident"]
        )
        blocks.append(
            f'<h3>{escape(task)}</h3><table class="least" data-task="{escape(task)}"><tr><th>review</th><th>text (shaded by attention)</th><th>label</th>'
            f"<th>probability</th><th>margin</th></tr>{rows}</table>"
        )
    return "".join(blocks)


def _share_chart(task: str, labels: list[str], buckets: list[dict[str, Any]]) -> str:
    """Stacked bars of each label's share per bucket."""
    width, height, left, bottom = 520, 200, 36, 30
    step = (width - left) / max(1, len(buckets))
    bars = []
    for b, bucket in enumerate(buckets):
        counts = bucket["counts"].get(task, {})
        total = sum(counts.values()) or 1
        y = height - bottom
        for i, label in enumerate(labels):
            share = counts.get(label, 0) / total
            h = (height - bottom - 10) * share
            y -= h
            bars.append(
                f'<rect x="{left + b * step + 1:.1f}" y="{y:.1f}" width="{max(1.0, step - 2):.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(bucket["start"])} {escape(label)}: {counts.get(label, 0)} ({100 * share:.0f} %)</title></rect>'
            )
        if b % max(1, -(-len(buckets) // 7)) == 0:  # at most 7 dates under the axis
            bars.append(f'<text x="{left + b * step:.1f}" y="{height - bottom + 14}" font-size="10">{escape(bucket["start"])}</text>')
    axis = "".join(
        f'<text x="0" y="{height - bottom - (height - bottom - 10) * v + 4:.1f}" font-size="10">{int(v * 100)}%</text>' for v in (0, 0.5, 1)
    )
    legend = "".join(
        f'<span><i class="swatch" style="background:{PALETTE[i % len(PALETTE)]}"></i>{escape(label)}</span>'
        for i, label in enumerate(labels)
    )
    return (
        f'<div><h3>{escape(task)}</h3><svg class="timeline" data-task="{escape(task)}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(task)} label shares over time">{axis}{"".join(bars)}</svg><div class="legend">{legend}</div></div>'
    )


def _timeline(data: dict[str, Any]) -> str:
    timeline = data.get("timeline")
    if not timeline:
        return ""
    note = (
        f'<p class="muted">Column {escape(timeline["date_column"])}, per {timeline["unit"]}: '
        f'<span id="timeline-dated" data-count="{timeline["dated"]}">{timeline["dated"]:,}</span> dated reviews; '
        f'<span id="timeline-bad-dates" data-count="{timeline["bad_dates"]}">{timeline["bad_dates"]:,}</span> with a date that does not parse '
        "(kept in every other count, left out of the timeline)"
        + (": " + "; ".join(escape(e) for e in timeline["bad_date_examples"]) if timeline["bad_date_examples"] else "")
        + ".</p>"
    )
    charts = "".join(_share_chart(task, info["labels"], timeline["buckets"]) for task, info in data["tasks"].items())
    return f'<h2>Label shares over time</h2>{note}<div class="charts">{charts}</div>'


def _shaded(highlight: dict[str, Any] | None, text: str) -> str:
    """The review's tokens shaded by attention (relative to its largest weight); the plain text without attention."""
    if not highlight:
        return escape(text)
    peak = max(highlight["weights"], default=0) or 1
    spans = "".join(
        f'<span class="tok" style="background: rgba(230, 80, 40, {0.75 * w / peak:.2f})">{escape(t)}</span>'
        for t, w in zip(highlight["tokens"], highlight["weights"], strict=True)
    )
    return spans


def _reviews(data: dict[str, Any]) -> str:
    task = data.get("highlight_task")
    blocks = [
        "<h2>Reviews cited above</h2>",
        f'<p class="muted">Shaded by the attention of the {escape(str(task))} classifier (darker: more attended).</p>',
    ]
    for anchor, review in data["reviews"].items():
        labels = ", ".join(f"{escape(t)}: {escape(label)}" for t, label in review["labels"].items())
        blocks.append(
            f'<div class="review" id="{anchor}"><div class="muted">row {review["row"]} · id {escape(str(review["id"]))} · {labels}</div>'
            f"<div>{_shaded(review['highlight'], review['text'] or '')}</div></div>"
        )
    return "".join(blocks)
