"""The documentation's generated reference pages (CLI, config, errors), the MkDocs hook that adds them, and
``jpipe --version``."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.cli.reference import cli_reference_markdown, errors_reference_markdown, reference_pages
from pipeline.config import SECTIONS, TaskSection
from pipeline.config.loader import profile_names
from pipeline.config.reference import config_reference_markdown, markdown_text, profile_summary
from pipeline.errors import CODES, code_table

REPO = Path(__file__).resolve().parents[2]


def command_paths(command, path=("jpipe",)):
    """Every command path of the Click tree, found here independently of the generator's own walk."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:  # a hidden alias (bench similar) is left out of --help and of the page
            yield from command_paths(sub, (*path, name))


def section(page: str, anchor: str) -> str:
    """The text of the page's section whose heading carries ``{#anchor}``, up to the next heading of any level <= 3."""
    match = re.search(rf"^#+ .*\{{#{re.escape(anchor)}\}}\n(.*?)(?=^#{{1,3}} |\Z)", page, flags=re.M | re.S)
    assert match, f"no section #{anchor}"
    return match.group(1)


def test_cli_reference_has_a_section_for_every_command():
    page = cli_reference_markdown()
    paths = list(command_paths(typer.main.get_command(app)))
    assert len(paths) > 20 and ("jpipe", "bench", "train") in paths and ("jpipe", "task", "add") in paths
    for path in paths:
        assert re.search(rf"^#+ {' '.join(path)} \{{#{'-'.join(path)}\}}$", page, flags=re.M), path
        assert f"```text\n{' '.join(path)} " in page or f"```text\n{' '.join(path)}\n" in page, f"usage of {path}"


def test_cli_reference_lists_options_with_type_default_and_help():
    classify = section(cli_reference_markdown(), "jpipe-classify")
    assert re.search(r"^\| `-o`, `--output` \| path \|  \| Output file", classify, flags=re.M), classify[:2000]
    assert re.search(r"^\| `--batch-size` \| int range \| `256` \| .*Range: &gt;= 1\.", classify, flags=re.M)
    assert "| `--progress` / `--no-progress` | flag | `--progress` |" in classify
    root = section(cli_reference_markdown(), "jpipe")
    assert "`--version`" in root and "`JPIPE_HOME`" in root
    assert "[`jpipe bench`](#jpipe-bench)" in root


def test_config_reference_has_every_section_and_key():
    page = config_reference_markdown()
    for name, cls in SECTIONS.items():
        table = section(page, name)
        for key, spec in cls.settings().items():
            assert re.search(rf"^\| `{key}` \|", table, flags=re.M), f"{name}.{key}"
            if spec.choices:
                assert all(f"`{choice}`" in table or f'`"{choice}"`' in table for choice in spec.choices), f"{name}.{key}"
    tasks = section(page, "tasks")
    assert all(re.search(rf"^\| `{key}` \|", tasks, flags=re.M) for key in TaskSection.settings())
    assert '| `split_mode` | string | `"C"` | `"A"`, `"B"`, `"C"` |' in section(page, "tokenize")
    assert "| `train_ratio` | float | `0.8` | 0.0 to 1.0 |" in section(page, "prepare")


def test_config_reference_lists_the_profiles_and_set():
    profiles = section(config_reference_markdown(), "profiles")
    assert profile_names() and all(f"- `{name}`: {profile_summary(name)}" in profiles for name in profile_names())
    assert profile_summary("quick").startswith("every stage of the pipeline")
    assert "--set section.key=value" in profiles


def test_errors_reference_has_every_code():
    page = errors_reference_markdown()
    assert code_table() in page
    for code, summary in CODES.items():
        assert re.search(rf"^\| {code} \| \w+ \| {re.escape(summary)} \|$", page, flags=re.M), code


def test_markdown_text_escapes_outside_code_spans_only():
    assert markdown_text("a <b> *c* `x<y*` :func:`f`") == "a &lt;b&gt; \\*c\\* `x<y*` `f`"
    assert markdown_text("a|b\n`c|d`", in_table=True) == "a\\|b `c|d`"


def test_mkdocs_hook_adds_the_generated_pages(tmp_path):
    pytest.importorskip("mkdocs")
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

    (tmp_path / "docs").mkdir()
    config = MkDocsConfig()
    hook = str(REPO / "docs" / "hooks" / "reference.py")
    config.load_dict({"site_name": "t", "docs_dir": str(tmp_path / "docs"), "site_dir": str(tmp_path / "site"), "hooks": [hook]})
    errors, _warnings = config.validate()
    assert not errors, errors
    files = config.plugins.on_files(Files([]), config=config)  # as `mkdocs build` runs the hook
    pages = reference_pages()
    assert sorted(f.src_uri for f in files) == sorted(pages)
    assert files.get_file_from_path("reference/errors.md").content_string == pages["reference/errors.md"]


def test_version_option_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"jpipe {version('jpipe')}\n"
    assert pipeline.__version__ == version("jpipe"), "pipeline.__version__ and pyproject's version differ"


def test_version_and_reference_do_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipeline.cli import app\n"
        "from pipeline.cli.reference import reference_pages\n"
        "assert CliRunner().invoke(app, ['--version']).exit_code == 0\n"
        "reference_pages()\n"
        "print(','.join(m for m in ('torch', 'spacy', 'gensim', 'sklearn') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == ""
