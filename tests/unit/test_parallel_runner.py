"""`jpipe run --jobs N`: independent stages in parallel processes; same lock as --jobs 1; a failure stops only its downstream."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import InputError, WorkflowError
from pipeline.workflow.runner import Runner
from pipeline.workflow.stage import Stage

# a -> b -> d, a -> c -> e: b and c (and d and e, b and e, c and d) are independent.
GRAPH = {"a": [], "b": ["a"], "c": ["a"], "d": ["b"], "e": ["c"]}


def toy_stage(ctx) -> dict:
    """Writes out/<name>.txt = its inputs + its name; files in the project steer it: fail_/die_/half_/wait_<name>."""
    name, project = ctx.stage.name, ctx.project_dir
    text = "".join(ctx.input(path).read_text(encoding="utf-8") for path in ctx.stage.input_paths(ctx.config)) + name
    if (project / f"wait_{name}").exists():
        deadline = time.monotonic() + 30
        while not (project / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    out = ctx.output(f"out/{name}.txt")
    out.write_text(text if not (project / f"half_{name}").exists() else text[:1], encoding="utf-8")
    if (project / f"half_{name}").exists() or (project / f"fail_{name}").exists():
        raise InputError("E209", f"stage {name} was told to fail", hint="Remove the marker file.")
    if (project / f"die_{name}").exists():
        os._exit(3)
    return {"pid": os.getpid(), "chars": len(text)}


def toy_stages() -> list[Stage]:
    return [
        Stage(name=name, func=f"{__name__}:toy_stage", outputs=(f"out/{name}.txt",), inputs=tuple(f"out/{up}.txt" for up in ups))
        for name, ups in GRAPH.items()
    ]


def toy_runner(project: Path) -> Runner:
    return Runner(project, load_config(project), stages=toy_stages())


def lock_entries(project: Path) -> dict:
    """The lock's stage entries without the two fields that differ between any two runs (time and duration)."""
    lock = json.loads((project / "jpipe.lock").read_text(encoding="utf-8"))
    return {
        name: {k: v for k, v in entry.items() if k not in ("finished_at", "duration_s", "metrics")}
        for name, entry in lock["stages"].items()
    }


def assert_clean(project: Path) -> None:
    """No staging directory, no record of running stages, and the project lock is free (a new run may start)."""
    assert not list((project / ".jpipe" / "staging").glob("*"))
    assert not (project / ".jpipe" / "running.json").exists()
    with toy_runner(project).exclusive():
        pass


