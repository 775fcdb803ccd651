"""Early cutoff on toy stages: downstream of an upstream that reran with byte-identical outputs stays fresh.

up (section tokenize) reads in.txt and writes out/main.txt (a copy of in.txt) and out/side.txt
(the split mode); down (section prepare) reads out/main.txt and writes the directory out/down;
side reads out/side.txt; final reads the directory out/down.
Changing tokenize.split_mode reruns up, changes side.txt only: down and final stay fresh.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import WorkflowError
from pipeline.workflow.lock import LOCK_FORMAT
from pipeline.workflow.runner import LOCK_FILENAME, Runner, Stage

CALLS: list[str] = []


def up_stage(ctx):
    CALLS.append("up")
    ctx.output("out/main.txt").write_text(ctx.input("in.txt").read_text(encoding="utf-8"), encoding="utf-8")
    ctx.output("out/side.txt").write_text(f"mode={ctx.section['split_mode']}\n", encoding="utf-8")


def down_stage(ctx):
    CALLS.append("down")
    directory = ctx.output("out/down")
    (directory / "sub").mkdir(parents=True)
    text = ctx.input("out/main.txt").read_text(encoding="utf-8")
    (directory / "a.txt").write_text(text.upper(), encoding="utf-8")
    (directory / "sub" / "b.txt").write_text(f"seed={ctx.section['seed']}\n", encoding="utf-8")


def side_stage(ctx):
    CALLS.append("side")
    ctx.output("out/side_copy.txt").write_text(ctx.input("out/side.txt").read_text(encoding="utf-8"), encoding="utf-8")


def final_stage(ctx):
    CALLS.append("final")
    ctx.output("out/final.txt").write_text(str(len(list(ctx.input("out/down").rglob("*")))), encoding="utf-8")


HERE = "tests.unit.test_early_cutoff"
STAGES = [
    Stage(name="up", func=f"{HERE}:up_stage", inputs=("in.txt",), outputs=("out/main.txt", "out/side.txt"), section="tokenize"),
    Stage(name="down", func=f"{HERE}:down_stage", inputs=("out/main.txt",), outputs=("out/down",), section="prepare"),
    Stage(name="side", func=f"{HERE}:side_stage", inputs=("out/side.txt",), outputs=("out/side_copy.txt",)),
    Stage(name="final", func=f"{HERE}:final_stage", inputs=("out/down",), outputs=("out/final.txt",)),
]
NOTE = "upstream up reran, its output out/main.txt is unchanged"


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    CALLS.clear()
    Runner(tmp_path, load_config(tmp_path), stages=STAGES).run()
    assert CALLS == ["up", "down", "side", "final"]
    CALLS.clear()
    return tmp_path


def make_runner(project: Path, *overrides: str) -> Runner:
    return Runner(project, load_config(project, list(overrides)), stages=STAGES)


def statuses(runner: Runner) -> dict[str, tuple[str, list[str], list[str]]]:
    return {s.name: ("fresh" if s.fresh else "stale", s.reasons, s.notes) for s in runner.status()}


def test_upstream_rerun_with_identical_output_keeps_downstream_fresh(project):
    before = statuses(make_runner(project, "tokenize.split_mode=A"))
    assert before["up"] == ("stale", ["config tokenize.split_mode changed"], [])
    assert before["down"] == ("stale", ["upstream up is stale"], [])  # up may still change main.txt
    assert make_runner(project, "tokenize.split_mode=A").run("up") == ["up"]
    after = statuses(make_runner(project, "tokenize.split_mode=A"))
    assert after["down"] == ("fresh", [], [NOTE])
    assert after["final"] == ("fresh", [], [])  # down did not rerun: nothing to note
    assert after["side"] == ("stale", ["input out/side.txt changed"], [])
    CALLS.clear()
    assert make_runner(project, "tokenize.split_mode=A").run() == ["side"]
    assert CALLS == ["side"]
    payload = next(s.to_json() for s in make_runner(project, "tokenize.split_mode=A").status() if s.name == "down")
    assert payload["state"] == "fresh" and payload["notes"] == [NOTE]


def test_run_rechecks_planned_stages_and_skips_cut_off_ones(project):
    skipped: dict[str, list[str]] = {}
    runner = make_runner(project, "tokenize.split_mode=B")
    assert [name for name, _ in runner.plan()] == ["up", "down", "side", "final"]
    ran = runner.run(on_stage_skip=lambda name, notes: skipped.setdefault(name, notes))
    assert ran == ["up", "side"] and CALLS == ["up", "side"]
    assert skipped == {"down": [NOTE], "final": []}
    # a target run cuts off too
    CALLS.clear()
    assert make_runner(project, "tokenize.split_mode=A").run("final") == ["up"]
    assert CALLS == ["up"]


def test_changed_upstream_output_makes_downstream_stale_and_rerun(project):
    (project / "in.txt").write_text("changed\n", encoding="utf-8")
    before = statuses(make_runner(project))
    assert before["up"][1] == ["input in.txt changed"]
    assert before["down"][1] == ["upstream up is stale"]
    assert make_runner(project).run() == ["up", "down", "final"]
    assert (project / "out/down/a.txt").read_text(encoding="utf-8") == "CHANGED\n"
    after = statuses(make_runner(project))
    assert all(state == "fresh" for state, _, _ in after.values())
    assert after["side"][2] == ["upstream up reran, its output out/side.txt is unchanged"]
    assert after["down"][2] == after["final"][2] == []


def test_directory_with_same_content_and_new_mtimes_is_unchanged(project):
    later = (project / "out/down/a.txt").stat().st_mtime_ns + 5_000_000_000
    for path in (project / "out/down").rglob("*"):
        os.utime(path, ns=(later, later))
    assert all(s.fresh for s in make_runner(project).status())
    (project / "out/down/sub/b.txt").write_text("seed=0\n", encoding="utf-8")
    after = statuses(make_runner(project))
    assert after["down"][1] == ["output out/down modified"]
    assert after["final"][1] == ["upstream down is stale", "input out/down changed"]


def test_fresh_project_is_checked_without_reading_files(project, monkeypatch):
    import pipeline.workflow.hashing as hashing

    def no_reads(path, **kwargs):
        raise AssertionError(f"read {path}")

    monkeypatch.setattr(hashing, "sha256_file", no_reads)
    assert all(s.fresh for s in make_runner(project).status())
    assert make_runner(project).run() == []


def _old_listing(path: Path) -> str:
    """Lock format 1's directory hash, as the pre-cutoff runner computed it (copied verbatim)."""
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = child.stat()
        digest.update(f"{child.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return "dir:" + digest.hexdigest()


def _downgrade_lock(project: Path) -> dict:
    """Rewrite the lock as format 1 wrote it: directories by listing, no directory cache entries."""
    lock = json.loads((project / LOCK_FILENAME).read_text(encoding="utf-8"))
    for entry in lock["stages"].values():
        for part in ("inputs", "optional_inputs", "outputs"):
            for path, value in entry[part].items():
                if value and value.startswith("tree:"):
                    entry[part][path] = _old_listing(project / path)
    lock["file_cache"] = {path: value for path, value in lock["file_cache"].items() if "listing" not in value}
    lock["format"] = 1
    (project / LOCK_FILENAME).write_text(json.dumps(lock), encoding="utf-8")
    return lock


def test_format_1_lock_is_migrated_without_rerunning(project):
    old = _downgrade_lock(project)
    assert old["stages"]["down"]["outputs"]["out/down"].startswith("dir:")
    assert all(s.fresh for s in make_runner(project).status())
    assert make_runner(project).run() == [] and CALLS == []
    lock = json.loads((project / LOCK_FILENAME).read_text(encoding="utf-8"))
    assert lock["format"] == LOCK_FORMAT == 2 and lock["migrated_from"] == 1
    assert lock["stages"]["down"]["outputs"]["out/down"].startswith("tree:")
    assert lock["stages"]["final"]["inputs"]["out/down"] == lock["stages"]["down"]["outputs"]["out/down"]
    assert "listing" in lock["file_cache"]["out/down"]


def test_format_1_lock_with_changed_mtimes_says_it_cannot_verify(project):
    _downgrade_lock(project)
    later = (project / "out/down/a.txt").stat().st_mtime_ns + 5_000_000_000
    os.utime(project / "out/down/a.txt", ns=(later, later))  # as a copy without preserved times
    after = statuses(make_runner(project))
    unverifiable = "out/down unverifiable (lock format 1 recorded its file times, which changed)"
    assert after["down"][1] == [f"output {unverifiable}"]
    assert after["final"][1] == ["upstream down is stale", f"input {unverifiable}"]
    assert after["up"][0] == after["side"][0] == "fresh"  # files were recorded by content already
    assert make_runner(project).run() == ["down", "final"]
    assert all(s.fresh for s in make_runner(project).status())


def test_newer_lock_format_is_refused(project):
    lock = json.loads((project / LOCK_FILENAME).read_text(encoding="utf-8"))
    lock["format"] = LOCK_FORMAT + 1
    (project / LOCK_FILENAME).write_text(json.dumps(lock), encoding="utf-8")
    with pytest.raises(WorkflowError, match="E406") as info:
        make_runner(project)
    assert f"lock format {LOCK_FORMAT + 1}" in info.value.message and f"up to {LOCK_FORMAT}" in info.value.message
    assert "--" not in (info.value.hint or "")


def test_listing_matches_format_1_order(tmp_path):
    from pipeline.workflow.hashing import FileHasher

    for name in ("a/b.txt", "a-c.txt", "a/z/y.txt", "B.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name, encoding="utf-8")
    assert FileHasher(tmp_path.parent).listing(tmp_path.name) == _old_listing(tmp_path)


def test_forced_target_after_cut_off_upstream_says_forced(project):
    started: dict[str, list[str]] = {}
    runner = make_runner(project, "tokenize.split_mode=A")
    ran = runner.run("final", force=True, on_stage_start=lambda name, reasons: started.setdefault(name, reasons))
    assert ran == ["up", "final"]
    assert started == {"up": ["config tokenize.split_mode changed"], "final": ["forced"]}
