"""A stage declaration (``Stage``) and what its function receives when it runs (``StageContext``).

Kept apart from the runner so that the stage table (``pipeline.workflow.stages``)
and the runner both import this module and never each other.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import WorkflowError


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: a plain function with declared inputs, outputs and config section.

    ``inputs`` may be a callable of the config, for stages whose inputs depend on a
    setting (for example which vector source initialises a classifier).
    ``func`` is ``"module:function"`` and is imported only when the stage runs,
    so listing stages never imports torch or spaCy.
    """

    name: str
    func: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...] | Callable[[Config], list[str]] = ()
    section: str | None = None
    version: int = 1
    help: str = ""
    # Inputs that may be absent (hashed when present): their appearing or changing makes the stage stale.
    optional_inputs: tuple[str, ...] = ()
    # Installed packages whose version is part of the fingerprint (a new dictionary or model changes the output).
    packages: tuple[str, ...] = ()
    # The classification task a generated per-task stage works on (``prepare_/train_/evaluate_<task>``).
    task: str | None = None
    # The fingerprinted config of the stage when it is not simply ``section``'s keys (named as in reasons).
    config_view: Callable[[Config], dict[str, Any]] | None = None

    def fingerprint_config(self, config: Config) -> dict[str, Any]:
        if self.config_view is not None:
            return self.config_view(config)
        return config.fingerprint_view(self.section) if self.section else {}

    def input_paths(self, config: Config) -> list[str]:
        return list(self.inputs(config) if callable(self.inputs) else self.inputs)

    def package_versions(self) -> dict[str, str | None]:
        from importlib.metadata import PackageNotFoundError, version

        versions: dict[str, str | None] = {}
        for package in self.packages:
            try:
                versions[package] = version(package)
            except PackageNotFoundError:
                versions[package] = None
        return versions

    def load(self) -> Callable[[StageContext], dict | None]:
        module_name, func_name = self.func.split(":")
        return getattr(importlib.import_module(module_name), func_name)


@dataclass
class StageContext:
    """What a stage function gets: its config section, input paths and staged output paths."""

    stage: Stage
    project_dir: Path
    config: Config
    staging_dir: Path
    work_dir: Path
    resume: bool = False

    @property
    def section(self) -> dict[str, Any]:
        return self.config[self.stage.section] if self.stage.section else {}

    def path(self, relative: str) -> Path:
        """A project path (an input, or a path outside the declared outputs)."""
        path = Path(relative)
        return path if path.is_absolute() else self.project_dir / path

    def input(self, relative: str) -> Path:
        path = self.path(relative)
        if not path.exists():
            raise WorkflowError("E404", f"Stage {self.stage.name}: input {relative} is missing.", hint="Run `jpipe run` to build it.")
        return path

    def output(self, relative: str) -> Path:
        """Where to write declared output ``relative``; moved into place when the stage succeeds."""
        if relative not in self.stage.outputs:
            raise WorkflowError(
                "E407", f"Stage {self.stage.name} writes {relative}, which is not one of its declared outputs {self.stage.outputs}."
            )
        path = self.staging_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