def test_toy_graph_runs_in_parallel_with_the_same_lock_as_one_job(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    assert toy_runner(one).run() == list(GRAPH)
    ran = toy_runner(two).run(jobs=2)
    assert sorted(ran) == sorted(GRAPH) and ran.index("a") == 0 and ran.index("b") < ran.index("d") and ran.index("c") < ran.index("e")
    assert lock_entries(one) == lock_entries(two)
    assert (two / "out" / "d.txt").read_text(encoding="utf-8") == "abd"
    metrics = json.loads((two / "jpipe.lock").read_text(encoding="utf-8"))["stages"]
    assert {entry["metrics"]["pid"] for entry in metrics.values()}.isdisjoint({os.getpid()})  # each ran in a child process
    assert toy_runner(two).run(jobs=2) == []  # everything fresh
    assert_clean(two)


def test_a_failing_stage_stops_only_what_depends_on_it(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "half_b").touch()  # b writes part of its output, then raises
    events: list[tuple[str, str]] = []
    callbacks = dict(
        on_stage_start=lambda name, why: events.append(("start", name)),
        on_stage_fail=lambda name, error: events.append(("fail", name)),
    )
    with pytest.raises(InputError) as failure:
        toy_runner(project).run(jobs=2, **callbacks)
    assert failure.value.code == "E209" and "stage b" in failure.value.message  # the stage's own error, with its code
    assert ("fail", "b") in events and ("start", "d") not in events and ("start", "e") in events
    assert sorted(lock_entries(project)) == ["a", "c", "e"]
    assert not (project / "out" / "b.txt").exists() and not (project / "out" / "d.txt").exists()
    assert_clean(project)
    (project / "half_b").unlink()
    assert toy_runner(project).run(jobs=2) == ["b", "d"]  # the rest is fresh


def test_a_stage_process_that_dies_is_a_failure_and_the_others_finish(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "die_c").touch()
    with pytest.raises(WorkflowError) as failure:
        toy_runner(project).run(jobs=3)
    assert failure.value.code == "E408" and "exit code 3" in failure.value.message
    assert sorted(lock_entries(project)) == ["a", "b", "d"] and not (project / "out" / "c.txt").exists()
    assert_clean(project)


def test_status_shows_the_stages_that_are_running(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "wait_b").touch()
    (project / "wait_c").touch()
    worker = threading.Thread(target=lambda: toy_runner(project).run(jobs=2))
    worker.start()
    try:
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while seen != {"b", "c"} and time.monotonic() < deadline:
            seen = {s.name for s in toy_runner(project).status() if s.running}
            time.sleep(0.05)
        assert seen == {"b", "c"}
        assert [s.to_json()["running"] for s in toy_runner(project).status()] == [False, True, True, False, False]
    finally:
        (project / "go").touch()
        worker.join(60)
    assert not any(s.running for s in toy_runner(project).status())
    assert all(s.fresh for s in toy_runner(project).status())


@pytest.mark.parametrize("jobs", [2])
def test_jobs_2_trains_both_classifiers_as_one_job_does(tmp_path, monkeypatch, jobs):
    """The real training stages on the tiny project: the same lock entries (models byte for byte) with --jobs 2."""
    torch = pytest.importorskip("torch")
    from pipeline.workflow import parallel
    from pipeline.workflow.stages import build_stages
    from tests.conftest import fast_overrides, write_tiny_project

    monkeypatch.setattr(parallel, "stage_threads", lambda jobs: 1)  # the same threads as the sequential run below
    torch.set_num_threads(1)
    overrides = fast_overrides("topic", "epochs=2") + fast_overrides("sentiment", "epochs=2")
    projects = [write_tiny_project(tmp_path / f"jobs{n}") for n in (1, jobs)]
    for project, n in zip(projects, (1, jobs), strict=True):
        config = load_config(project, overrides)
        stages = [s for s in build_stages(config) if s.name in ("train_topic", "train_sentiment")]
        assert sorted(Runner(project, config, stages=stages).run(jobs=n)) == ["train_sentiment", "train_topic"]
    # Model directories record their training times (metrics.json, train_log.jsonl), which differ between
    # any two runs, so their tree hashes do: every other lock field is equal, and so is every file without times.
    one, two = (lock_entries(project) for project in projects)
    for entries in (one, two):
        for entry in entries.values():
            entry.pop("outputs")
    assert one == two
    for task in ("topic", "sentiment"):
        first, second = (project / "models" / "classifier" / task for project in projects)
        assert sorted(p.name for p in first.iterdir()) == sorted(p.name for p in second.iterdir())
        for path in first.iterdir():
            assert without_times(path) == without_times(second / path.name), path.name
    shutil.rmtree(tmp_path)


def without_times(path: Path):
    """A model file's content, less the timing fields (keys naming seconds or a rate per second) of its JSON."""
    if path.suffix not in (".json", ".jsonl"):
        return path.read_bytes()
    if path.suffix == ".json":
        rows = [json.loads(path.read_text(encoding="utf-8"))]
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [{k: v for k, v in row.items() if "second" not in k} if isinstance(row, dict) else row for row in rows]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_stages_of_a_killed_run_stop_and_free_the_project_lock(tmp_path):
    import signal
    import subprocess
    import sys

    project = tmp_path / "p"
    project.mkdir()
    (project / "wait_b").touch()  # b and c wait for a file that never comes (30 s at most)
    (project / "wait_c").touch()
    script = (
        f"from tests.unit.test_parallel_runner import toy_runner; from pathlib import Path; toy_runner(Path({str(project)!r})).run(jobs=2)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    running = project / ".jpipe" / "running.json"
    deadline = time.monotonic() + 60
    pids: list[int] = []
    while len(pids) < 2 and time.monotonic() < deadline:
        stages = json.loads(running.read_text(encoding="utf-8")).get("stages", {}) if running.exists() else {}
        pids = [entry["pid"] for entry in stages.values()]
        time.sleep(0.1)
    assert len(pids) == 2, "the two stages never started"
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)
    with toy_runner(project).exclusive():  # nobody holds the project lock any more
        pass


def test_a_killed_run_shows_interrupted_and_the_next_run_removes_its_staging(tmp_path, caplog):
    """kill -9 mid-stage: status says `interrupted` (even before the parent reaps the zombie); the next run removes
    the dead process's staging directory, says so, and runs the stage again."""
    import signal
    import subprocess
    import sys

    project = tmp_path / "p"
    project.mkdir()
    (project / "wait_b").touch()  # b waits for a file that never comes (30 s at most)
    script = f"from tests.unit.test_parallel_runner import toy_runner; from pathlib import Path; toy_runner(Path({str(project)!r})).run()"
    run = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2])
    staging = project / ".jpipe" / "staging" / f"b-{run.pid}"
    deadline = time.monotonic() + 60
    while not (staging.exists() and "b" in toy_runner(project).running()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "b" in toy_runner(project).running(), "stage b never started"
    run.send_signal(signal.SIGKILL)
    time.sleep(0.5)  # not reaped yet: a zombie, which must not count as running
    statuses = {s.name: s for s in toy_runner(project).status()}
    assert statuses["b"].interrupted and not statuses["b"].running
    assert statuses["b"].to_json()["interrupted"] is True
    assert not statuses["c"].interrupted and statuses["a"].fresh
    run.wait(10)
    assert staging.exists()  # left behind by the killed process
    (project / "wait_b").unlink()
    with caplog.at_level("WARNING", logger="pipeline.workflow.runner"):
        ran = toy_runner(project).run()
    assert not staging.exists() and f"b-{run.pid}" in caplog.text
    assert ran == ["b", "c", "d", "e"]
    assert not any(s.interrupted or s.running for s in toy_runner(project).status())
    assert_clean(project)


def test_staging_of_live_processes_and_odd_names_is_kept(tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    root = project / ".jpipe" / "staging"
    alive = [root / f"x-{os.getpid()}", root / f"y-rank1-{os.getppid()}", root / "report", root / "z-notapid"]
    for path in alive:
        path.mkdir(parents=True)
    assert toy_runner(project).remove_dead_staging() == []
    assert all(path.exists() for path in alive)
