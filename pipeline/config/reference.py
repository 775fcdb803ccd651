"""The configuration reference page, generated from the typed schema (never copied by hand).

One table per section of :data:`pipeline.config.schema.SECTIONS` (key, type, default, allowed values,
description, from each key's :func:`pipeline.config.schema.setting`), the ``[tasks.NAME]`` table of
:class:`pipeline.config.tasks.TaskSection`, and the profiles shipped in ``pipeline/config/profiles/``
with the first comment line of each file.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.config.loader import CONFIG_FILENAME, profile_names, profile_path, toml_value
from pipeline.config.schema import SECTIONS, Section, Setting
from pipeline.config.tasks import BUILTIN_TASKS, TaskSection

_TYPE_LABELS = {bool: "bool", int: "int", float: "float", str: "string", dict: "table", list: "list"}
_RST_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr):`~?([^`]+)`")
_CODE_SPAN = re.compile(r"(`[^`]*`)")
_ESCAPES = {"<": "&lt;", ">": "&gt;", "*": "\\*"}


def markdown_text(text: str, *, in_table: bool = False) -> str:
    """reST-flavoured docstring or help text as Markdown (``x`` and :func:`x` become `x`; ``<``, ``>``,
    ``*`` escaped outside code spans; in a table cell ``|`` escaped and the text on one line)."""
    text = _RST_ROLE.sub(r"`\1`", text).replace("``", "`")
    parts = _CODE_SPAN.split(text)
    for index in range(0, len(parts), 2):  # even parts are outside code spans
        part = "".join(_ESCAPES.get(char, char) for char in parts[index])
        parts[index] = part.replace("|", "\\|") if in_table else part
    result = "".join(parts)
    return " ".join(result.split()) if in_table else result


def type_label(spec: Setting) -> str:
    """``bool``, ``int``, ``float``, ``string``, ``list of string``, ``table``."""
    if spec.type is list:
        return f"list of {_TYPE_LABELS.get(spec.item_type, 'value')}" if spec.item_type else "list"
    return _TYPE_LABELS.get(spec.type, getattr(spec.type, "__name__", str(spec.type)))


def allowed_label(spec: Setting) -> str:
    """The choices (``"A"``, ``"B"``) or the range (``>= 1``, ``0.0 to 1.0``) of a key; empty when anything of its type goes."""
    if spec.choices is not None:
        return ", ".join(f"`{toml_value(choice)}`" for choice in spec.choices)
    if spec.min is not None and spec.max is not None:
        return f"{spec.min} to {spec.max}"
    if spec.min is not None:
        return f"&gt;= {spec.min}"
    if spec.max is not None:
        return f"&lt;= {spec.max}"
    return ""


def _default_label(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items())
        return f"`{{ {inner} }}`" if inner else "`{}`"
    return f"`{toml_value(value)}`".replace("|", "\\|")


def settings_table(settings: dict[str, Setting]) -> list[str]:
    """A Markdown table of ``key -> Setting``: key, type, default, allowed values, description."""
    lines = ["| Key | Type | Default | Allowed | Description |", "|---|---|---|---|---|"]
    for key, spec in settings.items():
        note = " (not in the stage fingerprint)" if not spec.fingerprint else ""
        description = markdown_text(spec.help, in_table=True) + note
        lines.append(f"| `{key}` | {type_label(spec)} | {_default_label(spec.default)} | {allowed_label(spec)} | {description} |")
    return lines


def section_doc(cls: type[Section]) -> str:
    """The section class's own docstring as Markdown (empty when it has none: not dataclass's generated signature)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    lines = doc.strip().splitlines()
    body = " ".join(line.strip() for line in lines)
    return markdown_text(body)


def profile_summary(name: str) -> str:
    """The first comment paragraph of profile ``name``'s TOML file, on one line, without its ``Profile "name":`` prefix."""
    paragraph: list[str] = []
    for line in profile_path(name).read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip() if line.startswith("#") else None
        if text:
            paragraph.append(text)
        elif paragraph:
            break
    return re.sub(rf'^Profile "{re.escape(name)}":\s*', "", " ".join(paragraph))


def _intro() -> list[str]:
    profiles = [f"- `{name}`: {markdown_text(profile_summary(name))}" for name in profile_names()]
    return [
        "# Configuration reference",
        "",
        f"Generated from the typed schema (`pipeline/config/schema.py`) at build time. The config is one TOML file, "
        f"`{CONFIG_FILENAME}` in the project directory, with a `[section]` per stage; `jpipe config --defaults` prints "
        "every key with its default. Layers, later ones winning: the defaults below, then the profiles, then "
        f"`{CONFIG_FILENAME}`, then `--set`. Every value is checked before anything runs (errors E101 to E108).",
        "",
        "Keys marked *not in the stage fingerprint* change how a stage runs (threads, device, limits), not what it "
        "produces: changing them does not make the stage stale.",
        "",
        "## Profiles and overrides {#profiles}",
        "",
        "A profile is a TOML file shipped with jpipe that sets several keys at once. Choose it with "
        '`jpipe --profile NAME ...` (repeatable, or `NAME,NAME`) or `profile = "NAME"` (or a list) at the top of '
        f"`{CONFIG_FILENAME}`; several apply in order, and their lists (`tokenize.extra_corpora`) are joined. The profiles:",
        "",
        *profiles,
        "",
        "`--set section.key=value` (repeatable, on the commands that read the config: see the [CLI reference](cli.md)) "
        "overrides one key for one command; the value is read as TOML, else as a plain string: `--set tokenize.split_mode=A`, "
        "`--set classifier.seeds=1`, `--set 'tokenize.extra_corpora=[\"corpus.txt.gz\"]'`, `--set tasks.topic.classifier.epochs=5`.",
        "",
    ]


def _tasks_section() -> list[str]:
    builtin = ", ".join(f"`{name}`" for name in BUILTIN_TASKS)
    return [
        "## [tasks.NAME] {#tasks}",
        "",
        section_doc(TaskSection),
        "",
        f"The built-in KNBC tasks ({builtin}) are entries of the same registry; `jpipe task add` writes a new one. "
        "`[tasks.NAME.classifier]` takes any key of [`[classifier]`](#classifier).",
        "",
        *settings_table(TaskSection.settings()),
        "",
    ]


def config_reference_markdown() -> str:
    """The configuration reference page: profiles, ``--set``, then a table per section and ``[tasks.NAME]``."""
    lines = _intro()
    for name, cls in SECTIONS.items():
        lines += [f"## [{name}] {{#{name}}}", ""]
        doc = section_doc(cls)
        if doc:
            lines += [doc, ""]
        lines += [*settings_table(cls.settings()), ""]
    lines += _tasks_section()
    return "\n".join(lines)
