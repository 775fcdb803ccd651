"""The Typer application objects and helpers shared by every command module.

Command modules (``core``, ``vectors``, ``classify``, ``generate``) register
their commands on these apps. Nothing here imports torch, spaCy or gensim:
each command imports what it needs inside its body.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.errors import PipelineError

app = typer.Typer(
    name="jpipe",
    help="A staged Japanese NLP pipeline on the KNB blog corpus: GiNZA tokens, word vectors, "
    "BiLSTM+attention classifiers and LSTM text generators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(help="Benchmarks that print speed figures (add --json for machine-readable output).", no_args_is_help=True)
vectors_app = typer.Typer(help="Manage word-vector sources (import external vectors).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(vectors_app, name="vectors")

SetOption = Annotated[
    Optional[list[str]],
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override a config value, e.g. --set tokenize.split_mode=A (repeatable)."),
]


class State:
    """Options of the top-level callback, shared with every command."""

    project_dir: Path = Path.cwd()
    verbose: bool = False


state = State()


@app.callback()
def _main(
    project_dir: Annotated[
        Optional[Path],
        typer.Option("--dir", "-d", envvar="JPIPE_HOME", help="Project directory (holds jpipe.toml, data/, models/). Default: the current directory."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    state.project_dir = (project_dir or Path.cwd()).resolve()
    state.verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s" if verbose else "%(message)s",
        datefmt="%H:%M:%S",
    )


def load_project_config(overrides: list[str] | None = None, *, source: str | None = None):
    """The validated config of the project directory, with --set and corpus source overrides.

    The corpus source is taken from --source, else --set corpus.source=..., else
    $KNBC_SOURCE, else jpipe.toml, else the official URL.
    """
    from pipeline.config import load_config

    config = load_config(state.project_dir, overrides)
    if source:
        config.sections["corpus"]["source"] = source
    elif "corpus.source" not in config.overrides and os.environ.get("KNBC_SOURCE"):
        config.sections["corpus"]["source"] = os.environ["KNBC_SOURCE"]
    return config


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    err = console(stderr=True)
    err.print(f"[bold red]Error:[/bold red] {message}", markup=True, highlight=False)
    if hint:
        err.print(hint, markup=False)
    raise typer.Exit(code)


def handle(exc: PipelineError) -> None:
    fail(exc.message if exc.code == "E000" else f"{exc.code}: {exc.message}", exc.hint)
