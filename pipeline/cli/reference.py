"""Reference pages of the documentation site, generated from the code (never copied by hand).

``cli_reference_markdown()`` walks the Click command tree that Typer builds from ``app`` (every
command module registered, as ``jpipe`` itself does) and writes one section per command: its usage
line, help text, arguments and options. ``errors_reference_markdown()`` is :func:`pipeline.errors.code_table`
with the four error kinds. ``reference_pages()`` is what the MkDocs hook (``docs/hooks/reference.py``) adds to
the site. Nothing here imports torch, spaCy or gensim: the command modules import them inside their bodies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from pipeline.cli import app
from pipeline.config.reference import config_reference_markdown, markdown_text
from pipeline.errors import CODES, ConfigError, InputError, ModelError, WorkflowError, code_table


def root_command() -> Any:
    """The Click command tree of ``jpipe``: a group whose commands are commands or groups (``bench``, ``task``, ...)."""
    return typer.main.get_command(app)


def walk_commands(
    command: Any = None, *, path: tuple[str, ...] = ("jpipe",), parent: Any = None
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """``(path, command, context)`` for the root and every command and sub-command, depth first, in registration order."""
    command = command if command is not None else root_command()
    context = command.context_class(command, info_name=path[-1], parent=parent, resilient_parsing=True)
    yield path, command, context
    for name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            yield from walk_commands(sub, path=(*path, name), parent=context)


def anchor(path: tuple[str, ...]) -> str:
    """The stable anchor of a command's section: ``jpipe-classify``, ``jpipe-bench-train``."""
    return "-".join(path)


def _option_names(param: Any) -> str:
    names = ", ".join(f"`{name}`" for name in sorted(param.opts, key=len))
    secondary = ", ".join(f"`{name}`" for name in param.secondary_opts)
    return f"{names} / {secondary}" if secondary else names


def _type_label(param: Any, context: Any) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return "flag"
    label = getattr(param, "metavar", None) if param.param_type_name == "option" else None
    if label is None and hasattr(param, "display_type"):
        label = param.display_type(context)  # Typer: <int range>, <path>, a|b for choices
    elif label is None:
        label = param.type.name  # plain Click
    label = str(label or "").strip("<>")
    label = f"{label}, repeatable" if getattr(param, "multiple", False) else label
    return markdown_text(label, in_table=True)


def _default_label(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default
    if getattr(param, "is_flag", False) and param.secondary_opts:
        return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
    if getattr(param, "is_flag", False):
        return "on" if default else "off"
    if default is None or callable(default) or default == [] or default == ():
        return ""
    if isinstance(default, str):
        return f'`"{default}"`' if default == "" else f"`{default}`"
    return f"`{default}`"


def _description(param: Any) -> str:
    parts = [param.help or ""]
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None or high is not None:
        bounds = [f">= {low}" if low is not None else "", f"<= {high}" if high is not None else ""]
        parts.append(f"Range: {' and '.join(b for b in bounds if b)}.")
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None and getattr(descriptor, "is_choice", False):
        parts.append("One of: " + ", ".join(f"`{choice}`" for choice in descriptor.choices or ()) + ".")
    if param.envvar:
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        parts.append("Environment: " + ", ".join(f"`{name}`" for name in envvars) + ".")
    return markdown_text(" ".join(part for part in parts if part), in_table=True)


def _params_table(command: Any, context: Any, *, kind: str) -> list[str]:
    params = [p for p in command.params if p.param_type_name == kind and not getattr(p, "hidden", False)]
    if not params:
        return []
    if kind == "argument":
        header = ["| Argument | Type | Default | Description |", "|---|---|---|---|"]
        rows = [
            f"| `{(p.metavar or p.name).upper()}` | {_type_label(p, context)} | {_default_label(p)} | {_description(p)} |" for p in params
        ]
    else:
        header = ["| Option | Type | Default | Description |", "|---|---|---|---|"]
        rows = [f"| {_option_names(p)} | {_type_label(p, context)} | {_default_label(p)} | {_description(p)} |" for p in params]
    title = "**Arguments**" if kind == "argument" else "**Options**"
    return [title, "", *header, *rows, ""]


def _subcommands_table(path: tuple[str, ...], command: Any) -> list[str]:
    subs = {name: sub for name, sub in getattr(command, "commands", {}).items() if not getattr(sub, "hidden", False)}
    if not subs:
        return []
    rows = [
        f"| [`{' '.join((*path, name))}`](#{anchor((*path, name))}) | {markdown_text(sub.get_short_help_str(limit=120), in_table=True)} |"
        for name, sub in subs.items()
    ]
    return ["**Commands**", "", "| Command | Summary |", "|---|---|", *rows, ""]


def command_section(path: tuple[str, ...], command: Any, context: Any) -> str:
    """One command's section: heading with a stable anchor, usage, help text, arguments, options, sub-commands."""
    heading = "##" if len(path) <= 2 else "###"
    usage = command.get_usage(context).removeprefix("Usage:").strip()
    lines = [f"{heading} {' '.join(path)} {{#{anchor(path)}}}", "", "```text", usage, "```", ""]
    if command.help:
        lines += [markdown_text(command.help.strip()), ""]
    lines += _params_table(command, context, kind="argument")
    lines += _params_table(command, context, kind="option")
    lines += _subcommands_table(path, command)
    return "\n".join(lines)


def cli_reference_markdown() -> str:
    """The CLI reference page: every command and sub-command of ``jpipe``, generated from the Typer app."""
    root = root_command()
    options = ", ".join(f"`{max(p.opts, key=len)}`" for p in root.params if p.param_type_name == "option" and "completion" not in p.name)
    intro = [
        "# Command-line reference",
        "",
        "Generated from the code at build time (`jpipe --help` and `jpipe COMMAND --help` print the same text).",
        f"Options of `jpipe` itself ({options}) go before the command: `jpipe --profile quick run`.",
        "",
    ]
    sections = [command_section(path, command, context) for path, command, context in walk_commands(root)]
    return "\n".join(intro) + "\n" + "\n".join(sections)


def errors_reference_markdown() -> str:
    """The error-code page: the four kinds (from the error classes) and every code of ``CODES`` (:func:`code_table`)."""
    kinds = [
        f"- `{cls.__name__}` (kind `{cls.kind}`): {markdown_text(cls.__doc__ or '')}"
        for cls in (ConfigError, InputError, ModelError, WorkflowError)
    ]
    return "\n".join(
        [
            "# Error codes",
            "",
            "Every error the library, the CLI and the HTTP API report has a stable code, a message that says what went",
            "wrong and a hint that says what to do. The CLI prints `Error E102: ...` and the hint, without a traceback;",
            'the HTTP API returns `{"code", "kind", "message", "hint"}`. Generated from `pipeline.errors.CODES`',
            f"({len(CODES)} codes).",
            "",
            *kinds,
            "",
            code_table(),
            "",
        ]
    )


def reference_pages() -> dict[str, str]:
    """Site path -> Markdown of every generated reference page (for the MkDocs hook)."""
    return {
        "reference/cli.md": cli_reference_markdown(),
        "reference/config.md": config_reference_markdown(),
        "reference/errors.md": errors_reference_markdown(),
    }
