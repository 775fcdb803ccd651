"""Shared fixtures: the tiny hand-made corpus, the real KNBC archive, a real tokenized project."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.tiny_knbc import tiny_overrides, write_tiny_archive

REPO = Path(__file__).resolve().parents[1]
REAL_ARCHIVE = Path(os.environ.get("KNBC_SOURCE", REPO.parent / "shared" / "data" / "KNBC_v1.0_090925_utf8.tar.bz2"))
SYNONYMS = REPO.parent / "shared" / "data" / "sudachi-synonyms" / "synonyms.txt.gz"


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory) -> Path:
    return write_tiny_archive(tmp_path_factory.mktemp("tiny_knbc"))


@pytest.fixture()
def tiny_project(tmp_path, tiny_archive) -> tuple[Path, list[str]]:
    """An empty project directory and the overrides that point it at the tiny corpus."""
    project = tmp_path / "project"
    project.mkdir()
    return project, [*tiny_overrides(), f"corpus.source={str(tiny_archive)!r}".replace("'", '"')]


@pytest.fixture(scope="session")
def knbc_archive() -> Path:
    if not REAL_ARCHIVE.exists():
        pytest.skip(f"real KNBC archive not found at {REAL_ARCHIVE}")
    return REAL_ARCHIVE


@pytest.fixture(scope="session")
def real_project(tmp_path_factory, knbc_archive) -> Path:
    """A project where corpus -> prepare -> tokenize ran on the real KNBC archive (once per session).

    Tests that run further stages must copy it first (shutil.copytree) so they do not interfere.
    """
    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner

    project = tmp_path_factory.mktemp("real_project")
    config = load_config(project, [f'corpus.source="{knbc_archive}"'])
    Runner(project, config).run("tokenize")
    return project
