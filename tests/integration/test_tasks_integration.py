"""A user task on real data (issue #12's README example): a binary review file built from KNBC's
評判 annotations, added with `jpipe task add`, trained and evaluated; the BiLSTM must beat the
TF-IDF baseline trained on the same split."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

pytestmark = pytest.mark.integration


def write_review_csv(project, path) -> int:
    """positive / negative KNBC sentences (neutral left out), grouped by article."""
    rows = [json.loads(line) for line in (project / "data/prepared/sentences.jsonl").read_text(encoding="utf-8").splitlines()]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "article", "body", "stars"])
        kept = [r for r in rows if r["sentiment"] in ("positive", "negative")]
        writer.writerows([r["sentence_id"], r["article_id"], r["text"], r["sentiment"]] for r in kept)
    return len(kept)


@pytest.mark.slow  # five seeds of a classifier on the real review task
def test_review_task_beats_tfidf(real_project, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    project = tmp_path / "proj"
    shutil.copytree(real_project, project)
    assert write_review_csv(project, project / "reviews.csv") == 1761
    runner = CliRunner()
    base = ["--dir", str(project)]
    added = runner.invoke(
        app,
        [
            *base,
            "task",
            "add",
            "reviews",
            "--data",
            str(project / "reviews.csv"),
            "--text-column",
            "body",
            "--label-column",
            "stars",
            "--group-column",
            "article",
        ],
    )
    assert added.exit_code == 0, added.output
    ran = runner.invoke(app, [*base, "run", "evaluate_reviews"])
    assert ran.exit_code == 0, ran.output
    report = json.loads((project / "models/report/tasks/reviews/report.json").read_text(encoding="utf-8"))
    bilstm, tfidf = report["bilstm_attention"]["macro_f1"], report["tfidf_linear"]["macro_f1"]
    assert bilstm > tfidf > report["majority"]["macro_f1"], (bilstm, tfidf)
    classified = runner.invoke(
        app, [*base, "classify", "-", "--task", "reviews"], input="店員の対応が最悪でした。\n景色が素晴らしくて感動した。\n"
    )
    labels = [json.loads(line)["reviews"]["label"] for line in classified.stdout.splitlines()]
    assert labels == ["negative", "positive"]
