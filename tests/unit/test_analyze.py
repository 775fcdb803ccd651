"""`jpipe analyze`: the streaming aggregate (counts, top-k, least confident, dates), the HTML page, the errors;
then the command on tiny trained classifiers and a tiny trained extractor."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from pipeline.data.readers import InputRecord
from pipeline.errors import InputError
from pipeline.evaluation.analysis import (
    Analysis,
    AnalysisSettings,
    LeastConfident,
    TermCounter,
    check_jsonl_field,
    check_not_empty,
    parse_date,
    split_sentences,
    timeline_buckets,
)
from pipeline.evaluation.analysis_report import render_report
from pipeline.inference.classifier import Prediction

TASKS = {"topic": ["Gourmet", "Kyoto"], "sentiment": ["negative", "positive"]}


def prediction(label: str, other: str, p: float) -> Prediction:
    return Prediction(label=label, probabilities={label: p, other: 1 - p}, tokens=["京都", "は", "良い"], weights=[0.6, 0.1, 0.3])


def add(analysis: Analysis, seq: int, *, topic: str, sentiment: str, p: float = 0.9, opinions=None, day: str | None = None) -> None:
    other = {"Gourmet": "Kyoto", "Kyoto": "Gourmet", "positive": "negative", "negative": "positive"}
    record = InputRecord(id=f"r{seq}", text=f"レビュー{seq}。", fields={"date": day}, line=seq)
    predictions = {"topic": prediction(topic, other[topic], p), "sentiment": prediction(sentiment, other[sentiment], 0.8)}
    analysis.add(record, predictions, opinions)


def opinion(target: str, expression: str, polarity: str) -> dict:
    kind = {"+": "批評＋", "-": "批評−"}.get(polarity, "要望")
    return {"type": kind, "polarity": polarity if polarity != "none" else None, "expression": expression, "target": target}


def test_counts_top_terms_least_confident_and_failures():
    analysis = Analysis(tasks=TASKS, settings=AnalysisSettings(top=2, examples=2, least_confident=2))
    add(analysis, 1, topic="Kyoto", sentiment="positive", p=0.95, opinions=[("寺が良い。", opinion("寺", "良い", "+"))])
    add(analysis, 2, topic="Kyoto", sentiment="negative", p=0.51, opinions=[("寺が暗い。", opinion("寺", "暗い", "-"))])
    add(analysis, 3, topic="Gourmet", sentiment="positive", p=0.6, opinions=[("店が良い。", opinion("店", "良い", "+"))])
    add(
        analysis,
        4,
        topic="Kyoto",
        sentiment="positive",
        p=0.7,
        opinions=[("寺が良い。", opinion("寺", "良い", "+")), ("欲しい。", opinion("", "欲しい", "none"))],
    )
    analysis.add_error(InputRecord(id="bad", text="", line=5), "empty text")
    data = analysis.to_json(source="x.csv")
    assert (data["rows"], data["analyzed"], data["errors"]) == (5, 4, 1)
    assert data["error_examples"] == ["row bad: empty text"]
    assert data["tasks"]["topic"]["counts"] == {"Gourmet": 1, "Kyoto": 3}
    assert data["tasks"]["sentiment"]["counts"] == {"negative": 1, "positive": 3}
    assert [t["text"] for t in data["opinions"]["targets"]] == ["寺", "店"]  # top 2, 寺 three times
    temple = data["opinions"]["targets"][0]
    assert (temple["count"], temple["positive"], temple["negative"]) == (3, 2, 1)
    assert len(temple["examples"]) == 2 and temple["examples"][0]["review"] == "review-1"
    assert data["opinions"]["polarity"] == {"+": 3, "-": 1, "none": 1}
    assert data["opinions"]["expressions"][0] == {**data["opinions"]["expressions"][0], "text": "良い", "count": 3, "positive": 3}
    least = data["tasks"]["topic"]["least_confident"]
    assert [item["review"] for item in least] == ["review-2", "review-3"]  # margins 0.02, 0.2
    assert least[0]["margin"] == pytest.approx(0.02)
    assert set(data["reviews"]) >= {"review-1", "review-2", "review-3"}  # every cited review is in the page
    assert data["reviews"]["review-2"]["highlight"]["task"] == "sentiment"


def test_least_confident_heap_keeps_the_smallest_margins():
    heap = LeastConfident(size=3)
    for seq, margin in enumerate([0.9, 0.1, 0.5, 0.05, 0.7, 0.3], start=1):
        heap.add(margin=margin, seq=seq, item={"seq": seq})
    assert [item["seq"] for item in heap.items()] == [4, 2, 6]


def test_term_counter_stays_bounded_and_says_when_counts_are_lower_bounds():
    counter = TermCounter(capacity=4, examples=1)
    for _ in range(5):
        counter.add("多い", polarity="+", example={"n": 1})
    for index in range(10):
        counter.add(f"稀{index}", polarity="-", example={"n": index})
    assert len(counter.entries) <= 4 and counter.pruned
    assert counter.top(1)[0][0] == "多い" and counter.top(1)[0][1]["count"] == 5
    assert all(len(entry["examples"]) <= 1 for entry in counter.entries.values())


def test_dates_parse_bucket_by_week_or_month_and_bad_ones_are_counted():
    assert parse_date("2024-05-01") == date(2024, 5, 1)
    assert parse_date("2024/5/1") == date(2024, 5, 1)
    assert parse_date("2024-05-01T10:20:00Z") == date(2024, 5, 1)
    assert parse_date("2024年5月1日") == date(2024, 5, 1)
    assert parse_date("yesterday") is None and parse_date("") is None and parse_date(None) is None
    assert parse_date("2024-13-40") is None
    analysis = Analysis(tasks=TASKS, date_column="date")
    add(analysis, 1, topic="Kyoto", sentiment="positive", day="2024-05-01")  # a Wednesday
    add(analysis, 2, topic="Gourmet", sentiment="positive", day="2024-05-05")  # the Sunday of the same week
    add(analysis, 3, topic="Kyoto", sentiment="negative", day="2024-05-06")  # the next Monday
    add(analysis, 4, topic="Kyoto", sentiment="negative", day="not a date")
    add(analysis, 5, topic="Kyoto", sentiment="negative", day=None)
    timeline = analysis.to_json()["timeline"]
    assert (timeline["unit"], timeline["dated"], timeline["bad_dates"]) == ("week", 3, 2)
    assert timeline["bad_date_examples"] == ["row r4: 'not a date'", "row r5: None"]
    assert [b["start"] for b in timeline["buckets"]] == ["2024-04-29", "2024-05-06"]
    assert timeline["buckets"][0]["counts"]["topic"] == {"Gourmet": 1, "Kyoto": 1}
    assert sum(b["reviews"] for b in timeline["buckets"]) == 3
    per_day = {date(2024, 1, 31): {"topic": Counter(Kyoto=1)}, date(2024, 9, 2): {"topic": Counter(Kyoto=2)}}
    unit, buckets = timeline_buckets(per_day)
    assert unit == "month" and [b["start"] for b in buckets] == ["2024-01-01", "2024-09-01"]


def test_sentences_are_split_with_their_offsets():
    text = "料理が美味しい。店員が遅い！！\nまた行く"
    assert split_sentences(text) == [(0, "料理が美味しい。"), (8, "店員が遅い！！"), (16, "また行く")]
    assert all(text[start : start + len(s)] == s for start, s in split_sentences(text))
    assert split_sentences("   ") == []


def test_html_is_self_contained_and_holds_the_counts():
    analysis = Analysis(tasks=TASKS, date_column="date")
    add(analysis, 1, topic="Kyoto", sentiment="positive", opinions=[("寺が<良い>。", opinion("寺", "<良い>", "+"))], day="2024-05-01")
    add(analysis, 2, topic="Kyoto", sentiment="negative", day="bad")
    analysis.add_error(InputRecord(id="x", text=None, line=3), "not valid UTF-8")
    page = render_report(analysis.to_json(source="reviews.csv"))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "<script src" not in page and "<link" not in page and "Noto Sans CJK JP" in page
    assert '<td class="num count" data-task="topic" data-label="Kyoto">2</td>' in page
    assert 'id="summary-errors" data-count="1"' in page and 'id="timeline-bad-dates" data-count="1"' in page
    assert 'href="#review-1"' in page and 'id="review-1"' in page
    assert "&lt;良い&gt;" in page and "<良い>" not in page  # escaped
    assert '<svg class="timeline" data-task="sentiment"' in page


def test_no_extractor_note_and_the_input_errors(tmp_path):
    analysis = Analysis(tasks=TASKS, extractor_note="No opinions: no extractor.")
    with pytest.raises(InputError) as empty:
        check_not_empty(analysis, source="empty.csv")
    assert empty.value.code == "E237"
    add(analysis, 1, topic="Kyoto", sentiment="positive", opinions=None)
    page = render_report(analysis.to_json())
    assert "No opinions: no extractor." in page
    source = tmp_path / "r.jsonl"
    source.write_text('{"body": "良い", "day": "2024-01-01"}\n', encoding="utf-8")
    with pytest.raises(InputError) as missing:
        check_jsonl_field(str(source), field_name="text")
    assert missing.value.code == "E235" and "'body', 'day'" in missing.value.hint
    check_jsonl_field(str(source), field_name="body")


# ------------------------------------------------------------------ the command on tiny trained models
@pytest.fixture(scope="module")
def analyze_project(tmp_path_factory) -> Path:
    """Tiny topic + sentiment classifiers and a tiny extractor (trained apart, copied in): a few seconds on CPU."""
    pytest.importorskip("torch")
    pytest.importorskip("sudachipy")
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner
    from pipeline.workflow.stages import build_stages
    from tests.conftest import fast_overrides, run_stage, write_tiny_project
    from tests.unit.test_extractor import FAST, write_extractor_project

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("analyze")
    project = write_tiny_project(root / "proj")
    config = load_config(project, fast_overrides("topic", "max_tokens=8") + fast_overrides("sentiment", "max_tokens=8"))
    Runner(project, config, stages=[s for s in build_stages(config) if s.name in ("train_topic", "train_sentiment")]).run()
    extractor = write_extractor_project(root / "ex")
    run_stage(extractor, "train_extractor", [*FAST, "train_extractor.epochs=12", "train_extractor.patience=12"])
    shutil.copytree(extractor / "models/extractor", project / "models/extractor")
    return project


def invoke(project: Path, *args: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    return CliRunner().invoke(app, ["--dir", str(project), *args])


def test_analyze_writes_json_and_html_with_opinions_dates_and_failures(analyze_project, tmp_path):
    source = tmp_path / "reviews.csv"
    rows = [
        "id,body,day",
        "a,ラーメンが美味しい。京都の寺は最高,2024-03-01",
        "b,,2024-03-02",
        "c,携帯の画面が最悪,someday",
        "d,野球の試合,2024-04-20",
    ]
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "report"
    result = invoke(
        analyze_project, "analyze", str(source), "--text-column", "body", "--id-column", "id", "--date-column", "day", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
    assert (data["rows"], data["analyzed"], data["errors"]) == (4, 3, 1)
    assert data["error_examples"] == ["row b: empty text"]
    assert set(data["tasks"]) == {"topic", "sentiment"}
    assert all(sum(task["counts"].values()) == 3 for task in data["tasks"].values())
    assert data["opinions"]["extracted"] and data["opinions"]["sentences"] == 4  # the first review has two sentences
    assert data["timeline"]["dated"] == 2 and data["timeline"]["bad_dates"] == 1
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="summary-rows" data-count="4"' in page
    assert "analyzed 3 of 4 rows" in result.output


def test_analyze_without_extractor_notes_it(analyze_project, tmp_path):
    source = tmp_path / "reviews.txt"
    source.write_text("ラーメンが美味しい\n京都の寺\n", encoding="utf-8")
    result = invoke(analyze_project, "analyze", str(source), "--no-extract", "--task", "topic", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "out/analysis.json").read_text(encoding="utf-8"))
    assert list(data["tasks"]) == ["topic"] and not data["opinions"]["extracted"] and data["timeline"] is None
    assert sum(data["tasks"]["topic"]["counts"].values()) == 2


def test_analyze_bad_inputs_are_coded_errors(analyze_project, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("id,body\n1,良い\n", encoding="utf-8")
    missing = invoke(analyze_project, "analyze", str(source), "--text-column", "review", "-o", str(tmp_path / "o1"))
    assert isinstance(missing.exception, InputError) and missing.exception.code == "E235"
    assert "'id', 'body'" in missing.exception.hint  # the columns there are
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"body": "良い"}\n', encoding="utf-8")
    missing = invoke(analyze_project, "analyze", str(jsonl), "-o", str(tmp_path / "o1"))
    assert isinstance(missing.exception, InputError) and missing.exception.code == "E235" and "'body'" in missing.exception.hint
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    result = invoke(analyze_project, "analyze", str(empty), "-o", str(tmp_path / "o2"))
    assert isinstance(result.exception, InputError) and result.exception.code == "E237"
    assert not (tmp_path / "o2" / "analysis.json").exists()
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,body\n", encoding="utf-8")
    result = invoke(analyze_project, "analyze", str(header_only), "--text-column", "body", "-o", str(tmp_path / "o3"))
    assert isinstance(result.exception, InputError) and result.exception.code == "E237"


def test_batched_extraction_equals_one_sentence_at_a_time(analyze_project):
    from pipeline.evaluation.analysis import prepare_sentences, review_opinions
    from pipeline.inference.extractor import Extractor

    extractor = Extractor.from_dir(analyze_project / "models/extractor")
    texts = ["店が美味しい。寺に行く。", "駅が遠い", "携帯が最悪。店が美味しい。駅が遠い。"]
    prepared = prepare_sentences(extractor, texts)
    assert prepared.owners == [0, 0, 1, 2, 2, 2]
    batched = review_opinions(extractor, prepared, len(texts))
    keys = ("type", "polarity", "expression", "target", "expression_span", "target_span")
    for text, found in zip(texts, batched, strict=True):
        alone = [(s, r) for _, s in split_sentences(text) for r in extractor.extract_one(s)]
        assert [(s, {k: r[k] for k in keys}) for s, r in found] == [(s, {k: r[k] for k in keys}) for s, r in alone]
    assert any(found for found in batched)  # the tiny extractor finds the 批評 of 美味しい / 最悪 / 遠い


def test_the_unspecified_target_is_not_a_top_target():
    analysis = Analysis(tasks=TASKS)
    add(analysis, 1, topic="Kyoto", sentiment="positive", opinions=[("楽しい。", opinion("不定", "楽しい", "+"))])
    data = analysis.to_json()
    assert data["opinions"]["targets"] == [] and data["opinions"]["expressions"][0]["text"] == "楽しい"


def test_worker_processes_give_the_figures_of_the_in_process_path(analyze_project, tmp_path):
    source = tmp_path / "reviews.csv"
    texts = ["ラーメンが美味しい。店が遠い", "", "携帯の画面が最悪", "京都の寺は最高。また行く", "野球の試合", "店が美味しい"]
    lines = ["id,body,day"] + [f"r{i},{text},2024-0{1 + i % 3}-1{i % 9}" for i, text in enumerate(texts * 3)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    figures = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        args = ["analyze", str(source), "--text-column", "body", "--id-column", "id", "--date-column", "day", "--batch-size", "4"]
        result = invoke(analyze_project, *args, "--workers", workers, "-o", str(out))
        assert result.exit_code == 0, result.output
        data = json.loads((out / "analysis.json").read_text(encoding="utf-8"))
        assert data["workers"] == int(workers)
        figures[workers] = {
            k: v for k, v in data.items() if k not in ("seconds", "reviews_per_second", "workers", "worker_memory", "parent_memory")
        }
    assert figures["1"]["rows"] == 18 and figures["1"]["errors"] == 3
    assert figures["1"] == figures["2"]
