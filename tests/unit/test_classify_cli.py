"""`jpipe classify` / `jpipe explain` on tiny trained models: formats, the bad-row contract, exit codes."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sudachipy")

from typer.testing import CliRunner  # noqa: E402

from pipeline.cli import app  # noqa: E402
from tests.conftest import fast_overrides, write_tiny_project  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    """A tiny project with both classifiers trained (a few seconds on CPU)."""
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner
    from pipeline.workflow.stages import build_stages

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("classify") / "proj")
    config = load_config(project, fast_overrides("topic", "max_tokens=8") + fast_overrides("sentiment", "max_tokens=8"))
    Runner(project, config, stages=[s for s in build_stages(config) if s.name in ("train_topic", "train_sentiment")]).run()
    return project


def invoke(project: Path, *args: str, stdin: bytes | str | None = None):
    return runner.invoke(app, ["--dir", str(project), *args], input=stdin)


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_txt_bad_rows_get_an_error_and_the_batch_goes_on(trained_project, tmp_path):
    source = tmp_path / "reviews.txt"
    source.write_bytes(
        "ラーメンが美味しい。\n".encode()
        + b"\n"
        + b"   \t \n"
        + b"\xff\xfe broken \x80\n"
        + ("携帯" * 60 + "\n").encode()
        + "京都の寺は最高\n".encode()
    )
    result = invoke(trained_project, "classify", str(source), "--max-chars", "100")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [row["id"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    errors = {row["id"]: row["error"] for row in rows}
    assert errors["1"] is None and errors["6"] is None
    assert "empty" in errors["2"]
    assert "whitespace" in errors["3"]
    assert "UTF-8" in errors["4"]
    assert "over-long" in errors["5"] and "120" in errors["5"]
    good = rows[0]
    assert good["text"] == "ラーメンが美味しい。"
    assert set(good["topic"]["probabilities"]) == {"Gourmet", "Keitai", "Kyoto", "Sports"}
    assert sum(good["topic"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert set(good["sentiment"]["probabilities"]) == {"negative", "neutral", "positive"}
    assert good["topic"]["label"] == max(good["topic"]["probabilities"], key=good["topic"]["probabilities"].get)
    assert 1 <= len(good["topic"]["top_tokens"]) <= 5 and all(isinstance(t, str) and 0 <= w <= 1 for t, w in good["topic"]["top_tokens"])
    assert rows[1]["topic"] is None and rows[1]["sentiment"] is None
    assert "classified 2 of 6 rows" in result.stderr


def test_csv_missing_column_undecodable_and_ids(trained_project, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_bytes(
        b"review_id,body,stars\n"
        + "r1,ラーメンが美味しい。,5\n".encode()
        + b"r2\n"  # row without the body column
        + b"r3,\xff\xfe bad bytes,1\n"
        + 'r4,"京都の寺, 最高",4\n'.encode()
        + b"r5,,3\n"
    )
    out = tmp_path / "out.csv"
    result = invoke(trained_project, "classify", str(source), "--text-column", "body", "--id-column", "review_id", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [row["id"] for row in rows] == ["r1", "r2", "r3", "r4", "r5"]
    assert rows[0]["error"] == "" and rows[0]["topic"] in {"Gourmet", "Keitai", "Kyoto", "Sports"}
    assert sum(float(rows[0][f"topic_p_{label}"]) for label in ("Gourmet", "Keitai", "Kyoto", "Sports")) == pytest.approx(1.0, abs=1e-6)
    assert rows[0]["sentiment_top_tokens"]
    assert "missing column 'body'" in rows[1]["error"]
    assert "UTF-8" in rows[2]["error"]
    assert rows[3]["error"] == "" and rows[3]["text"] == "京都の寺, 最高"
    assert "empty" in rows[4]["error"]
    assert rows[1]["topic"] == "" and rows[1]["topic_p_Gourmet"] == ""


def test_wrong_text_column_is_a_clear_error(trained_project, tmp_path):
    source = tmp_path / "reviews.tsv"
    source.write_text("id\tbody\n1\tラーメン\n", encoding="utf-8")
    result = invoke(trained_project, "classify", str(source))
    assert result.exit_code != 0
    assert result.exception.code == "E235"
    assert "no column 'text'" in str(result.exception) and "'body'" in str(result.exception)
    ok = invoke(trained_project, "classify", str(source), "--text-column", "body", "--format", "csv")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.splitlines()[0].startswith("id,text,topic,topic_p_Gourmet")


def test_jsonl_bad_lines(trained_project, tmp_path):
    source = tmp_path / "reviews.jsonl"
    source.write_text(
        "\n".join(
            [
                json.dumps({"id": "a", "review": "ラーメンが美味しい"}, ensure_ascii=False),
                json.dumps({"id": "b", "other": "x"}),
                "{not json",
                json.dumps({"id": "d", "review": 42}),
                json.dumps(["a", "list"]),
                json.dumps({"id": "f", "review": "野球の試合が最高"}, ensure_ascii=False),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = invoke(trained_project, "classify", str(source), "--text-field", "review", "--id-column", "id", "--task", "sentiment")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [row["id"] for row in rows] == ["a", "b", "3", "d", "5", "f"]
    assert rows[0]["error"] is None and "topic" not in rows[0] and rows[0]["sentiment"]["label"] in {"negative", "neutral", "positive"}
    assert "missing field 'review'" in rows[1]["error"]
    assert "invalid JSON" in rows[2]["error"]
    assert "not a string" in rows[3]["error"]
    assert "not an object" in rows[4]["error"]
    assert rows[5]["error"] is None


def test_stdin_and_exit_code_when_nothing_could_be_classified(trained_project):
    good = invoke(trained_project, "classify", "-", "--format", "csv", stdin="ラーメン\n\n野球\n")
    assert good.exit_code == 0, good.output
    lines = good.stdout.splitlines()
    assert len(lines) == 4 and lines[2].endswith("empty text")
    bad = invoke(trained_project, "classify", "-", stdin="\n   \n\n")
    assert bad.exit_code == 1
    assert len(jsonl(bad.stdout)) == 3  # the error rows are still written
    assert "No row could be classified" in bad.stderr
    empty = invoke(trained_project, "classify", "-", stdin="")
    assert empty.exit_code == 1


def test_long_review_is_aggregated_or_truncated(trained_project):
    """max_tokens is 8 in the fixture models: a 30-token review spans several windows."""
    from pipeline.inference.batch import TaskClassifiers

    text = "ラーメンが美味しい。" * 6  # 24 tokens
    aggregated = TaskClassifiers.from_project(trained_project, long_policy="aggregate").classify([text])[0]
    truncated = TaskClassifiers.from_project(trained_project, long_policy="truncate").classify([text])[0]
    for task in ("topic", "sentiment"):
        whole, first = aggregated[task], truncated[task]
        assert len(whole.tokens) == 24 and whole.windows == 3 and first.windows == 1
        assert len(whole.tokens) > 8 and len(first.tokens) == 8
        assert sum(whole.weights) == pytest.approx(1.0, abs=1e-4)
        assert sum(first.weights) == pytest.approx(1.0, abs=1e-4)
        assert sum(whole.probabilities.values()) == pytest.approx(1.0, abs=1e-3)


def test_batches_do_not_change_results(trained_project):
    """Streaming in small batches gives the same rows as one big batch."""
    from pipeline.data.readers import InputRecord
    from pipeline.inference.batch import TaskClassifiers, classify_records

    texts = ["ラーメンが美味しい", "携帯の画面が最悪", "京都の紅葉", "", "野球の試合に行く", "サッカー選手が好き"]
    records = [InputRecord(id=str(i), text=t, error="empty text" if not t else None) for i, t in enumerate(texts)]
    small = list(classify_records(records, TaskClassifiers.from_project(trained_project, batch_size=2)))
    big = list(classify_records(records, TaskClassifiers.from_project(trained_project, batch_size=64)))
    assert [r["id"] for r in small] == [str(i) for i in range(6)]
    for a, b in zip(small, big, strict=True):
        assert a["error"] == b["error"]
        if a["error"] is None:
            for task in ("topic", "sentiment"):
                assert a[task]["label"] == b[task]["label"]
                for label, p in a[task]["probabilities"].items():
                    assert p == pytest.approx(b[task]["probabilities"][label], abs=1e-6)


def test_int8_models_are_quantized_and_close_to_fp32(trained_project):
    import torch

    from pipeline.inference.batch import TaskClassifiers

    texts = ["ラーメンが美味しい", "携帯の画面が最悪", "京都の紅葉", "野球の試合に行く"]
    fast = TaskClassifiers.from_project(trained_project, int8=True)
    exact = TaskClassifiers.from_project(trained_project)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.LSTM) for m in fast.classifiers["topic"].loaded.model.modules())
    for a, b in zip(fast.classify(texts), exact.classify(texts), strict=True):
        for task in ("topic", "sentiment"):
            assert sum(a[task].probabilities.values()) == pytest.approx(1.0, abs=1e-3)
            for label, p in a[task].probabilities.items():
                assert p == pytest.approx(b[task].probabilities[label], abs=0.05)
    result = invoke(trained_project, "classify", "-", "--int8", stdin="ラーメンが美味しい\n")
    assert result.exit_code == 0 and jsonl(result.stdout)[0]["topic"]["label"]


def test_missing_model_is_a_clear_error(tmp_path):
    source = tmp_path / "r.txt"
    source.write_text("ラーメン\n", encoding="utf-8")
    result = invoke(tmp_path, "classify", str(source))
    assert result.exit_code != 0
    assert result.exception.code == "E301" and "jpipe run train_topic" in str(result.exception)


def test_unknown_task_lists_valid_ones(trained_project, tmp_path):
    source = tmp_path / "r.txt"
    source.write_text("ラーメン\n", encoding="utf-8")
    result = invoke(trained_project, "classify", str(source), "--task", "topic,spam")
    assert result.exit_code != 0 and result.exception.code == "E109" and "topic, sentiment" in str(result.exception)


def test_a_positional_text_is_classified_as_one_row(trained_project, tmp_path, monkeypatch):
    """TEXT|FILE: a text that names no file is classified as one row, the same row a file with that line gives."""
    monkeypatch.chdir(tmp_path)
    result = invoke(trained_project, "classify", "京都の寺は最高")
    assert result.exit_code == 0, result.output
    (row,) = jsonl(result.stdout)
    assert row["id"] == "1" and row["text"] == "京都の寺は最高" and row["error"] is None
    assert row["topic"]["label"] in {"Gourmet", "Keitai", "Kyoto", "Sports"} and "classified 1 of 1 rows" in result.stderr
    (tmp_path / "one.txt").write_text("京都の寺は最高\n", encoding="utf-8")
    assert jsonl(invoke(trained_project, "classify", "one.txt").stdout) == [row]
    assert jsonl(invoke(trained_project, "classify", "-i", "one.txt").stdout) == [row]
    # --text: a text that looks like a file name; a file-like name that does not exist is E205, not a review.
    literal = invoke(trained_project, "classify", "--text", "one.txt")
    assert literal.exit_code == 0 and jsonl(literal.stdout)[0]["text"] == "one.txt"
    missing = invoke(trained_project, "classify", "reviews/missing.csv")
    assert missing.exit_code != 0 and missing.exception.code == "E205" and "does not exist" in missing.exception.message
    both = invoke(trained_project, "classify", "one.txt", "--text", "京都")
    assert both.exit_code == 2 and "Give one input" in both.stderr
    ray = invoke(trained_project, "classify", "京都の寺は最高", "--engine", "ray", "-o", str(tmp_path / "out"))
    assert ray.exit_code == 1 and "reads a file" in ray.stderr


def test_explain_a_file_row_by_row(trained_project, tmp_path):
    source = tmp_path / "reviews.csv"
    source.write_text("no,review\nA,京都の寺は最高\nB,   \n", encoding="utf-8")
    args = ("explain", str(source), "--text-column", "review", "--id-column", "no", "--no-html")
    result = invoke(trained_project, *args, "--json")
    assert result.exit_code == 0, result.output
    rows = jsonl(result.stdout)
    assert [row["id"] for row in rows] == ["A", "B"]
    assert rows[0]["error"] is None and rows[0]["tasks"]["topic"]["tokens"] == ["京都", "の", "寺", "は", "最高"]
    assert rows[0]["tasks"] == json.loads(invoke(trained_project, "explain", "京都の寺は最高", "--json", "--no-html").stdout)["tasks"]
    assert rows[1]["tasks"] is None and "whitespace" in rows[1]["error"]
    assert "explained 1 of 2 rows" in result.stderr
    terminal = invoke(trained_project, *args)
    assert (
        terminal.exit_code == 0 and "[A] 京都の寺は最高" in terminal.stdout and "topic:" in terminal.stdout and "error:" in terminal.stdout
    )


def test_explain_prints_weights_and_writes_html(trained_project, tmp_path):
    result = invoke(trained_project, "explain", "京都の寺は最高", "--html-dir", str(tmp_path / "html"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for task in ("topic", "sentiment"):
        info = data["tasks"][task]
        assert info["tokens"] == ["京都", "の", "寺", "は", "最高"]
        assert len(info["weights"]) == 5 and sum(info["weights"]) == pytest.approx(1.0, abs=1e-3)
        html = Path(data["html"][task]).read_text(encoding="utf-8")
        assert html.startswith("<!DOCTYPE html>") and "京都" in html and "rgba(220, 38, 38" in html
    terminal = invoke(trained_project, "explain", "京都の寺は最高", "--no-html")
    assert terminal.exit_code == 0, terminal.output
    assert "topic:" in terminal.stdout and "寺" in terminal.stdout and "heatmap" not in terminal.stdout


def test_explain_default_html_dir_is_in_the_project(trained_project):
    result = invoke(trained_project, "explain", "野球の試合", "--task", "topic")
    assert result.exit_code == 0, result.output
    files = list((trained_project / "models/report/explain").glob("explain-topic-*.html"))
    assert files


def test_explain_rejects_empty_text(trained_project):
    result = invoke(trained_project, "explain", "   ")
    assert result.exit_code != 0 and result.exception.code == "E236" and "whitespace" in str(result.exception)


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["missing.txt"], "E205", "does not exist"),
        (["reviews.xml"], "E207", "Cannot tell the format"),
        (["reviews.txt", "--input-format", "xml"], "E207", "Unknown input format 'xml'"),
        (["reviews.txt", "--format", "xml"], "E109", "Unknown output format 'xml'"),
        (["reviews.txt", "--long", "middle"], "E109", "Unknown long-review policy 'middle'"),
    ],
)
def test_whole_input_problems_are_coded_errors_without_flags(trained_project, tmp_path, monkeypatch, args, code, text):
    monkeypatch.chdir(tmp_path)
    for name in ("reviews.txt", "reviews.xml"):
        (tmp_path / name).write_text("ラーメン\n", encoding="utf-8")
    result = invoke(trained_project, "classify", *args)
    assert result.exit_code != 0 and result.exception.code == code and text in result.exception.message
    assert "--" not in result.exception.message and "--" not in (result.exception.hint or "")


def test_probabilities_are_written_with_full_precision(trained_project):
    """CSV and JSONL carry the probabilities of Classifier.predict to 1e-6 (not rounded to 4 digits)."""
    from pipeline import Classifier

    texts = ["ラーメンが美味しい", "携帯の画面が最悪", "京都の紅葉"]
    expected = Classifier.from_dir(trained_project / "models/classifier/sentiment").predict(texts)
    as_csv = list(csv.DictReader(io.StringIO(invoke(trained_project, "classify", "-", "--format", "csv", stdin="\n".join(texts)).stdout)))
    as_jsonl = jsonl(invoke(trained_project, "classify", "-", stdin="\n".join(texts)).stdout)
    for prediction, row, line in zip(expected, as_csv, as_jsonl, strict=True):
        for label, p in prediction.probabilities.items():
            assert abs(float(row[f"sentiment_p_{label}"]) - p) <= 1e-6
            assert abs(line["sentiment"]["probabilities"][label] - p) <= 1e-6
