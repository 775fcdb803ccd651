"""The CLI: fast help without heavy imports, status/run/config commands, readable errors."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli._app import state
from tests.fixtures.tiny_knbc import SENTENCE_COUNT

runner = CliRunner()


@pytest.fixture(autouse=True)
def fresh_cli_state():
    """Undo what one invocation leaves behind for the next test.

    The top-level callback stores --dir/--verbose on the module-level ``state``, and
    ``logging.basicConfig`` adds a root handler bound to the CliRunner's captured
    stream, which is closed once that invocation ends. Without this, a test would see
    the previous test's project directory, verbosity and dead log handler.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    saved = dict(vars(state))
    state.project_dir, state.verbose = Path.cwd().resolve(), False
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name in ("project_dir", "verbose"):
        if name in saved:
            setattr(state, name, saved[name])
        else:
            vars(state).pop(name, None)


def test_state_does_not_leak_between_invocations(tmp_path):
    first = runner.invoke(app, ["--dir", str(tmp_path), "--verbose", "status", "--json"])
    assert first.exit_code == 0, first.output
    assert state.project_dir == tmp_path.resolve() and state.verbose
    # without --dir/--verbose the callback resets both: nothing of the first call carries over
    second = runner.invoke(app, ["status", "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["project"] == str(Path.cwd().resolve())
    assert state.verbose is False


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        "runner = CliRunner()\n"
        "for args in (['--help'], ['run', '--help'], ['status', '--help'], ['bench', '--help'], ['metrics', '--help']):\n"
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
    from pipeline.errors import ConfigError

    result = runner.invoke(app, ["--dir", str(tmp_path), "status", "--set", "tokenize.split_mode=Q"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and result.exception.code == "E104"
    assert "Valid values" in str(result.exception)


def test_main_prints_error_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--dir", str(tmp_path), "run", "corpus", "--source", str(tmp_path / "missing.tar.bz2")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Error E201:" in result.stderr and "does not exist" in result.stderr
    assert "--source" in result.stderr  # the CLI's own tip; the library hint names config keys


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
    assert json.loads(stats.stdout)["sentences"] == SENTENCE_COUNT


def test_config_defaults_is_valid_toml(tmp_path):
    import tomllib

    result = runner.invoke(app, ["config", "--defaults"])
    assert result.exit_code == 0
    assert tomllib.loads(result.stdout)["tokenize"]["split_mode"] == "C"


def test_env_source_is_used(tmp_path, monkeypatch):
    from pipeline.cli._app import load_project_config

    monkeypatch.setenv("KNBC_SOURCE", "/somewhere/knbc.tar.bz2")
    state.project_dir = tmp_path  # restored by fresh_cli_state
    assert load_project_config()["corpus"]["source"] == "/somewhere/knbc.tar.bz2"
    assert load_project_config(source="/cli/wins.tar.bz2")["corpus"]["source"] == "/cli/wins.tar.bz2"
    assert load_project_config(['corpus.source="/set/wins.tar.bz2"'])["corpus"]["source"] == "/set/wins.tar.bz2"


def test_status_and_run_show_early_cutoff(tmp_path, monkeypatch):
    """Toy stages (tests/unit/test_early_cutoff.py): up reruns with the same out/main.txt, down stays fresh."""
    from tests.unit import test_early_cutoff as toy

    monkeypatch.setattr("pipeline.workflow.stages.build_stages", lambda config=None: toy.STAGES)
    (tmp_path / "in.txt").write_text("hello\n", encoding="utf-8")
    base = ["--dir", str(tmp_path)]
    assert runner.invoke(app, [*base, "run"]).exit_code == 0
    dry = runner.invoke(app, [*base, "run", "--dry-run", "--set", "tokenize.split_mode=A"])
    assert "would run down: upstream up is stale (skipped if its inputs come out unchanged)" in dry.stdout
    ran = runner.invoke(app, [*base, "run", "--set", "tokenize.split_mode=A"])
    assert ran.exit_code == 0, ran.output
    assert f"= down is fresh ({toy.NOTE})" in ran.stdout and "> side" in ran.stdout
    assert "> down" not in ran.stdout
    data = json.loads(runner.invoke(app, [*base, "status", "--json", "--set", "tokenize.split_mode=A"]).stdout)
    down = next(stage for stage in data["stages"] if stage["name"] == "down")
    assert down["state"] == "fresh" and down["reasons"] == [] and down["notes"] == [toy.NOTE]
    assert data["lock_format"] == 2
    table = runner.invoke(app, [*base, "status", "--set", "tokenize.split_mode=A"], env={"COLUMNS": "240"})
    assert toy.NOTE in table.stdout


def test_stage_summary_is_cut_between_metrics():
    """A long metrics line is cut after a whole metric and says so (the full set is in the lock)."""
    from rich.console import Console

    from pipeline.cli.core import _progress_printers

    out = Console(record=True, width=1000)
    metrics = {f"source_{i}_test_coverage": 0.123456 for i in range(12)}
    _progress_printers(out)["on_stage_end"]("evaluate_vectors", 1.0, metrics)
    line = out.export_text().strip()
    assert line.endswith(", ...") and len(line) < 220
    shown = line.split("  ", 1)[1].removesuffix(", ...").split(", ")
    assert shown and all(item.split("=")[0] in metrics and item.endswith("=0.123456") for item in shown)
    out = Console(record=True, width=1000)
    _progress_printers(out)["on_stage_end"]("corpus", 1.0, {"articles": 249})
    assert out.export_text().strip() == "done corpus in 1.0s  articles=249"
