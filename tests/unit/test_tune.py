"""``jpipe tune``: the search space against the config, the study on a tiny project (SQLite, resume after a kill,
pruning through the training loop), --apply into jpipe.toml, --report, and the bad inputs (E150, E430, E431)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.config.search_space import SEARCH_SPACE, Param, check_search_space
from pipeline.errors import ConfigError, PipelineError, WorkflowError
from tests.conftest import write_tiny_project

pytest.importorskip("optuna")

# A fast classifier for the tiny fixture (fake word2vec vectors), and a small space over it.
TUNE_TOML = """\
# the fixture's settings
[tasks.topic.classifier]
embedding_init = "word2vec"
freeze_embeddings = false
hidden_size = 16
attention_size = 8
batch_size = 16
epochs = 3
patience = 3
learning_rate = 0.01
seeds = 1
device = "cpu"

[tune]
params = ["learning_rate", "dropout", "class_weights"]
startup_trials = 1
warmup_epochs = 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = write_tiny_project(tmp_path / "proj")
    (directory / "jpipe.toml").write_text(TUNE_TOML, encoding="utf-8")
    return directory


def run(project: Path, trials: int, **kwargs):
    from pipeline.workflow.tune import run_study

    return run_study(project_dir=project, config=load_config(project), task="topic", trials=trials, **kwargs)


def finished(study) -> list[tuple[dict, float | None, str]]:
    from pipeline.workflow.tune import finished_trials

    return [(t.params, t.value, t.state.name) for t in finished_trials(study)]


# ------------------------------------------------------------------ the space
def test_every_search_space_key_is_a_valid_classifier_setting():
    from pipeline.config.schema import ClassifierSection

    check_search_space(SEARCH_SPACE)  # what the module's import ran
    assert set(SEARCH_SPACE) <= set(ClassifierSection.settings())


@pytest.mark.parametrize(
    "space, code",
    [
        ({"learning_rat": Param("float", low=1e-4, high=1e-2, log=True)}, "E150"),  # not a config key
        ({"dropout": Param("float", low=0.0, high=1.5)}, "E105"),  # outside the key's range
        ({"cell": Param("choice", choices=("lstm", "transformer"))}, "E104"),  # not among its choices
        ({"dropout": Param("choice", choices=())}, "E150"),  # nothing to sample
    ],
)
def test_a_bad_search_space_is_a_coded_error(space, code):
    with pytest.raises(ConfigError) as caught:
        check_search_space(space)
    assert caught.value.code == code


@pytest.mark.parametrize("params", ['["hiden_size"]', '["epochs"]'])
def test_tune_params_must_be_search_space_keys(tmp_path, params):
    (tmp_path / "jpipe.toml").write_text(f"[tune]\nparams = {params}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.code == "E150"
    assert params.strip('[]"') in caught.value.message


def test_missing_optuna_is_a_coded_error(monkeypatch):
    import sys

    from pipeline.workflow.tune import import_optuna

    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ConfigError) as caught:
        import_optuna()
    assert caught.value.code == "E110" and "jpipe[tune]" in caught.value.hint


# ------------------------------------------------------------------ the study
def test_study_runs_in_sqlite_and_leaves_the_published_model_alone(project):
    study = run(project, trials=3)
    assert (project / ".jpipe" / "tune.db").stat().st_size > 0
    trials = finished(study)
    assert len(trials) == 3
    assert all(set(params) == {"learning_rate", "dropout", "class_weights"} for params, _, _ in trials)
    assert trials[0][0] == {"learning_rate": 0.01, "dropout": 0.3, "class_weights": False}  # the configured setting first
    assert study.best_value > 0
    assert not (project / ".jpipe" / "tune").exists()  # trial work dirs removed
    assert not (project / "models" / "classifier").exists()  # nothing published
    # the stored study reloads in another process's way: by name from the file
    from pipeline.workflow.tune import open_study

    assert len(open_study(project, "topic").trials) == 3


def test_the_loop_reports_every_epoch_and_a_pruned_trial_stops(project, monkeypatch):
    import optuna

    from pipeline.workflow import tune

    seen: list[tuple[int, float]] = []

    class Trial:  # prunes after its second report
        def report(self, value, step):
            seen.append((step, value))

        def should_prune(self):
            return len(seen) >= 2

        def set_user_attr(self, key, value):
            pass

    runner = tune.TrialRunner(project_dir=project, config=load_config(project), task="topic")
    monkeypatch.setattr(runner, "suggest", lambda trial, space: {})
    with pytest.raises(optuna.TrialPruned):
        runner(type("T", (Trial,), {"number": 0})())
    assert [step for step, _ in seen] == [1, 2]  # epochs 1 and 2 of 3; epoch 3 never ran
    assert all(0.0 <= value <= 1.0 for _, value in seen)


def test_a_killed_study_resumes_as_if_uninterrupted(project, tmp_path):
    from pipeline.workflow.tune import open_study

    uninterrupted = tmp_path / "whole"
    shutil.copytree(project, uninterrupted)
    whole = run(uninterrupted, trials=4)

    run(project, trials=2)
    # A kill mid-trial leaves a RUNNING trial in the database, as ask() does.
    study = open_study(project, "topic")
    study.ask({"learning_rate": whole.trials[0].distributions["learning_rate"]})
    resumed = run(project, trials=4)

    assert [t.state.name for t in resumed.trials].count("FAIL") == 1  # the interrupted trial, left out
    assert len(finished(resumed)) == 4
    assert finished(resumed) == finished(whole)  # same values sampled, same scores, same pruning
    assert resumed.best_value == whole.best_value


