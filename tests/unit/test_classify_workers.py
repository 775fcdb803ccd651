"""`jpipe classify --workers N` (pipeline.inference.workers) and the language fields of the output rows.

On the tiny trained models of ``test_classify_cli``: N=2 writes the very bytes of N=1, rows carry
``language`` / ``warning``, the summary counts the rows that are not Japanese, and Ctrl-C, a dead
parent or a dead worker leave no process behind.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sudachipy")

from pipeline.inference.batch import ClassifySummary  # noqa: E402
from tests.conftest import fast_overrides, write_tiny_project  # noqa: E402
from tests.unit.test_classify_cli import invoke, jsonl  # noqa: E402

ENGLISH = "This is an English sentence about Kyoto temples."
EMOJI = "😀😀🎉"
JAPANESE = "ラーメンが美味しい。"
JPIPE = [sys.executable, "-m", "pipeline"]


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    """A tiny project with both classifiers trained (a few seconds on CPU), as in ``test_classify_cli``."""
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner
    from pipeline.workflow.stages import build_stages

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("workers") / "proj")
    config = load_config(project, fast_overrides("topic", "max_tokens=8") + fast_overrides("sentiment", "max_tokens=8"))
    Runner(project, config, stages=[s for s in build_stages(config) if s.name in ("train_topic", "train_sentiment")]).run()
    return project


def _reviews(path: Path, lines: int) -> Path:
    base = [JAPANESE, "京都の寺は最高", ENGLISH, "", "携帯の電池がすぐ切れる", EMOJI, "野球の試合を見た"]
    path.write_text("\n".join(base[i % len(base)] for i in range(lines)) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("output_format", ["jsonl", "csv"])
def test_two_workers_write_the_bytes_of_the_in_process_engine(trained_project, tmp_path, output_format):
    source = _reviews(tmp_path / "reviews.txt", 45)
    outputs = {}
    for workers in (1, 2):
        target = tmp_path / f"out{workers}.{output_format}"
        # --batch-size 4: 12 chunks, so the two workers interleave and the parent has to put them back in order
        result = invoke(trained_project, "classify", str(source), "--workers", str(workers), "--batch-size", "4", "-o", str(target))
        assert result.exit_code == 0, result.output
        outputs[workers] = (target.read_bytes(), result.stderr)
    assert outputs[2][0] == outputs[1][0]
    assert outputs[2][1].replace("out2", "out1") == outputs[1][1]
    assert len(outputs[1][0].decode().splitlines()) == 45 + (output_format == "csv")


def test_rows_carry_language_and_warning_and_the_summary_counts_them(trained_project, tmp_path):
    source = tmp_path / "three.txt"
    source.write_text(f"{JAPANESE}\n{ENGLISH}\n{EMOJI}\n\n", encoding="utf-8")
    result = invoke(trained_project, "classify", str(source))
    assert result.exit_code == 0, result.output
    japanese, english, emoji, empty = jsonl(result.stdout)
    assert (japanese["language"], japanese["warning"]) == ("ja", None)
    assert english["language"] == "other" and english["warning"].startswith("not Japanese")
    assert emoji["language"] == "other" and "no letters" in emoji["warning"]
    for row in (english, emoji):  # the labels stay, with the warning beside them
        assert row["error"] is None and row["topic"]["label"] and row["sentiment"]["label"]
    assert empty["error"] == "empty text" and empty["language"] is None and empty["warning"] is None
    assert "classified 3 of 4 rows" in result.stderr and "2 not Japanese" in result.stderr

    as_csv = invoke(trained_project, "classify", str(source), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert list(rows[0])[-3:] == ["language", "warning", "error"]
    assert [row["language"] for row in rows] == ["ja", "other", "other", ""]
    assert rows[0]["warning"] == "" and rows[1]["warning"] == english["warning"]


def test_summary_counts_rows_errors_and_warnings():
    summary = ClassifySummary()
    summary.add(row_id="1", error=None, warning=None)
    summary.add(row_id="2", error=None, warning="not Japanese: x")
    summary.add(row_id="3", error="empty text", warning=None)
    assert (summary.rows, summary.classified, summary.errors, summary.not_japanese) == (3, 2, 1, 1)
    assert summary.not_japanese_examples == ["row 2: not Japanese: x"] and summary.error_examples == ["row 3: empty text"]


# ---------------------------------------------------------------- processes
def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(children - found)
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start(project: Path, source: Path, target: Path) -> tuple[subprocess.Popen, set[int]]:
    """A classify run with 2 workers; returns once both workers classify (their chunks are under way)."""
    command = [*JPIPE, "--dir", str(project), "classify", str(source), "--workers", "2", "--batch-size", "8", "-o", str(target)]
    # SIGINT as in a terminal: a background job (`cmd &` in a script, as CI may run the tests) inherits it ignored.
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = {pid for pid in _descendants(process.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")}
        if len(workers) >= 2 and all(Path(f"/proc/{pid}/maps").read_text().count("libtorch") for pid in workers):
            time.sleep(2.0)  # models loaded, chunks running
            return process, workers
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the workers did not start")


def _wait_gone(pids: set[int], seconds: float = 20.0) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return {pid for pid in pids if _alive(pid)}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_ctrl_c_ends_every_worker_and_writes_no_output(trained_project, tmp_path):
    source, target = _reviews(tmp_path / "many.txt", 200_000), tmp_path / "out.jsonl"
    process, workers = _start(trained_project, source, target)
    everything = _descendants(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group gets SIGINT
    process.wait(timeout=60)
    assert process.returncode != 0
    assert _wait_gone(everything) == set()
    assert not target.exists()  # the output is written atomically: an interrupted run leaves none


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_workers_die_with_a_killed_parent(trained_project, tmp_path):
    source, target = _reviews(tmp_path / "many.txt", 200_000), tmp_path / "out.jsonl"
    process, workers = _start(trained_project, source, target)
    os.kill(process.pid, signal.SIGKILL)  # no cleanup in the parent at all: the kernel ends the workers
    process.wait(timeout=30)
    assert _wait_gone(workers) == set()


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_a_dead_worker_is_e409_and_the_other_one_ends(trained_project, tmp_path):
    source, target = _reviews(tmp_path / "many.txt", 200_000), tmp_path / "out.jsonl"
    process, workers = _start(trained_project, source, target)
    victim, *others = sorted(workers)
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "E409" in stderr.decode(), stderr.decode()
    assert _wait_gone(set(others)) == set()
    assert not target.exists()


def test_bench_classify_workers_reports_both_engines_cpu_and_memory(trained_project):
    from pipeline.bench.classify_workers import benchmark_workers

    result = benchmark_workers(project_dir=trained_project, reviews=300, batch_size=64, workers=2, rounds=1)
    assert result["reviews"] == 300 and result["workers"] == 2 and result["rounds"] == 1
    one, two = result["reviews_per_second_workers_1"], result["reviews_per_second_workers_2"]
    assert one > 0 and two > 0 and result["ratio"] == pytest.approx(two / one, abs=0.002)
    assert result["cpu_seconds_workers_2"][0] > 0 and result["reviews_per_cpu_second_workers_1"] > 0
    assert len(result["load_average_before"]) == 3 and result["startup_seconds_workers"] > 0
    assert len(result["worker_memory_mb"]) == 2  # 5 chunks of 64 rows: both workers classified some
    for memory in result["worker_memory_mb"]:
        assert memory["VmRSS"] >= memory["RssAnon"] > 0 and memory["RssFile"] > 0
