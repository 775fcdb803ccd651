"""`jpipe analyze` on the real KNBC test sentences, and its report in a real browser.

A copy of the session's tokenized project gets small real models (topic and sentiment classifiers, one
epoch; an extractor, one seed of two epochs: about a minute on 2 CPU cores; they check the plumbing, not
quality). The 437 test sentences are written as a CSV with ids and made-up dates (one review every
two days, every 40th date unreadable) and analyzed:

- analysis.json: every row counted once (analyzed + failed), label counts equal to those of
  `jpipe classify` on the same file, opinions consistent (polarity counts, examples quoting their review),
  the timeline holding every dated review;
- index.html in Debian's chromium (Playwright, launched as in test_serve_browser.py): every count the page
  renders equals analysis.json; the render time is printed (not asserted), a screenshot lands in tmp_path.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.conftest import SMALL_CLASSIFIER_SETTINGS, run_stage

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def analyzed(real_project, tmp_path_factory):
    """(project, the reviews CSV, the report directory) after `jpipe analyze` on the test sentences."""
    import torch
    from typer.testing import CliRunner

    from pipeline.cli import app

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("analyze")
    project = root / "proj"
    shutil.copytree(real_project, project)
    for task in ("topic", "sentiment"):
        run_stage(project, f"train_{task}", [f"tasks.{task}.classifier.{s}" for s in SMALL_CLASSIFIER_SETTINGS])
    extractor = ["train_extractor.seeds=1", "train_extractor.epochs=2", "train_extractor.patience=1", "train_extractor.device=cpu"]
    run_stage(project, "train_extractor", extractor)
    reviews = root / "reviews.csv"
    write_reviews(project, reviews)
    out = root / "report"
    args = ["--dir", str(project), "analyze", str(reviews), "--text-column", "review", "--id-column", "id", "--date-column", "date"]
    result = CliRunner().invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return project, reviews, out


def write_reviews(project: Path, path: Path) -> int:
    rows = [json.loads(line) for line in (project / "data/prepared/sentences.jsonl").read_text(encoding="utf-8").splitlines()]
    test = [row for row in rows if row["split"] == "test"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "date"])
        for index, row in enumerate(test):
            day = "unknown" if index % 40 == 39 else (date(2026, 1, 1) + timedelta(days=2 * index)).isoformat()
            writer.writerow([row["sentence_id"], row["text"], day])
    return len(test)


def test_analysis_json_counts_every_row_and_agrees_with_classify(analyzed):
    from typer.testing import CliRunner

    from pipeline.cli import app

    project, reviews, out = analyzed
    data = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert data["rows"] == 437 and data["analyzed"] + data["errors"] == 437
    classified = CliRunner().invoke(
        app, ["--dir", str(project), "classify", str(reviews), "--text-column", "review", "--id-column", "id", "--workers", "1"]
    )
    assert classified.exit_code == 0, classified.output
    rows = [json.loads(line) for line in classified.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 437 and sum(row["error"] is not None for row in rows) == data["errors"]
    for task in ("topic", "sentiment"):
        expected = Counter(row[task]["label"] for row in rows if row[task])
        assert {label: n for label, n in data["tasks"][task]["counts"].items() if n} == dict(expected)
        assert len(data["tasks"][task]["least_confident"]) == 10


def test_opinions_and_timeline_are_consistent(analyzed):
    _, _, out = analyzed
    data = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    opinions = data["opinions"]
    assert opinions["extracted"] and opinions["sentences"] >= data["analyzed"]
    assert sum(opinions["polarity"].values()) == opinions["records"]
    assert all(term["count"] == term["positive"] + term["negative"] + term["neutral"] for term in opinions["expressions"])
    for term in opinions["targets"] + opinions["expressions"]:
        for example in term["examples"]:
            assert example["sentence"] in data["reviews"][example["review"]]["text"]
    timeline = data["timeline"]
    assert timeline["bad_dates"] == sum(1 for i in range(437) if i % 40 == 39)
    assert timeline["dated"] + timeline["bad_dates"] == data["analyzed"]
    assert sum(bucket["reviews"] for bucket in timeline["buckets"]) == timeline["dated"]
    assert timeline["unit"] == "month"  # 437 reviews two days apart: more than WEEKLY_SPAN_DAYS


def test_report_renders_the_counts_of_analysis_json_in_chromium(analyzed, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (`make install` apt-installs it with fonts-noto-cjk when run as root)")
    from playwright.sync_api import sync_playwright

    _, _, out = analyzed
    data = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        started = time.perf_counter()
        page.goto((out / "index.html").as_uri(), wait_until="load")
        print(f"report rendered in {time.perf_counter() - started:.3f} s")
        rendered = page.eval_on_selector_all(
            "td.count", "cells => cells.map(c => [c.dataset.task, c.dataset.label, Number(c.textContent)])"
        )
        assert {(task, label, count) for task, label, count in rendered} == {
            (task, label, count) for task, info in data["tasks"].items() for label, count in info["counts"].items()
        }
        for key in ("rows", "analyzed", "errors"):
            assert int(page.locator(f"#summary-{key}").inner_text().replace(",", "")) == data[key]
        assert int(page.locator("#timeline-bad-dates").inner_text()) == data["timeline"]["bad_dates"]
        for kind in ("targets", "expressions"):
            counts = page.eval_on_selector_all(f"#{kind} tr.term td[data-field=count]", "cells => cells.map(c => Number(c.textContent))")
            assert counts == [term["count"] for term in data["opinions"][kind]]
        links = page.eval_on_selector_all("a[href^='#review-']", "links => links.map(a => a.getAttribute('href').slice(1))")
        assert links and all(page.locator(f"[id='{anchor}']").count() == 1 for anchor in set(links))
        assert page.locator("svg.timeline").count() == len(data["tasks"])
        page.screenshot(path=str(tmp_path / "analyze-report.png"), full_page=False)
        browser.close()
