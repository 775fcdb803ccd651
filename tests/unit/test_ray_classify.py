"""`jpipe classify --engine ray` in Ray local mode: same rows as the local engine, a dying actor's batch
retried (every row once), an unreachable --address failing fast; and the parallel readers it uses."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from pipeline.data.readers import line_ranges, read_line_range, read_records

BAD_AND_GOOD = (
    "ラーメンが美味しい。\n".encode()
    + b"\n"
    + b"   \t \n"
    + b"\xff\xfe broken \x80\n"
    + ("携帯" * 60 + "\n").encode()
    + "京都の寺は最高\n".encode()
    + "".join(
        f"{w}の{t}は{s}だった{i}\n"
        for i, (w, t, s) in enumerate(
            zip(["野球", "店", "画面", "紅葉"] * 10, ["試合", "味", "機種", "寺"] * 10, ["最高", "残念", "好き", "最悪"] * 10, strict=True)
        )
    ).encode()
)


def record_tuples(records) -> list[tuple]:
    return [(r.id, r.text, r.error, r.line) for r in records]


# ---------------------------------------------------------------- readers (no Ray)
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 50])
def test_line_ranges_cover_the_file_and_read_as_read_records(tmp_path, parts):
    path = tmp_path / "reviews.txt"
    path.write_bytes(b"\xef\xbb\xbf" + BAD_AND_GOOD + b"no newline at the end")
    ranges = line_ranges(str(path), parts, chunk=16)  # tiny chunks: cuts fall across chunk borders
    data = path.read_bytes()
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data) and 1 <= len(ranges) <= parts
    for (_, end, _), (start, _, _) in zip(ranges, ranges[1:], strict=False):
        assert end == start and data[start - 1 : start] == b"\n"  # contiguous, each cut at a line start
    for start, _, first in ranges:
        assert data[:start].count(b"\n") + 1 == first
    pieces = [
        record_tuples(read_line_range(str(path), input_format="txt", start=s, end=e, first_line=f, max_chars=100)) for s, e, f in ranges
    ]
    assert [row for piece in pieces for row in piece] == record_tuples(read_records(str(path), max_chars=100))


def test_line_ranges_of_jsonl_match_read_records(tmp_path):
    path = tmp_path / "reviews.jsonl"
    lines = [json.dumps({"review_id": f"r{i}", "body": f"京都の寺{i}"}, ensure_ascii=False) for i in range(30)]
    lines[4], lines[9] = "{not json", json.dumps({"review_id": "x"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    options = dict(text_column="body", id_column="review_id")
    ranges = line_ranges(str(path), 4)
    pieces = [
        record_tuples(read_line_range(str(path), input_format="jsonl", start=s, end=e, first_line=f, **options)) for s, e, f in ranges
    ]
    assert len(ranges) == 4 and all(pieces)
    assert [row for piece in pieces for row in piece] == record_tuples(read_records(str(path), **options))


def test_parquet_records_have_row_numbers_ids_and_row_errors(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "reviews.parquet"
    table = pa.table({"body": ["美味しい店", None, "", "京都" * 30, "野球"], "rid": ["a", "b", None, "d", "e"]})
    pq.write_table(table, path, row_group_size=2)
    records = list(read_records(str(path), text_column="body", id_column="rid", max_chars=20))
    assert [(r.id, r.line) for r in records] == [("a", 1), ("b", 2), ("3", 3), ("d", 4), ("e", 5)]
    assert [r.error for r in records][0] is None and "missing value" in records[1].error
    assert "empty" in records[2].error and "over-long" in records[3].error and records[4].text == "野球"
    from pipeline.data.readers import parquet_row_groups, read_parquet_records

    groups = parquet_row_groups(str(path))
    assert groups == [(0, 1), (1, 3), (2, 5)]
    by_group = [r for g in groups for r in read_parquet_records(str(path), text_column="body", id_column="rid", max_chars=20, row_groups=g)]
    assert record_tuples(by_group) == record_tuples(records)


# ---------------------------------------------------------------- the Ray engine
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    pytest.importorskip("torch")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner
    from pipeline.workflow.stages import build_stages
    from tests.conftest import fast_overrides, write_tiny_project

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("ray") / "proj")
    config = load_config(
        project, fast_overrides("topic", "max_tokens=8", "epochs=2") + fast_overrides("sentiment", "max_tokens=8", "epochs=2")
    )
    Runner(project, config, stages=[s for s in build_stages(config) if s.name in ("train_topic", "train_sentiment")]).run()
    return project


def invoke(project: Path, *args: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    return CliRunner().invoke(app, ["--dir", str(project), *args])


def assert_same_rows(local: list[dict], ray_rows: list[dict]) -> None:
    """Same ids, texts and errors in the same order; same labels; probabilities within 1e-6."""
    assert [r["seq"] for r in ray_rows] == list(range(len(local)))  # every row exactly once
    for mine, theirs in zip(ray_rows, local, strict=True):
        assert (mine["id"], mine["text"], mine["error"]) == (theirs["id"], theirs["text"], theirs["error"])
        for task in ("topic", "sentiment"):
            if theirs[task] is None:
                assert mine[task] is None
                continue
            assert mine[task]["label"] == theirs[task]["label"] and mine[task]["top_tokens"] == theirs[task]["top_tokens"]
            for label, p in theirs[task]["probabilities"].items():
                assert mine[task]["probabilities"][label] == pytest.approx(p, abs=1e-6)


def local_rows(project: Path, source: Path, *extra: str) -> list[dict]:
    out = source.parent / f"{source.stem}-local.jsonl"
    result = invoke(project, "classify", str(source), "-o", str(out), *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("kind", ["txt", "csv"])
def test_ray_engine_equals_local_engine_row_for_row(ray_session, trained_project, tmp_path, kind):
    from pipeline.inference.ray_engine import read_output

    source = tmp_path / f"reviews.{kind}"
    if kind == "txt":
        source.write_bytes(BAD_AND_GOOD)
    else:  # a CSV is read whole, by a read task that streams its rows to the actors
        quoted = [b'"' + line.replace(b'"', b'""') + b'"' for line in BAD_AND_GOOD.splitlines()]
        source.write_bytes(b"text\n" + b"\n".join(quoted) + b"\n")
    options = ("--max-chars", "100", "--batch-size", "8")
    result = invoke(trained_project, "classify", str(source), "--engine", "ray", "--actors", "2", "-o", str(tmp_path / "out"), *options)
    assert result.exit_code == 0, result.output
    assert "classified 42 of 46 rows; 4 with errors" in result.stderr
    shards = sorted((tmp_path / "out").iterdir())
    # txt: read in 4 parts per actor, one shard each; csv: one part; each shard named by its first row
    assert len(shards) == (8 if kind == "txt" else 1)
    for shard in shards:
        first = json.loads(shard.read_text(encoding="utf-8").splitlines()[0])
        assert shard.name == f"part-{first['seq']:012d}.jsonl"
    assert_same_rows(local_rows(trained_project, source, *options), list(read_output(tmp_path / "out")))
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]  # the staging directory is gone


def test_a_dying_actor_is_retried_and_every_row_is_written_once(ray_session, trained_project, tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    pa = pytest.importorskip("pyarrow")
    from pipeline.inference.ray_engine import CRASH_ONCE_ENV, read_output

    texts = [line.decode("utf-8", errors="replace") for line in BAD_AND_GOOD.splitlines()]
    source = tmp_path / "reviews.parquet"
    pq.write_table(pa.table({"text": texts, "rid": [f"r{i}" for i in range(len(texts))]}), source, row_group_size=10)
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    options = ("--max-chars", "100", "--batch-size", "8", "--id-column", "rid")
    result = invoke(
        trained_project, "classify", str(source), "--engine", "ray", "--format", "parquet", "-o", str(tmp_path / "out"), *options
    )
    assert result.exit_code == 0, result.output
    assert marker.exists()  # an actor did die in the middle of a batch
    rows = list(read_output(tmp_path / "out"))
    assert all(p.suffix == ".parquet" for p in (tmp_path / "out").iterdir())
    monkeypatch.delenv(CRASH_ONCE_ENV)
    local = local_rows(trained_project, source, *options)
    assert [r["seq"] for r in rows] == list(range(len(texts)))  # every row once: none lost, none twice
    for mine, theirs in zip(rows, local, strict=True):
        assert (mine["id"], mine["error"]) == (theirs["id"], theirs["error"])
        for task in ("topic", "sentiment"):
            assert mine[task] == (theirs[task] or {}).get("label")
            for label, p in (theirs[task] or {}).get("probabilities", {}).items():
                assert mine[f"{task}_p_{label}"] == pytest.approx(p, abs=1e-6)


@pytest.fixture()
def silent_port():
    """A port that accepts connections and never answers (like a firewall's tarpit)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_an_unreachable_address_is_a_clear_error_within_10_seconds(trained_project, tmp_path, silent_port):
    source = tmp_path / "reviews.txt"
    source.write_text("京都の寺は最高\n", encoding="utf-8")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    for address in (f"127.0.0.1:{closed}", f"ray://127.0.0.1:{silent_port}"):
        started = time.monotonic()
        result = invoke(trained_project, "classify", str(source), "--engine", "ray", "--address", address, "-o", str(tmp_path / "out"))
        assert time.monotonic() - started < 10
        assert result.exit_code != 0 and result.exception.code == "E142" and address in str(result.exception)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the benchmark's pieces (no Ray)
def test_bench_reviews_cycle_through_the_sentences_and_memory_is_sampled(tmp_path):
    from pipeline.bench.classify_ray import PeakMemory, write_reviews

    texts = ["京都の寺。", "ラーメンが美味しい。", "試合に勝った。"]
    lines = write_reviews(tmp_path / "r.txt", texts, 7).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 7 and lines[0] == texts[0] and lines[3] == texts[0] + texts[(3 * 7 + 3) % 3]
    assert all(line.startswith(texts[i % 3]) for i, line in enumerate(lines))
    with PeakMemory() as memory:
        block = bytearray(64 << 20)  # 64 MB touched while sampling
        block[::4096] = b"x" * len(block[::4096])
        time.sleep(0.5)
    assert memory.peak_mb >= 64
    del block
