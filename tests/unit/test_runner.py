"""Runner semantics on toy stages: staleness reasons, no-op runs, atomicity on failure."""

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.workflow.runner import LOCK_FILENAME, Runner, Stage

CALLS: list[str] = []


def first_stage(ctx):
    CALLS.append("first")
    ctx.output("out/first.txt").write_text(f"mode={ctx.section['split_mode']}\n", encoding="utf-8")
    return {"lines": 1}


def second_stage(ctx):
    CALLS.append("second")
    text = ctx.input("out/first.txt").read_text(encoding="utf-8")
    directory = ctx.output("out/second")
    directory.mkdir(parents=True)
    (directory / "copy.txt").write_text(text + f"seed={ctx.section['seed']}\n", encoding="utf-8")


def failing_stage(ctx):
    CALLS.append("failing")
    directory = ctx.output("out/second")
    directory.mkdir(parents=True)
    (directory / "copy.txt").write_text("half-written", encoding="utf-8")
    raise RuntimeError("boom")


def toy_stages(second="tests.unit.test_runner:second_stage"):
    return [
        Stage(name="first", func="tests.unit.test_runner:first_stage", inputs=("in.txt",), outputs=("out/first.txt",), section="tokenize"),
        Stage(name="second", func=second, inputs=("out/first.txt",), outputs=("out/second",), section="prepare"),
    ]


@pytest.fixture()
def project(tmp_path):
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    CALLS.clear()
    return tmp_path


def make_runner(project: Path, overrides=(), second="tests.unit.test_runner:second_stage") -> Runner:
    return Runner(project, load_config(project, list(overrides)), stages=toy_stages(second))


def reasons(runner: Runner) -> dict[str, list[str]]:
    return {status.name: status.reasons for status in runner.status()}


def test_first_run_then_noop(project):
    runner = make_runner(project)
    assert reasons(runner) == {"first": ["never run"], "second": ["never run"]}
    assert runner.run() == ["first", "second"]
    assert (project / "out/second/copy.txt").read_text(encoding="utf-8") == "mode=C\nseed=13\n"
    CALLS.clear()
    again = make_runner(project)
    assert all(status.fresh for status in again.status())
    assert again.run() == [] and CALLS == []


def test_config_change_makes_only_that_stage_and_downstream_stale(project):
    make_runner(project).run()
    changed = reasons(make_runner(project, ["prepare.seed=5"]))
    assert changed == {"first": [], "second": ["config prepare.seed changed"]}
    upstream_changed = reasons(make_runner(project, ["tokenize.split_mode=A"]))
    assert upstream_changed["first"] == ["config tokenize.split_mode changed"]
    assert upstream_changed["second"] == ["upstream first is stale"]
    runner = make_runner(project, ["tokenize.split_mode=A"])
    runner.run("first")
    # first rewrote out/first.txt with other content: second reads it, so it is stale
    assert reasons(make_runner(project, ["tokenize.split_mode=A"]))["second"] == ["input out/first.txt changed"]


def test_non_fingerprint_setting_does_not_make_stale(project):
    make_runner(project).run()
    assert all(s.fresh for s in make_runner(project, ["tokenize.batch_size=7"]).status())


def test_input_output_reasons(project):
    make_runner(project).run()
    (project / "in.txt").write_text("changed\n", encoding="utf-8")
    assert reasons(make_runner(project))["first"] == ["input in.txt changed"]
    make_runner(project).run()
    (project / "out/second/copy.txt").write_text("edited by hand\n", encoding="utf-8")
    assert reasons(make_runner(project))["second"] == ["output out/second modified"]
    import shutil

    shutil.rmtree(project / "out/second")
    assert reasons(make_runner(project))["second"] == ["output out/second missing"]


def test_target_runs_stale_upstream_and_force(project):
    runner = make_runner(project)
    assert runner.run("second") == ["first", "second"]
    CALLS.clear()
    assert make_runner(project).run("second", force=True) == ["second"]
    assert CALLS == ["second"]
    assert make_runner(project).run(force=True) == ["first", "second"]


def test_failing_stage_leaves_outputs_and_lock(project):
    make_runner(project).run()
    lock_before = (project / LOCK_FILENAME).read_bytes()
    output_before = (project / "out/second/copy.txt").read_text(encoding="utf-8")
    runner = make_runner(project, ["prepare.seed=99"], second="tests.unit.test_runner:failing_stage")
    with pytest.raises(RuntimeError, match="boom"):
        runner.run()
    assert (project / LOCK_FILENAME).read_bytes() == lock_before
    assert (project / "out/second/copy.txt").read_text(encoding="utf-8") == output_before
    assert not list((project / ".jpipe" / "staging").glob("*")), "staging must be cleaned up"
    # the stage is still stale for the new config, fresh for the old one
    assert reasons(make_runner(project, ["prepare.seed=99"]))["second"] == ["config prepare.seed changed"]
    assert all(s.fresh for s in make_runner(project).status())


