"""The CLI: fast help without heavy imports, status/run/config commands, readable errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        "runner = CliRunner()\n"
        "for args in (['--help'], ['run', '--help'], ['status', '--help'], ['bench', '--help']):\n"
        "    assert runner.invoke(app, args).exit_code == 0, args\n"
        "heavy = [m for m in ('torch', 'spacy', 'gensim', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_status_json_on_empty_project(tmp_path):
    result = runner.invoke(app, ["--dir", str(tmp_path), "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    names = [stage["name"] for stage in data["stages"]]
    assert names[:3] == ["corpus", "prepare", "tokenize"]
    assert all(stage["state"] == "stale" and stage["reasons"] == ["never run"] for stage in data["stages"])


def test_bad_override_is_a_clean_error(tmp_path):
    result = runner.invoke(app, ["--dir", str(tmp_path), "status", "--set", "tokenize.split_mode=Q"])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "Valid values" in str(result.exception)


def test_main_prints_error_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--dir", str(tmp_path), "run", "corpus", "--source", str(tmp_path / "missing.tar.bz2")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "does not exist" in result.stderr and "--source" in result.stderr


def test_run_dry_run_and_noop(tiny_project):
    project, overrides = tiny_project
    sets = [arg for o in overrides for arg in ("--set", o)]
    dry = runner.invoke(app, ["--dir", str(project), "run", "tokenize", "--dry-run", *sets])
    assert dry.exit_code == 0 and "would run corpus" in dry.stdout and "would run tokenize" in dry.stdout
    first = runner.invoke(app, ["--dir", str(project), "run", "tokenize", *sets])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["--dir", str(project), "run", "tokenize", *sets])
    assert "nothing to run" in second.stdout
    stale = runner.invoke(app, ["--dir", str(project), "status", "--json", "--set", "tokenize.split_mode=A", *sets])
    states = {s["name"]: s for s in json.loads(stale.stdout)["stages"]}
    assert states["prepare"]["state"] == "fresh"
    assert states["tokenize"]["reasons"] == ["config tokenize.split_mode changed"]
    stats = runner.invoke(app, ["--dir", str(project), "corpus-stats", "--json"])
    assert json.loads(stats.stdout)["sentences"] > 0


def test_config_defaults_is_valid_toml(tmp_path):
    import tomllib

    result = runner.invoke(app, ["config", "--defaults"])
    assert result.exit_code == 0
    assert tomllib.loads(result.stdout)["tokenize"]["split_mode"] == "C"


def test_env_source_is_used(tmp_path, monkeypatch):
    from pipeline.cli._app import load_project_config, state

    monkeypatch.setenv("KNBC_SOURCE", "/somewhere/knbc.tar.bz2")
    state.project_dir = tmp_path
    assert load_project_config()["corpus"]["source"] == "/somewhere/knbc.tar.bz2"
    assert load_project_config(source="/cli/wins.tar.bz2")["corpus"]["source"] == "/cli/wins.tar.bz2"
    assert load_project_config(['corpus.source="/set/wins.tar.bz2"'])["corpus"]["source"] == "/set/wins.tar.bz2"
