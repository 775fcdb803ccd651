"""Run history (.jpipe/history.db), `jpipe metrics history/diff`, headline metrics and the optional MLflow logging."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import load_config
from pipeline.errors import ConfigError, WorkflowError
from pipeline.evaluation.headline import headline_metrics
from pipeline.workflow import history
from pipeline.workflow.history import RunRecord, config_fingerprint, diff_runs, pick_pair, read_runs, record_tune, resolve
from tests.unit import test_early_cutoff as toy
from tests.unit.test_cli import fresh_cli_state  # noqa: F401 - autouse fixture: resets the CLI state between invocations

runner = CliRunner()
WIDE = {"COLUMNS": "240"}


def _record(run_id: str, *, kind: str = "run", config: dict | None = None, metrics: dict | None = None, **extra) -> RunRecord:
    return RunRecord(
        id=run_id,
        kind=kind,
        status=extra.pop("status", "ok"),
        started_at="2026-12-08T00:00:00+00:00",
        finished_at="2026-12-08T00:01:00+00:00",
        fingerprint=extra.pop("fingerprint", "abc123def456"),
        config=config or {},
        metrics=metrics or {},
        **extra,
    )


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture()
def toy_project(tmp_path, monkeypatch):
    """A project of the toy stages of test_early_cutoff (instant), with a topic report to read metrics from."""
    monkeypatch.setattr("pipeline.workflow.stages.build_stages", lambda config=None: toy.STAGES)
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    return tmp_path


def _topic_report(project: Path, mean: float) -> None:
    _write(
        project / "models/report/tasks/topic/report.json",
        {"bilstm_attention": {"macro_f1": mean, "macro_f1_mean": mean, "macro_f1_std": 0.01}, "majority": {"macro_f1": 0.14}},
    )


# ------------------------------------------------------------------ store
def test_append_and_read_back_in_order(tmp_path):
    history.append(tmp_path, _record("261208-000000-aaaa", config={"tokenize": {"split_mode": "C"}}, metrics={"topic.macro_f1": 0.7}))
    history.append(tmp_path, _record("261208-000100-bbbb", status="failed", error="E404: missing", stages={"failed": ["up"]}))
    runs = read_runs(tmp_path)
    assert [run.id for run in runs] == ["261208-000000-aaaa", "261208-000100-bbbb"]
    assert runs[0].config == {"tokenize": {"split_mode": "C"}} and runs[0].metrics == {"topic.macro_f1": 0.7}
    assert runs[1].status == "failed" and runs[1].error == "E404: missing" and runs[1].stages == {"failed": ["up"]}
    assert [run.id for run in read_runs(tmp_path, limit=1)] == ["261208-000100-bbbb"]
    with sqlite3.connect(tmp_path / ".jpipe/history.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(history.SCHEMA_VERSION,)]


def test_run_ids_sort_by_time():
    from datetime import UTC, datetime

    early, late = (
        history.new_run_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
        history.new_run_id(datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)),
    )
    assert early.startswith("260102-030405-") and len(early) == 18 and early < late


def test_resolve_by_id_prefix_and_position():
    runs = [_record("261208-000000-aaaa"), _record("261208-000100-bbbb"), _record("261209-000000-cccc")]
    assert resolve(runs, "261208-000100-bbbb") is runs[1]
    assert resolve(runs, "261209") is runs[2]
    assert resolve(runs, "-1") is runs[2] and resolve(runs, "-3") is runs[0]
    for ref in ("261208", "-4", "nope", "0"):  # ambiguous prefix, out of range, unknown, not a negative index
        with pytest.raises(WorkflowError) as caught:
            resolve(runs, ref)
        assert caught.value.code == "E411" and "261209-000000-cccc, 261208-000100-bbbb" in caught.value.hint


def test_no_history_and_empty_history(tmp_path):
    with pytest.raises(WorkflowError) as caught:
        read_runs(tmp_path)
    assert caught.value.code == "E410" and "jpipe run" in caught.value.hint
    with history.connect(tmp_path, create=True):
        pass  # the file exists, with no runs
    with pytest.raises(WorkflowError, match="No run history"):
        read_runs(tmp_path)


def test_corrupt_history_names_the_file(tmp_path):
    path = tmp_path / ".jpipe/history.db"
    path.parent.mkdir()
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(WorkflowError) as caught:
        read_runs(tmp_path)
    assert caught.value.code == "E412" and str(path) in caught.value.message and f"mv {path}" in caught.value.hint
    assert history.save(tmp_path, _record("261208-000000-aaaa")) is None  # a run's record: a warning, never an error


def test_newer_schema_is_refused(tmp_path):
    history.append(tmp_path, _record("261208-000000-aaaa"))
    with sqlite3.connect(tmp_path / ".jpipe/history.db") as conn:
        conn.execute("UPDATE schema_version SET version = ?", (history.SCHEMA_VERSION + 1,))
    with pytest.raises(WorkflowError) as caught:
        read_runs(tmp_path)
    assert caught.value.code == "E413"


# ------------------------------------------------------------------ diff
def test_diff_lists_changed_metrics_and_config_keys():
    old = _record(
        "a", config={"tokenize": {"split_mode": "C", "workers": 0}}, metrics={"topic.macro_f1_mean": 0.70, "generator.perplexity": 90.0}
    )
    new = _record(
        "b",
        config={"tokenize": {"split_mode": "A", "workers": 2}, "tasks": {"topic": {"classifier": {"dropout": 0.5}}}},
        metrics={"topic.macro_f1_mean": 0.72, "generator.perplexity": 90.0, "sentiment.macro_f1_mean": 0.6},
        fingerprint="ffff",
    )
    result = diff_runs(old, new)
    rows = {row["metric"]: row for row in result["metrics"]}
    assert set(rows) == {"topic.macro_f1_mean", "sentiment.macro_f1_mean"}  # perplexity is unchanged
    assert rows["topic.macro_f1_mean"]["change"] == pytest.approx(0.02)
    assert rows["sentiment.macro_f1_mean"]["old"] is None and rows["sentiment.macro_f1_mean"]["change"] is None
    assert result["config"] == [
        {"key": "tasks.topic.classifier.dropout", "old": None, "new": 0.5, "fingerprinted": True},
        {"key": "tokenize.split_mode", "old": "C", "new": "A", "fingerprinted": True},
        {"key": "tokenize.workers", "old": 0, "new": 2, "fingerprinted": False},
    ]
    assert not result["same_fingerprint"]
    assert {row["metric"] for row in diff_runs(old, new, all_metrics=True)["metrics"]} == set(rows) | {"generator.perplexity"}


def test_diff_of_tune_rows_compares_their_parameters():
    old = _record("a", kind="tune", details={"params": {"learning_rate": 0.001, "dropout": 0.3}})
    new = _record("b", kind="tune", details={"params": {"learning_rate": 0.003, "dropout": 0.3}})
    assert diff_runs(old, new)["config"] == [{"key": "params.learning_rate", "old": 0.001, "new": 0.003, "fingerprinted": None}]


def test_default_pair_is_the_last_run_and_the_one_of_its_kind_before():
    runs = [_record("r1"), _record("t1", kind="tune"), _record("r2")]
    assert [run.id for run in pick_pair(runs, None, None)] == ["r1", "r2"]
    assert [run.id for run in pick_pair(runs, None, "t1")] == ["r1", "t1"]  # no tune before it: the run before
    assert [run.id for run in pick_pair(runs, "-2", None)] == ["t1", "r2"]
    with pytest.raises(WorkflowError) as caught:
        pick_pair(runs, None, "r1")
    assert caught.value.code == "E411"


# ------------------------------------------------------------------ fingerprint and metrics
def test_config_fingerprint_counts_what_stages_fingerprint(tmp_path):
    base = config_fingerprint(load_config(tmp_path))
    assert config_fingerprint(load_config(tmp_path)) == base
    assert config_fingerprint(load_config(tmp_path, ["tokenize.workers=3", 'tracking.mlflow_uri="sqlite:///x.db"'])) == base
    assert config_fingerprint(load_config(tmp_path, ["tokenize.split_mode=A"])) != base
    assert config_fingerprint(load_config(tmp_path, ["tasks.topic.classifier.dropout=0.1"])) != base
    assert config_fingerprint(load_config(tmp_path, ["tasks.topic.enabled=false"])) != base


def test_headline_metrics_from_report_files(tmp_path):
    calibration = {"ece_before_mean": 0.09, "ece_after_mean": 0.03, "brier_after": 0.4, "temperature": 1.4}
    row = {"macro_f1": 0.71, "macro_f1_mean": 0.71, "macro_f1_std": 0.01, "per_class": {}, "calibration": calibration}
    report = {"bilstm_attention": row, "bilstm_ensemble": {"macro_f1": 0.74, "members": 5}, "tfidf_linear": {"macro_f1": 0.69}}
    _write(tmp_path / "models/report/tasks/topic/report.json", report)
    _write(tmp_path / "models/classifier/topic/metrics.json", {"dev_macro_f1": 0.73, "seed_summary": {"dev_macro_f1_mean": 0.72}})
    _write(tmp_path / "models/classifier/sentiment/metrics.json", {"dev_macro_f1": 0.6})  # trained, not evaluated
    _write(
        tmp_path / "models/report/generator.json", {"lstm": {"perplexity": 85.5, "perplexity_mean": 87.0}, "ngram": {"perplexity": 120.0}}
    )
    _write(
        tmp_path / "models/report/vectors.json",
        {"sources": {"word2vec": {"synonyms": {"roc_auc": 0.74}, "coverage": {"token_coverage": 0.99}}}},
    )
    _write(tmp_path / "models/report/extractor.json", {"seq2seq": {"record_f1": 0.3, "record_f1_std": 0.02}, "test_sentences": 10})
    assert headline_metrics(tmp_path) == {
        "extractor.seq2seq.record_f1": 0.3,
        "extractor.seq2seq.record_f1_std": 0.02,
        "generator.ngram_perplexity": 120.0,
        "generator.perplexity": 85.5,
        "generator.perplexity_mean": 87.0,
        "sentiment.dev_macro_f1": 0.6,
        "topic.bilstm_ensemble.macro_f1": 0.74,
        "topic.calibration.brier_after": 0.4,
        "topic.calibration.ece_after_mean": 0.03,
        "topic.calibration.ece_before_mean": 0.09,
        "topic.dev_macro_f1": 0.73,
        "topic.dev_macro_f1_mean": 0.72,
        "topic.macro_f1": 0.71,
        "topic.macro_f1_mean": 0.71,
        "topic.macro_f1_std": 0.01,
        "vectors.word2vec.synonym_auc": 0.74,
        "vectors.word2vec.token_coverage": 0.99,
    }
    assert set(headline_metrics(tmp_path, tasks=["sentiment"])) >= {"sentiment.dev_macro_f1"}
    assert not any(name.startswith("topic.") for name in headline_metrics(tmp_path, tasks=["sentiment"]))
    (tmp_path / "models/report/generator.json").write_text("{not json", encoding="utf-8")
    assert "generator.perplexity" not in headline_metrics(tmp_path)  # a damaged file is skipped


# ------------------------------------------------------------------ jpipe run and the CLI
def test_every_run_appends_a_row_ok_or_failed(toy_project):
    base = ["--dir", str(toy_project)]
    assert runner.invoke(app, [*base, "run"]).exit_code == 0
    _topic_report(toy_project, 0.71)
    second = runner.invoke(app, [*base, "run", "--set", "tokenize.split_mode=A"])
    assert second.exit_code == 0, second.output
    assert runner.invoke(app, [*base, "run", "--dry-run"]).exit_code == 0  # a dry run is not a run
    (toy_project / "in.txt").unlink()
    failed = runner.invoke(app, [*base, "run", "--force", "--set", "tokenize.split_mode=B"])
    assert isinstance(failed.exception, WorkflowError) and failed.exception.code == "E404"
    first, ok, bad = read_runs(toy_project)
    assert first.stages["ran"] == ["up", "down", "side", "final"] and first.metrics == {}
    assert ok.status == "ok" and ok.stages["ran"] == ["up", "side"] and ok.stages["cut_off"] == ["down", "final"]
    assert ok.metrics["topic.macro_f1_mean"] == 0.71 and ok.config["tokenize"]["split_mode"] == "A"
    assert ok.command["overrides"] == {"tokenize.split_mode": "A"} and ok.fingerprint != first.fingerprint
    assert bad.status == "failed" and bad.error.startswith("E404: Stage up: input in.txt is missing")
    assert bad.stages["failed"] == ["up"] and bad.stages["not_reached"] == ["down", "side", "final"]


def test_metrics_history_and_diff_output(toy_project):
    base = ["--dir", str(toy_project)]
    _topic_report(toy_project, 0.70)
    runner.invoke(app, [*base, "run"])
    _topic_report(toy_project, 0.74)
    runner.invoke(app, [*base, "run", "--set", "tokenize.split_mode=A"])
    runs = read_runs(toy_project)
    table = runner.invoke(app, [*base, "metrics", "history"], env=WIDE)
    assert table.exit_code == 0, table.output
    assert (
        all(run.id in table.stdout for run in runs)
        and "topic" in table.stdout
        and "macro_f1_mean" in table.stdout
        and "0.7400" in table.stdout
    )
    assert "4 ran, 0 fresh" in table.stdout and runs[1].fingerprint[:8] in table.stdout
    diff = runner.invoke(app, [*base, "metrics", "diff"], env=WIDE)
    assert diff.exit_code == 0, diff.output
    assert "topic.macro_f1_mean" in diff.stdout and "+0.0400" in diff.stdout and "tokenize.split_mode" in diff.stdout
    assert (
        "topic.macro_f1_std" not in diff.stdout
        and "topic.macro_f1_std" in runner.invoke(app, [*base, "metrics", "diff", "--all"], env=WIDE).stdout
    )
    data = json.loads(runner.invoke(app, [*base, "metrics", "diff", "-2", runs[1].id[:15], "--json"]).stdout)
    assert data["old"]["id"] == runs[0].id and data["config"] == [
        {"key": "tokenize.split_mode", "old": "C", "new": "A", "fingerprinted": True}
    ]
    listed = json.loads(runner.invoke(app, [*base, "metrics", "history", "--json", "--limit", "1"]).stdout)
    assert [row["id"] for row in listed] == [runs[1].id] and listed[0]["metrics"]["topic.macro_f1_mean"] == 0.74


def test_metrics_commands_errors(tmp_path):
    empty = runner.invoke(app, ["--dir", str(tmp_path), "metrics", "history"])
    assert isinstance(empty.exception, WorkflowError) and empty.exception.code == "E410"
    history.append(tmp_path, _record("261208-000000-aaaa"))
    unknown = runner.invoke(app, ["--dir", str(tmp_path), "metrics", "diff", "x1", "-1"])
    assert unknown.exception.code == "E411" and "261208-000000-aaaa" in unknown.exception.hint
    one = runner.invoke(app, ["--dir", str(tmp_path), "metrics", "diff"])
    assert one.exception.code == "E411"  # a single run: nothing before it
    (tmp_path / ".jpipe/history.db").write_bytes(b"garbage" * 1000)
    for path in (tmp_path / ".jpipe").glob("history.db-*"):
        path.unlink()  # the WAL files of the database the garbage replaced
    corrupt = runner.invoke(app, ["--dir", str(tmp_path), "metrics", "diff"])
    assert corrupt.exception.code == "E412"


def test_main_prints_history_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipeline", "--dir", str(tmp_path), "metrics", "diff"], capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Error E410:" in result.stderr and "Run `jpipe run` first" in result.stderr


def test_record_tune_appends_a_tune_row(tmp_path):
    config = load_config(tmp_path)
    record_tune(tmp_path, task="topic", best_value=0.75, params={"learning_rate": 0.003}, n_trials=12, config=config, study="topic")
    record_tune(tmp_path, task="topic", best_value=None, params={}, n_trials=0, status="failed")
    done, empty = read_runs(tmp_path)
    assert done.kind == "tune" and done.metrics == {"topic.tune_best_dev_macro_f1": 0.75, "topic.tune_trials": 12.0}
    assert done.details["params"] == {"learning_rate": 0.003} and done.fingerprint == config_fingerprint(config)
    assert empty.metrics == {"topic.tune_trials": 0.0} and empty.fingerprint is None and empty.status == "failed"
    table = runner.invoke(app, ["--dir", str(tmp_path), "metrics", "history"], env=WIDE)
    assert "12 trials" in table.stdout and "0.7500" in table.stdout


def test_metrics_commands_do_not_import_heavy_libraries(tmp_path):
    history.append(tmp_path, _record("261208-000000-aaaa", metrics={"topic.macro_f1_mean": 0.7}))
    history.append(tmp_path, _record("261208-000100-bbbb", metrics={"topic.macro_f1_mean": 0.72}))
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        f"for args in (['metrics', 'history'], ['metrics', 'diff'], ['metrics', 'diff', '--json']):\n"
        f"    result = CliRunner().invoke(app, ['--dir', {str(tmp_path)!r}, *args])\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "heavy = [m for m in ('torch', 'spacy', 'gensim', 'sklearn', 'matplotlib', 'pandas', 'mlflow') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


# ------------------------------------------------------------------ MLflow
def test_missing_mlflow_stops_the_run_before_it_starts(toy_project, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = runner.invoke(app, ["--dir", str(toy_project), "run", "--set", 'tracking.mlflow_uri="sqlite:///mlruns.db"'])
    assert isinstance(result.exception, ConfigError) and result.exception.code == "E110"
    assert "pip install 'jpipe[tracking]'" in result.exception.hint
    assert not (toy_project / "out").exists() and not (toy_project / ".jpipe/history.db").exists()


def test_relative_stores_are_under_the_project(tmp_path):
    from pipeline.workflow.tracking import resolve_uri

    assert resolve_uri("sqlite:///mlruns.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert resolve_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert resolve_uri("file:mlruns", tmp_path) == (tmp_path / "mlruns").resolve().as_uri()
    assert resolve_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


def test_run_is_logged_to_mlflow(toy_project):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    from mlflow.tracking import MlflowClient

    (toy_project / "jpipe.toml").write_text('[tracking]\nmlflow_uri = "sqlite:///mlruns.db"\nexperiment = "toy"\n', encoding="utf-8")
    _topic_report(toy_project, 0.71)
    result = runner.invoke(app, ["--dir", str(toy_project), "run", "--set", "tokenize.split_mode=A"])
    assert result.exit_code == 0, result.output
    (row,) = read_runs(toy_project)
    client = MlflowClient(tracking_uri=f"sqlite:///{toy_project}/mlruns.db")
    (run,) = client.search_runs([client.get_experiment_by_name("toy").experiment_id])
    assert run.info.run_name == row.id and run.info.status == "FINISHED" and run.data.tags["jpipe.fingerprint"] == row.fingerprint
    assert run.data.metrics == row.metrics and run.data.metrics["topic.macro_f1_mean"] == 0.71
    assert run.data.params["tokenize.split_mode"] == "A" and run.data.params["tracking.experiment"] == "toy"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)} | {
        item.path for item in client.list_artifacts(run.info.run_id, "report/tasks/topic")
    }
    assert {"jpipe_run.json", "report/tasks/topic/report.json"} <= artifacts
    assert (toy_project / "mlartifacts").is_dir()  # beside the database, not in the current directory


def test_real_run_on_the_tiny_corpus_appends_a_row(tiny_project):
    """`jpipe run tokenize` on the tiny KNBC archive (real stages: corpus, prepare, tokenize), then a no-op run."""
    project, overrides = tiny_project
    sets = [arg for value in overrides for arg in ("--set", value)]
    first = runner.invoke(app, ["--dir", str(project), "run", "tokenize", *sets])
    assert first.exit_code == 0, first.output
    assert runner.invoke(app, ["--dir", str(project), "run", "tokenize", *sets]).exit_code == 0  # nothing to run: a row too
    built, noop = read_runs(project)
    assert built.status == noop.status == "ok" and built.stages["target"] == "tokenize"
    assert built.stages["ran"] == ["corpus", "prepare", "tokenize"] and noop.stages["ran"] == []
    assert noop.stages["fresh"] == ["corpus", "prepare", "tokenize"]
    assert built.fingerprint == noop.fingerprint == config_fingerprint(load_config(project, overrides))
    assert built.config["tokenize"]["split_mode"] == "C" and built.metrics == {}
