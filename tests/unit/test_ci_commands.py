"""The README's install, main-job and test commands are what CI (``.ci/run``) executes, word for word, and an
empty ``KNBC_SOURCE`` (as ``make`` exports an unset variable) means "unset" in the library, the tests and make."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.data.knbc.fetch import source_from_env

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"


def readme_commands(heading: str, text: str | None = None) -> list[str]:
    """The commands of the first ```bash block under the README heading that starts with ``heading``.

    A trailing ``# comment`` is dropped; comment-only and blank lines are skipped.
    """
    text = README.read_text(encoding="utf-8") if text is None else text
    section = re.search(rf"^## {re.escape(heading)}.*?$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert section, f"README has no '## {heading}' section"
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), flags=re.M | re.S)
    assert block, f"README's '## {heading}' section has no ```bash block"
    lines = (re.sub(r"\s+#.*$", "", line).strip() for line in block.group(1).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ci_lines() -> set[str]:
    return {line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()}


def test_readme_commands_parse_from_a_fixture():
    text = "# t\n## Install\n\n```bash\nmake install   # note\n# only a comment\n\n. .venv/bin/activate\n```\n## Next\n```bash\nx\n```\n"
    assert readme_commands("Install", text) == ["make install", ". .venv/bin/activate"]
    with pytest.raises(AssertionError, match="no '## Missing'"):
        readme_commands("Missing", text)


@pytest.mark.parametrize("heading", ["Install", "Run the tests"])
def test_ci_runs_the_readme_commands_word_for_word(heading):
    commands = readme_commands(heading)
    assert commands, heading
    missing = [command for command in commands if command not in ci_lines()]
    assert not missing, f".ci/run does not run the README's '{heading}' commands {missing}"


def test_ci_runs_the_main_job_as_the_readme_shows_it_offline():
    commands = readme_commands("Run the whole pipeline")
    assert commands == ["make run"]
    # the README's offline form (no network here): the same target with the corpus from ../shared
    offline = [line for line in README.read_text(encoding="utf-8").splitlines() if line.endswith(" make run") and "KNBC_SOURCE=" in line]
    assert offline and offline[0] in ci_lines(), "the README's offline `make run` line is not in .ci/run"


def test_ci_leaves_knbc_source_unset_for_the_test_command():
    text = CI_RUN.read_text(encoding="utf-8")
    assert "unset KNBC_SOURCE" in text
    before_test = text.split("\nmake test\n", 1)[0]
    assert not re.search(r"^\s*(export\s+)?KNBC_SOURCE=", before_test, flags=re.M), "KNBC_SOURCE is set before `make test`"


@pytest.mark.parametrize("value", [None, "", "   "])
def test_empty_or_unset_source_is_no_source(value):
    environ = {} if value is None else {"KNBC_SOURCE": value}
    assert source_from_env(environ) is None


def test_a_set_source_is_kept():
    assert source_from_env({"KNBC_SOURCE": " /data/knbc.tar.bz2 "}) == "/data/knbc.tar.bz2"


@pytest.mark.parametrize("environ", [{}, {"KNBC_SOURCE": ""}, {"KNBC_SOURCE": " "}])
def test_the_tests_fall_back_to_shared_when_the_variable_is_unset_or_empty(environ):
    """What the integration tests read with no KNBC_SOURCE, or an empty one: the ../shared archive, never '.'."""
    from tests.conftest import SHARED_ARCHIVE, real_archive_path

    assert real_archive_path(environ) == SHARED_ARCHIVE
    assert real_archive_path({"KNBC_SOURCE": "/x/KNBC"}) == Path("/x/KNBC")


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("value", [None, ""])
def test_make_passes_no_empty_source(value):
    """The Makefile exports no empty KNBC_SOURCE: an unset variable stays unset in the recipes' environment."""
    env = {"PATH": "/usr/bin:/bin"}
    if value is not None:
        env["KNBC_SOURCE"] = value
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    probe = makefile + "\nprobe-knbc-source:\n\t@python3 -c 'import os; print(repr(os.environ.get(\"KNBC_SOURCE\")))'\n"
    done = subprocess.run(["make", "-s", "-f", "-", "probe-knbc-source"], input=probe, capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(value)