def test_lock_records_fingerprints_and_metrics(project):
    make_runner(project).run()
    lock = json.loads((project / LOCK_FILENAME).read_text(encoding="utf-8"))
    entry = lock["stages"]["first"]
    assert entry["metrics"] == {"lines": 1}
    assert entry["config"]["split_mode"] == "C"
    assert lock["stages"]["second"]["upstream"] == {"first": entry["fingerprint"]}


def test_unknown_stage_lists_valid_ones(project):
    from pipeline.errors import WorkflowError

    with pytest.raises(WorkflowError, match="E401") as info:
        make_runner(project).run("third")
    assert info.value.code == "E401"
    assert "first, second" in info.value.hint


def test_concurrent_run_is_refused(project):
    from pipeline.errors import WorkflowError

    runner = make_runner(project)
    with runner.exclusive():
        with pytest.raises(WorkflowError, match="E402: Another"):
            with make_runner(project).exclusive():
                pass


def test_optional_input_and_package_versions(project):
    stages = [
        Stage(
            name="first",
            func="tests.unit.test_runner:first_stage",
            inputs=("in.txt",),
            optional_inputs=("extra/opt.txt",),
            outputs=("out/first.txt",),
            section="tokenize",
            packages=("pytest",),
        ),
    ]
    config = load_config(project)
    Runner(project, config, stages=stages).run()
    assert Runner(project, config, stages=stages).status()[0].fresh  # absent optional input is fine
    (project / "extra").mkdir()
    (project / "extra/opt.txt").write_text("x", encoding="utf-8")
    assert Runner(project, config, stages=stages).status()[0].reasons == ["input extra/opt.txt changed"]
    Runner(project, config, stages=stages).run()
    (project / "extra/opt.txt").unlink()
    assert Runner(project, config, stages=stages).status()[0].reasons == ["input extra/opt.txt removed"]
    Runner(project, config, stages=stages).run()
    lock = json.loads((project / LOCK_FILENAME).read_text(encoding="utf-8"))
    lock["stages"]["first"]["packages"]["pytest"] = "0.0.1"
    (project / LOCK_FILENAME).write_text(json.dumps(lock), encoding="utf-8")
    (reason,) = Runner(project, config, stages=stages).status()[0].reasons
    assert reason.startswith("package pytest changed (0.0.1 -> ")


def test_atomic_writes_are_readable_like_plain_files(tmp_path):
    from pipeline.io import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    (tmp_path / "b.json").write_text("{}", encoding="utf-8")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "b.json").stat().st_mode & 0o777


def lazy_stage(ctx):
    CALLS.append("lazy")  # returns without writing its declared output


def undeclared_stage(ctx):
    ctx.output("out/elsewhere.txt")


def test_workflow_errors_have_codes_and_no_flags(project):
    from pipeline.errors import WorkflowError

    (project / "in.txt").unlink()
    with pytest.raises(WorkflowError, match="E404") as info:
        make_runner(project).run("first")
    assert info.value.hint == "Check the paths in the tokenize config section."
    (project / "in.txt").write_text("hello\n", encoding="utf-8")
    stages = [toy_stages()[1]]  # second alone: its input has no producer in this table and is missing
    with pytest.raises(WorkflowError, match="E404"):
        Runner(project, load_config(project), stages=stages).run()
    with pytest.raises(WorkflowError, match="E405"):
        Runner(project, load_config(project), stages=list(reversed(toy_stages())))
    for func in ("lazy_stage", "undeclared_stage"):
        with pytest.raises(WorkflowError, match="E407"):
            make_runner(project, second=f"tests.unit.test_runner:{func}").run()
    (project / LOCK_FILENAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(WorkflowError, match="E403") as info:
        make_runner(project)
    assert "jpipe run" in info.value.hint and "--" not in info.value.hint


def test_plan_reasons_and_forced(project):
    make_runner(project).run()
    assert make_runner(project).plan() == []
    assert make_runner(project).plan(force=True) == [("first", ["forced"]), ("second", ["forced"])]
    assert make_runner(project, ["prepare.seed=1"]).plan("second") == [("second", ["config prepare.seed changed"])]