def test_a_finished_study_is_not_run_again(project):
    first = run(project, trials=2)
    again = run(project, trials=2)
    assert len(again.trials) == len(first.trials) == 2


# ------------------------------------------------------------------ --apply
def test_apply_writes_the_best_values_into_the_task_table(project):
    from pipeline.workflow.tune import apply_params, best_params

    study = run(project, trials=2)
    best = best_params(study)
    before = load_config(project).classifier_for("topic")
    sentiment = load_config(project).classifier_for("sentiment")
    apply_params(project, "topic", best)
    text = (project / "jpipe.toml").read_text(encoding="utf-8")
    assert text.startswith("# the fixture's settings") and "[tune]" in text  # the rest of the file kept
    after = load_config(project).classifier_for("topic")
    for key, value in best.items():
        assert after[key] == pytest.approx(value, rel=1e-5)
    apply_params(project, "topic", {"learning_rate": 0.00123456789, "hidden_size": 64})  # a second apply updates the table
    after = load_config(project).classifier_for("topic")
    assert (after["learning_rate"], after["hidden_size"]) == (0.00123457, 64) != (before["learning_rate"], before["hidden_size"])
    assert load_config(project).classifier_for("sentiment") == sentiment  # other tasks unchanged


def test_apply_leaves_the_file_alone_when_the_result_is_not_a_valid_config(project):
    from pipeline.workflow.tune import apply_params

    before = (project / "jpipe.toml").read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        apply_params(project, "topic", {"dropout": 2.0})
    assert caught.value.code == "E105"
    assert (project / "jpipe.toml").read_text(encoding="utf-8") == before


def test_apply_with_no_finished_trial_is_a_coded_error(project):
    from pipeline.workflow.tune import best_params, open_study

    result = CliRunner().invoke(app, ["--dir", str(project), "tune", "topic", "--apply"])
    assert result.exit_code == 1 and "E430" in result.output  # no study at all
    study = open_study(project, "topic", config=load_config(project), create=True)
    study.ask()  # one trial, never finished
    with pytest.raises(WorkflowError) as caught:
        best_params(study)
    assert caught.value.code == "E430"


# ------------------------------------------------------------------ corrupt database
def test_a_corrupt_study_database_names_the_file_and_fresh_starts_again(project):
    from pipeline.workflow.tune import open_study

    path = project / ".jpipe" / "tune.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(PipelineError) as caught:
        open_study(project, "topic", config=load_config(project), create=True)
    assert caught.value.code == "E431"
    assert str(path) in caught.value.message and "Delete" in caught.value.hint
    result = CliRunner().invoke(app, ["--dir", str(project), "tune", "topic", "--report"])
    assert result.exit_code == 1 and "E431" in result.output and "--fresh" in result.output
    study = run(project, trials=1, fresh=True)
    assert len(finished(study)) == 1
    with sqlite3.connect(path) as db:  # a real study database now
        assert db.execute("select count(*) from trials").fetchone()[0] == 1


# ------------------------------------------------------------------ the CLI
def test_cli_tunes_reports_and_applies(project):
    result = CliRunner().invoke(app, ["--dir", str(project), "tune", "topic", "--trials", "2", "--report", "--apply"])
    assert result.exit_code == 0, result.output
    assert "trial 2/2" in result.output and "best dev macro-F1" in result.output
    assert "complete" in result.output and "[tasks.topic.classifier]" in result.output
    report = project / "models" / "report" / "tune" / "topic"
    history = report / "optimization_history.png"
    assert history.read_bytes().startswith(b"\x89PNG")
    from pipeline.workflow.tune import best_params, open_study

    best = best_params(open_study(project, "topic"))
    effective = load_config(project).classifier_for("topic")
    assert {key: effective[key] for key in best} == pytest.approx(best, rel=1e-5)


def _tune_process(project: Path, trials: int):
    """``jpipe tune topic --trials N`` in a process of its own (one torch thread, as the uninterrupted run)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline", "--dir", str(project), "tune", "topic", "--trials", str(trials)]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _stored_trials(project: Path) -> int:
    """Finished trials in the study so far (0 while the process has not created the database or the study yet)."""
    from pipeline.workflow.tune import open_study

    try:
        return len(finished(open_study(project, "topic")))
    except WorkflowError:  # E430: the file exists, the study is not in it yet
        return 0


def test_a_real_kill_mid_study_resumes_as_if_uninterrupted(project, tmp_path):
    """SIGKILL a real ``jpipe tune`` once two trials are stored, run it again to two trials more: the same trials,
    scores and best value as one uninterrupted process that runs that many."""
    import signal
    import time

    from pipeline.workflow.tune import open_study

    uninterrupted = tmp_path / "whole"
    shutil.copytree(project, uninterrupted)
    killed = _tune_process(project, 1000)  # never ends by itself: killed after its second stored trial
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and killed.poll() is None and _stored_trials(project) < 2:
        time.sleep(0.5)  # a few reads only: the tuning process is the one writer
    assert killed.poll() is None, killed.stderr.read()
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    total = len(finished(open_study(project, "topic"))) + 2

    resume = _tune_process(project, total)
    assert resume.wait(timeout=300) == 0, resume.stderr.read()
    assert _tune_process(uninterrupted, total).wait(timeout=300) == 0
    whole, resumed = open_study(uninterrupted, "topic"), open_study(project, "topic")
    assert len(finished(resumed)) == len(finished(whole)) == total
    assert finished(resumed) == finished(whole)
    assert resumed.best_value == whole.best_value
