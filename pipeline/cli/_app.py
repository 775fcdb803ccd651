"""The Typer application objects and helpers shared by every command module.

Command modules (``core``, ``vectors``, ``classify``, ``generate``) register
their commands on these apps. Nothing here imports torch, spaCy or gensim:
each command imports what it needs inside its body.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

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
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override a config value, e.g. --set tokenize.split_mode=A (repeatable)."),
]


class State:
    """Options of the top-level callback, shared with every command."""

    project_dir: Path = Path.cwd()
    verbose: bool = False
    profile: list[str] | None = None


state = State()


def installed_version() -> str:
    """jpipe's version from the installed package's metadata (``pipeline.__version__`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jpipe")
    except PackageNotFoundError:
        from pipeline import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"jpipe {installed_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    project_dir: Annotated[
        Path | None,
        typer.Option(
            "--dir", "-d", envvar="JPIPE_HOME", help="Project directory (holds jpipe.toml, data/, models/). Default: the current directory."
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            envvar="JPIPE_PROFILE",
            help="Config profile under jpipe.toml: modern (KNBC + modern Japanese), aozora (+ Aozora literature), quick. "
            'Repeat it (or NAME,NAME) to combine: --profile modern --profile aozora. Or: profile = ["modern"] in jpipe.toml.',
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, expose_value=False, help="Print jpipe's version and exit."),
    ] = False,
) -> None:
    state.project_dir = (project_dir or Path.cwd()).resolve()
    state.verbose = verbose
    state.profile = profile
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s" if verbose else "%(message)s",
        datefmt="%H:%M:%S",
    )


def load_project_config(overrides: list[str] | None = None, *, source: str | None = None):
    """The validated config of the project directory, with --set and corpus source overrides.

    The corpus source is taken from --source, else --set corpus.source=..., else
    $KNBC_SOURCE, else jpipe.toml, else the official URL. Sections are frozen: the
    source is applied as one more (validated) override, giving a new config.
    """
    from pipeline.config import load_config
    from pipeline.data.knbc.fetch import source_from_env

    config = load_config(state.project_dir, overrides, profile=state.profile)
    if not source and "corpus.source" not in config.overrides:
        source = source_from_env()
    return config.with_values({"corpus.source": source}) if source else config


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


# Command-line advice added under a library error's hint (library hints name config keys, never flags).
CLI_TIPS = {
    "E201": "On the command line: jpipe run --source /path/to/KNBC_v1.0_090925_utf8.tar.bz2",
    "E202": "On the command line: jpipe run --source /path/to/KNBC_v1.0_090925_utf8.tar.bz2",
    "E203": "On the command line: jpipe run --source /path/to/KNBC_v1.0_090925_utf8.tar.bz2",
    "E204": "On the command line: jpipe run --source /path/to/KNBC_v1.0_090925_utf8.tar.bz2",
    "E205": "On the command line: --input FILE always reads a file (- for stdin); --text TEXT is always the text itself.",
    "E254": "On the command line: jpipe task add NAME ... --allow-rare",
    "E431": "On the command line: jpipe tune TASK --fresh deletes it and starts the task's study again.",
}


def print_error(exc: PipelineError) -> None:
    """``Error E102: message``, the hint, and any command-line tip, on stderr (no traceback)."""
    err = console(stderr=True)
    err.print(f"[bold red]Error {exc.code}:[/bold red] {exc.message}", markup=True, highlight=False)
    for line in (exc.hint, CLI_TIPS.get(exc.code)):
        if line:
            err.print(line, markup=False, highlight=False)


def fail(message: str, hint: str | None = None, code: int = 1) -> None:
    """A command-line usage error (not a library error): ``Error: message`` and the hint, then exit ``code``."""
    err = console(stderr=True)
    err.print(f"[bold red]Error:[/bold red] {message}", markup=True, highlight=False)
    if hint:
        err.print(hint, markup=False)
    raise typer.Exit(code)


def handle(exc: PipelineError) -> None:
    """Print a library error as the CLI does and exit 1."""
    print_error(exc)
    raise typer.Exit(1)


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """``with reported(): ...``: a library error inside becomes a printed error and exit status 1."""
    try:
        yield
    except PipelineError as exc:
        handle(exc)
