"""The effective config: defaults, ``jpipe.toml``, overrides, validated before anything runs.

The config is built in layers, later ones winning:

1. the defaults of the section dataclasses (:mod:`pipeline.config.schema`),
2. profiles (optional): TOML files shipped in ``pipeline/config/profiles/`` (``modern``, ``aozora``, ``quick``),
   chosen by ``jpipe --profile NAME`` (repeatable, or ``NAME,NAME``) or by a top-level ``profile = "NAME"`` /
   ``profile = ["NAME", ...]`` in ``jpipe.toml``. Several profiles apply in order; where they set the same list
   (``tokenize.extra_corpora``) the lists are joined, so ``modern`` + ``aozora`` pretrain on both corpora,
3. ``jpipe.toml`` in the project directory (optional),
4. overrides ``section.key=value`` (the command line's ``--set``).

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

from pipeline.config.schema import SCHEMA, SECTIONS, ClassifierSection, Section
from pipeline.config.tasks import BUILTIN_TASKS, TaskSection, data_view, effective_classifier, make_task, validate_task_value
from pipeline.errors import ConfigError

CONFIG_FILENAME = "jpipe.toml"
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
PROFILE_KEY = "profile"
TASKS_SECTION = "tasks"
# Sections of earlier versions, and where their keys live now.
MOVED_SECTIONS = {"train_topic": "tasks.topic.classifier", "train_sentiment": "tasks.sentiment.classifier"}
MOVED_KEYS = {"evaluate_extractor.seeds": "train_extractor.seeds"}  # the seeds are trained (and kept) by the training stage


@dataclass(frozen=True)
class Config:
    """The effective, validated configuration: ``config["tokenize"]["split_mode"]`` or ``config["tokenize"].split_mode``."""

    sections: dict[str, Section]
    path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    # name -> [tasks.NAME], the built-in KNBC tasks first, then the file's in their order.
    tasks: dict[str, TaskSection] = field(default_factory=dict)
    # The profiles applied under jpipe.toml, in order (``("modern", "aozora")``); empty for none.
    profiles: tuple[str, ...] = ()

    @property
    def profile(self) -> str | None:
        """The profiles as one name (``modern+aozora``), or None."""
        return "+".join(self.profiles) or None

    def __getitem__(self, section: str) -> Section:
        """A section by name; ``tasks.NAME`` is a task, ``tasks.NAME.classifier`` its effective classifier settings."""
        if section.startswith(f"{TASKS_SECTION}."):
            name, _, part = section.split(".", 1)[1].partition(".")
            return self.classifier_for(name) if part == "classifier" else self.task(name)
        return self.sections[section]

    @property
    def task_names(self) -> list[str]:
        """The enabled tasks, in order (each gets its stages)."""
        return [name for name, task in self.tasks.items() if task.enabled]

    def task(self, name: str) -> TaskSection:
        if name not in self.tasks:
            raise ConfigError(
                "E132", f"Unknown task '{name}'.", hint=f"Valid tasks: {', '.join(self.tasks)}. Add one with `jpipe task add`."
            )
        return self.tasks[name]

    def classifier_for(self, name: str) -> ClassifierSection:
        """The settings task ``name``'s classifier trains with ([classifier] + the task's overrides)."""
        return effective_classifier(self.sections["classifier"], self.task(name))

    def fingerprint_view(self, section: str) -> dict[str, Any]:
        """The keys of ``section`` that decide what the stage produces.

        ``tasks.NAME.classifier`` (a task's training): its effective classifier keys, named as in
        ``[classifier]`` (so a project trained before tasks were data keeps its fingerprint), plus,
        for a task on the corpus tokens, the data keys that differ from the built-in task's
        (``@tasks.NAME.KEY``; a file task's data reaches training through ``prepare_NAME``'s output).
        """
        if section.startswith(f"{TASKS_SECTION}."):
            name = section.split(".")[1]
            settings = ClassifierSection.settings()
            classifier = self.classifier_for(name)
            skipped = classifier.unfingerprinted()
            view = {key: value for key, value in classifier.to_dict().items() if settings[key].fingerprint and key not in skipped}
            task = self.task(name)
            if task.is_knbc:
                builtin = data_view(make_task(name, {})) if name in BUILTIN_TASKS else {}
                view.update({f"@tasks.{name}.{k}": v for k, v in data_view(task).items() if k not in builtin or builtin[k] != v})
            return view
        schema, skipped = SCHEMA[section], self.sections[section].unfingerprinted()
        return {key: value for key, value in self.sections[section].to_dict().items() if schema[key].fingerprint and key not in skipped}

    def task_data_view(self, name: str) -> dict[str, Any]:
        """What a file task's prepared tokens depend on: its data keys and the tokenizer's split mode."""
        return {**data_view(self.task(name)), "@tokenize.split_mode": self.sections["tokenize"]["split_mode"]}

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {name: section.to_dict() for name, section in self.sections.items()}
        result[TASKS_SECTION] = {name: task.to_dict() for name, task in self.tasks.items()}
        return result

    def with_values(self, values: dict[str, Any]) -> Config:
        """A new config with ``{"section.key": value}`` applied (validated; recorded as overrides). Sections are never mutated."""
        changes: dict[str, dict[str, Any]] = {}
        task_values = {name: task.to_dict() for name, task in self.tasks.items()}
        for dotted, value in values.items():
            section, key = dotted.split(".", 1)
            if section == TASKS_SECTION:
                _set_task_value(task_values, key, value)
                continue
            changes.setdefault(section, {})[key] = validate_value(section, key, value)
        sections = {
            name: dataclasses.replace(current, **changes[name]) if name in changes else current for name, current in self.sections.items()
        }
        tasks = {name: make_task(name, table) for name, table in task_values.items()}
        return dataclasses.replace(self, sections=sections, tasks=tasks, overrides={**self.overrides, **values})


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _check_section(section: str, *, where: str = "") -> None:
    if section in MOVED_SECTIONS:
        raise ConfigError(
            "E133",
            f"{where}[{section}] is no longer a config section: the classifier of a task is configured per task.",
            hint=f"Move its keys to [{MOVED_SECTIONS[section]}] (shared settings: [classifier]).",
        )
    if section not in SCHEMA:
        message = f"{where}unknown section [{section}]." if where else f"Unknown config section '{section}'."
        raise ConfigError("E101", message + _suggest(section, list(SCHEMA)), hint=f"Valid sections: {', '.join(SCHEMA)}.")


def _set_task_value(task_values: dict[str, dict[str, Any]], key: str, value: Any) -> None:
    """Apply ``tasks.NAME.KEY = value`` (``KEY`` may be ``classifier.X``) to the raw task tables."""
    if "." not in key:
        raise ConfigError("E106", f"Malformed task override 'tasks.{key}'.", hint="Write tasks.NAME.key=value, e.g. tasks.topic.seed=1.")
    name, inner = key.split(".", 1)
    table = task_values.setdefault(name, {})
    value = validate_task_value(name, inner, value)
    if inner.startswith("classifier."):
        table["classifier"] = {**table.get("classifier", {}), inner.split(".", 1)[1]: value}
    else:
        table[inner] = value


def validate_value(section: str, key: str, value: Any) -> Any:
    """Check one value against the schema and return it (ints widened to floats)."""
    if section == TASKS_SECTION:
        name, inner = key.split(".", 1) if "." in key else (key, "")
        return validate_task_value(name, inner, value)
    _check_section(section)
    if f"{section}.{key}" in MOVED_KEYS:
        raise ConfigError(
            "E102", f"'{section}.{key}' is no longer a config key.", hint=f"Set {MOVED_KEYS[f'{section}.{key}']} instead (same meaning)."
        )
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
        if section == PROFILE_KEY and isinstance(table, str | list):
            continue  # the profile under this file: read by load_config
        if section == TASKS_SECTION and isinstance(table, dict):
            values[section] = _read_tasks(path, table)
            continue
        _check_section(section, where=f"{path}: ")
        if not isinstance(table, dict):
            raise ConfigError("E107", f"{path}: '{section}' must be a [section] table.")
        values[section] = {key: validate_value(section, key, value) for key, value in table.items()}
    return values


def _read_tasks(path: Path, tables: dict[str, Any]) -> dict[str, Any]:
    """The ``[tasks.NAME]`` tables of ``jpipe.toml`` (each validated when the config is built)."""
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError("E107", f"{path}: 'tasks.{name}' must be a [tasks.{name}] table.")
    return {name: dict(table) for name, table in tables.items()}


def profile_names() -> list[str]:
    """The profiles shipped with jpipe (``pipeline/config/profiles/*.toml``)."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.toml"))


def profile_path(name: str) -> Path:
    """The TOML file of profile ``name``; ``ConfigError`` E140 when there is none."""
    path = PROFILES_DIR / f"{name}.toml"
    if not name or "/" in name or not path.is_file():
        raise ConfigError(
            "E140",
            f"Unknown config profile '{name}'.{_suggest(name, profile_names())}",
            hint=f"Valid profiles: {', '.join(profile_names())}.",
        )
    return path


ProfileSpec = str | list[str] | tuple[str, ...] | None


def profile_list(spec: ProfileSpec) -> list[str]:
    """``"modern"``, ``"modern,aozora"``, ``["modern", "aozora"]`` or None -> the names in order, each once."""
    parts = [spec] if isinstance(spec, str) else list(spec or [])
    names = [name.strip() for part in parts for name in str(part).split(",")]
    return list(dict.fromkeys(name for name in names if name))


def _file_profile(path: Path) -> list[str]:
    """The top-level ``profile = "NAME"`` (or a list of names) of ``jpipe.toml``."""
    if not path.exists():
        return []
    try:
        with open(path, "rb") as handle:
            value = tomllib.load(handle).get(PROFILE_KEY)
    except tomllib.TOMLDecodeError:
        return []  # _read_file reports it
    if value is not None and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
        raise ConfigError(
            "E107",
            f"{path}: 'profile' must be a profile name or a list of names, got {value!r}.",
            hint=f"Valid profiles: {', '.join(profile_names())}.",
        )
    return profile_list(value)


def _merge_file(values: dict[str, dict[str, Any]], task_values: dict[str, dict[str, Any]], path: Path, *, join_lists: bool = False) -> None:
    """Apply one file's values. ``join_lists`` (a profile after another): a list extends the one set before it."""
    for section, table in _read_file(path).items():
        if section == TASKS_SECTION:
            for name, task_table in table.items():
                task_values.setdefault(name, {}).update(task_table)
            continue
        for key, value in table.items():
            earlier = values[section].get(key)
            if join_lists and isinstance(value, list) and isinstance(earlier, list):
                value = list(dict.fromkeys([*earlier, *value]))
            values[section][key] = value


def load_config(project_dir: str | os.PathLike, overrides: list[str] | None = None, *, profile: ProfileSpec = None) -> Config:
    """Defaults, then the profiles (``profile``, else jpipe.toml's ``profile = ...``) in order, then ``jpipe.toml``
    in ``project_dir`` (if any), then ``overrides`` (``section.key=value`` strings)."""
    path = Path(project_dir) / CONFIG_FILENAME
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    task_values: dict[str, dict[str, Any]] = {name: {} for name in BUILTIN_TASKS}
    profiles = profile_list(profile) or _file_profile(path)
    for number, name in enumerate(profiles):
        _merge_file(values, task_values, profile_path(name), join_lists=number > 0)
    if path.exists():
        _merge_file(values, task_values, path)
    applied: dict[str, Any] = {}
    for text in overrides or []:
        section, key, value = parse_override(text)
        if section == TASKS_SECTION:
            _set_task_value(task_values, key, value)
        else:
            values[section][key] = validate_value(section, key, value)
        applied[f"{section}.{key}"] = value
    # Building each section checks the rules between its keys (E108).
    sections = {name: cls(**values[name]) for name, cls in SECTIONS.items()}
    tasks = {name: make_task(name, table) for name, table in task_values.items()}
    return Config(sections=sections, path=path if path.exists() else None, overrides=applied, tasks=tasks, profiles=tuple(profiles))


def default_toml() -> str:
    """The default config as commented TOML, for ``jpipe config --defaults``."""
    lines: list[str] = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, spec in keys.items():
            lines.append(f"# {spec.help}")
            lines.append(f"{key} = {toml_value(spec.default)}")
        lines.append("")
    lines.append("# Classification tasks: [tasks.NAME] (`jpipe task add` writes one). The built-in KNBC tasks:")
    for name in BUILTIN_TASKS:
        lines.append(task_toml(name, BUILTIN_TASKS[name], commented=True))
    return "\n".join(lines)


def task_toml(name: str, values: dict[str, Any], *, commented: bool = False) -> str:
    """``[tasks.NAME]`` as TOML (the classifier overrides as an inline table)."""
    prefix = "# " if commented else ""
    lines = [f"{prefix}[tasks.{name}]"]
    for key, value in values.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items())
            lines.append(f"{prefix}{key} = {{ {inner} }}" if inner else f"{prefix}{key} = {{}}")
        else:
            lines.append(f"{prefix}{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)
