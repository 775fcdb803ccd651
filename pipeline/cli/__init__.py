"""``jpipe``: the command-line interface (a thin Typer layer over plain functions)."""

from __future__ import annotations

import sys

# Importing a command module registers its commands on ``app``.
from pipeline.cli import core  # noqa: E402,F401
from pipeline.cli._app import app, console, print_error
from pipeline.errors import PipelineError

for _optional in ("vectors", "classify", "generate", "tasks", "export", "serve", "extract", "tune", "analyze", "metrics"):
    try:
        __import__(f"pipeline.cli.{_optional}")
    except ModuleNotFoundError as exc:  # module not written yet in a partial checkout
        if exc.name != f"pipeline.cli.{_optional}":
            raise


def main() -> None:
    try:
        app()
    except PipelineError as exc:
        print_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        console(stderr=True).print("Interrupted: outputs and jpipe.lock are as they were before the stage started.")
        sys.exit(130)
