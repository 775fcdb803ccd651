"""The effective config: defaults, ``jpipe.toml``, overrides, validated before anything runs.

The config is built in three layers, later ones winning:

1. the defaults of the section dataclasses (:mod:`pipeline.config.schema`),
2. ``jpipe.toml`` in the project directory (optional),
3. overrides ``section.key=value`` (the command line's ``--set``).

An unknown section (E101) or key (E102), a value of the wrong type (E103), not
among the choices (E104) or out of range (E105), a malformed override (E106), a
broken file (E107) and values that contradict each other (E108) raise a
``ConfigError`` that names the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.schema import SCHEMA, SECTIONS, Section
from pipeline.errors import ConfigError

CONFIG_FILENAME = "jpipe.toml"


@dataclass(frozen=True)
class Config:
    """The effective, validated configuration: ``config["tokenize"]["split_mode"]`` or ``config["tokenize"].split_mode``."""

    sections: dict[str, Section]
    path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, section: str) -> Section:
        return self.sections[section]

    def fingerprint_view(self, section: str) -> dict[str, Any]:
        """The keys of ``section`` that decide what the stage produces."""
        schema = SCHEMA[section]
        return {key: value for key, value in self.sections[section].to_dict().items() if schema[key].fingerprint}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section.to_dict() for name, section in self.sections.items()}

    def with_values(self, values: dict[str, Any]) -> Config:
        """A new config with ``{"section.key": value}`` applied (validated; recorded as overrides). Sections are never mutated."""
        changes: dict[str, dict[str, Any]] = {}
        for dotted, value in values.items():
            section, key = dotted.split(".", 1)
            changes.setdefault(section, {})[key] = validate_value(section, key, value)
        sections = {
            name: dataclasses.replace(current, **changes[name]) if name in changes else current for name, current in self.sections.items()
        }
        return dataclasses.replace(self, sections=sections, overrides={**self.overrides, **values})


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _check_section(section: str, *, where: str = "") -> None:
    if section not in SCHEMA:
        message = f"{where}unknown section [{section}]." if where else f"Unknown config section '{section}'."
        raise ConfigError("E101", message + _suggest(section, list(SCHEMA)), hint=f"Valid sections: {', '.join(SCHEMA)}.")


def validate_value(section: str, key: str, value: Any) -> Any:
    """Check one value against the schema and return it (ints widened to floats)."""
    _check_section(section)
    if key not in SCHEMA[section]:
        valid = list(SCHEMA[section])
        raise ConfigError(
            "E102", f"Unknown config key '{section}.{key}'.{_suggest(key, valid)}", hint=f"Valid keys in [{section}]: {', '.join(valid)}."
        )
    return SCHEMA[section][key].check(f"{section}.{key}", value)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as TOML, falling back to a plain string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError("E106", f"Malformed override '{text}'.", hint="Write section.key=value, for example tokenize.split_mode=A.")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words such as A or word2vec are plain strings
    return section, key, value


def _read_file(path: Path) -> dict[str, dict[str, Any]]:
    """``{section: {key: value}}`` from ``jpipe.toml``, every value validated."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("E107", f"{path} is not valid TOML: {exc}.") from None
    values: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        _check_section(section, where=f"{path}: ")
        if not isinstance(table, dict):
            raise ConfigError("E107", f"{path}: '{section}' must be a [section] table.")
        values[section] = {key: validate_value(section, key, value) for key, value in table.items()}
    return values


def load_config(project_dir: str | os.PathLike, overrides: list[str] | None = None) -> Config:
    """Defaults, then ``jpipe.toml`` in ``project_dir`` (if any), then ``overrides`` (``section.key=value`` strings)."""
    path = Path(project_dir) / CONFIG_FILENAME
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path.exists():
        for section, table in _read_file(path).items():
            values[section].update(table)
    applied: dict[str, Any] = {}
    for text in overrides or []:
        section, key, value = parse_override(text)
        values[section][key] = validate_value(section, key, value)
        applied[f"{section}.{key}"] = value
    # Building each section checks the rules between its keys (E108).
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    return Config(sections=sections, path=path if path.exists() else None, overrides=applied)


def default_toml() -> str:
    """The default config as commented TOML, for ``jpipe config --defaults``."""
    lines: list[str] = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, spec in keys.items():
            lines.append(f"# {spec.help}")
            lines.append(f"{key} = {toml_value(spec.default)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
