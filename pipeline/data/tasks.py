"""The data of a classification task: reading and validating a labelled file, and its split.

A file task (``[tasks.NAME]`` with ``data`` a CSV, TSV or JSONL file) is read with
``pipeline.data.readers.read_records`` (its text, label, id and group columns), checked
(:func:`load_task_rows`) and split by group (:func:`split_by_group`, seeded, stratified by
each group's most common label, the same way ``prepare`` splits KNBC articles by theme).
Rows with an empty text or label are skipped and counted. A KNBC task (``data = "knbc"``)
reads the corpus tokens file, whose split comes from ``[prepare]``.

Errors name the file and the row, and what to do:

* E250 the file does not exist, E251 it has no data rows, E252 a row is not UTF-8,
* E253 fewer than two labels, E254 a label with fewer than ``MIN_EXAMPLES`` examples
  (unless ``allow_rare``: then a warning), E255 ``labels`` does not match the data,
* E235 (the reader's) a missing column, with the columns found.

Standard library only (this runs in ``jpipe task add`` before any model is loaded).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, TaskSection
from pipeline.data.readers import detect_input_format, read_records
from pipeline.errors import InputError
from pipeline.paths import PRETRAINED_LM_DIR, TOKENS, target_lm_dir, task_stats, task_tokens

logger = logging.getLogger(__name__)

LABEL = "label"  # the label field of a file task's prepared rows
MIN_EXAMPLES = 5
SPLITS = ("train", "dev", "test")


def label_field(section: TaskSection) -> str:
    """The row field holding a task's label: its column in the corpus tokens, ``label`` in a prepared file task."""
    return section.label_column if section.is_knbc else LABEL


def task_rows_file(config: Config, task: str) -> str:
    """The tokens file task ``task`` trains and is evaluated on: the corpus tokens, or its prepared rows."""
    return TOKENS if config.task(task).is_knbc else task_tokens(task)


def uses_target_lm(config: Config, task: str) -> bool:
    """Whether task ``task``'s classifier starts from LMs fine-tuned on its own texts (stage finetune_lm_<task>)."""
    classifier = config.classifier_for(task)
    return classifier["init"] == "pretrained" and classifier["target_lm_epochs"] > 0


def lm_dir_for(config: Config, task: str) -> str:
    """The language models a pretrained classifier of ``task`` starts from: the task's fine-tuned ones, or the general ones."""
    return target_lm_dir(task) if uses_target_lm(config, task) else PRETRAINED_LM_DIR


def resolve(project_dir: str | os.PathLike, path: str) -> Path:
    """A task file path as written in the config: absolute, or relative to the project directory."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else Path(project_dir) / candidate


@dataclass
class TaskRows:
    """A file task's valid rows (each with its split), labels, and what was skipped."""

    rows: list[dict[str, Any]]
    labels: list[str]
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: list[str] = field(default_factory=list)

    def distribution(self) -> dict[str, dict[str, int]]:
        """split -> label -> rows (every label listed, zeros included)."""
        return {
            split: {label: sum(1 for r in self.rows if r["split"] == split and r[LABEL] == label) for label in self.labels}
            for split in SPLITS
        }


def _file_error(code: str, where: str, message: str, hint: str) -> InputError:
    return InputError(code, f"{where}: {message}", hint=hint)


def read_labelled_file(path: Path, *, section: TaskSection, shown: str, hint_key: str) -> tuple[list[dict[str, Any]], Counter, list[str]]:
    """Rows ``{id, group, text, label, line}`` of one labelled file; skipped rows counted by reason (with examples)."""
    if not path.is_file():
        raise _file_error(
            "E250", shown, "the labelled file does not exist.", f"Check {hint_key}, or give an existing CSV, TSV or JSONL file."
        )
    fmt = detect_input_format(str(path), input_format=None if section.format == "auto" else section.format)
    if fmt == "txt":
        raise _file_error(
            "E207", shown, "a labelled file must be CSV, TSV or JSONL.", f"Rename it, or set {hint_key.rsplit('.', 1)[0]}.format."
        )
    if fmt == "jsonl":
        _check_jsonl_fields(path, section=section, shown=shown)
    extra = tuple(dict.fromkeys(c for c in (section.label_column, section.group_column) if c))
    records = read_records(
        str(path), input_format=fmt, text_column=section.text_column, id_column=section.id_column or None, extra_columns=extra
    )
    rows: list[dict[str, Any]] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    seen_columns = False
    for record in records:
        seen_columns = True
        fields = record.fields or {}
        label = (fields.get(section.label_column) or "").strip()
        if record.error and "UTF-8" in record.error:
            raise _file_error(
                "E252",
                f"{shown} row {record.line}",
                f"the text is not valid UTF-8 ({record.error}).",
                "Save the file as UTF-8 (for example `iconv -f SHIFT_JIS -t UTF-8`).",
            )
        if "\ufffd" in label:
            raise _file_error("E252", f"{shown} row {record.line}", "the label is not valid UTF-8.", "Save the file as UTF-8.")
        reason = record.error if record.error else ("empty label" if not label else None)
        if reason:
            skipped[reason.split(":")[0].split(" (")[0]] += 1
            if len(examples) < 3:
                examples.append(f"row {record.line}: {reason}")
            continue
        group = (fields.get(section.group_column) or "").strip() if section.group_column else ""
        rows.append({"id": record.id, "group": group or f"row-{record.line}", "text": record.text, LABEL: label, "line": record.line})
    if not rows and not skipped:
        raise _file_error("E251", shown, "the file is empty (no data rows).", "Give a file with a header row and labelled rows.")
    if not seen_columns or not rows:
        raise _file_error(
            "E251", shown, f"no usable rows ({sum(skipped.values())} skipped: {dict(skipped)}).", "Every row needs a text and a label."
        )
    return rows, skipped, examples


def _check_jsonl_fields(path: Path, *, section: TaskSection, shown: str) -> None:
    """The first JSON object must have the task's columns (as a CSV header must): else E235 listing its fields."""
    import gzip
    import json

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), None)
    try:
        data = json.loads(first) if first else None
    except json.JSONDecodeError:
        return  # the reader reports the bad line
    if not isinstance(data, dict):
        return
    for wanted in (section.text_column, section.label_column, section.id_column, section.group_column):
        if wanted and wanted not in data:
            found = ", ".join(repr(key) for key in list(data)[:20])
            raise InputError("E235", f"{shown} has no field '{wanted}' (first row).", hint=f"Its fields are: {found}.")


def check_labels(rows: list[dict[str, Any]], *, section: TaskSection, shown: str, name: str) -> list[str]:
    """The task's labels (the configured list, else the sorted labels found), after checking the counts."""
    counts = Counter(row[LABEL] for row in rows)
    found = sorted(counts)
    if section.labels:
        missing, unknown = [x for x in section.labels if x not in counts], [x for x in found if x not in section.labels]
        if missing or unknown:
            first = next(row for row in rows if row[LABEL] in unknown) if unknown else None
            detail = (f"labels not in tasks.{name}.labels: {', '.join(unknown)} (first on row {first['line']})" if unknown else "") + (
                ("; " if unknown else "") + f"listed labels with no row: {', '.join(missing)}" if missing else ""
            )
            raise _file_error(
                "E255",
                shown,
                f"the label list does not match the data: {detail}.",
                f"Fix tasks.{name}.labels (found: {', '.join(found)}), or remove it to infer the labels.",
            )
    if len(counts) < 2:
        raise _file_error(
            "E253",
            shown,
            f"only one label ({found[0]!r}) in {len(rows)} rows: a classifier needs at least two.",
            f"Check tasks.{name}.label_column, or add rows with other labels.",
        )
    rare = {label: n for label, n in counts.items() if n < MIN_EXAMPLES}
    if rare:
        listing = ", ".join(f"{label!r} ({n})" for label, n in sorted(rare.items()))
        if not section.allow_rare:
            raise _file_error(
                "E254",
                shown,
                f"labels with fewer than {MIN_EXAMPLES} examples: {listing}.",
                f"Add examples, merge or drop those labels, or set tasks.{name}.allow_rare = true.",
            )
        logger.warning("%s: labels with fewer than %d examples: %s (allow_rare: training anyway)", shown, MIN_EXAMPLES, listing)
    return list(section.labels) or found


def split_by_group(rows: list[dict[str, Any]], *, train_ratio: float, dev_ratio: float, seed: int) -> None:
    """Set ``row["split"]``: groups shuffled with ``seed`` within each majority label, cut by the ratios (no group in two splits)."""
    from pipeline.data.knbc.prepare import split_articles

    labels_of: dict[str, Counter] = {}
    for row in rows:
        labels_of.setdefault(row["group"], Counter())[row[LABEL]] += 1
    by_label: dict[str, list[str]] = {}
    for group, counts in labels_of.items():
        # most common label, ties broken by name: deterministic
        top = min(counts.items(), key=lambda item: (-item[1], item[0]))[0]
        by_label.setdefault(top, []).append(group)
    assignment = split_articles(by_label, train_ratio=train_ratio, dev_ratio=dev_ratio, seed=seed)
    for row in rows:
        row["split"] = assignment[row["group"]]


def load_task_rows(project_dir: str | os.PathLike, *, name: str, section: TaskSection) -> TaskRows:
    """Read, validate and split a file task (``data`` plus the optional ``dev_data`` / ``test_data``)."""
    parts: list[tuple[str, list[dict[str, Any]]]] = []
    skipped: Counter = Counter()
    examples: list[str] = []
    for key in ("data", "dev_data", "test_data"):
        value = getattr(section, key)
        if not value:
            continue
        rows, file_skipped, file_examples = read_labelled_file(
            resolve(project_dir, value), section=section, shown=value, hint_key=f"tasks.{name}.{key}"
        )
        parts.append((key, rows))
        skipped.update(file_skipped)
        examples += [f"{value} {example}" for example in file_examples]
    rows = [row for _, rows in parts for row in rows]
    labels = check_labels(rows, section=section, shown=section.data, name=name)
    main = parts[0][1]
    given = {key for key, _ in parts}
    if given == {"data"}:
        split_by_group(main, train_ratio=section.train_ratio, dev_ratio=section.dev_ratio, seed=section.seed)
    else:
        # Files given for dev/test: the main file is training data, less the shares still to split off.
        rest = 1.0 - (0.0 if "dev_data" in given else section.dev_ratio) - (0.0 if "test_data" in given else section.test_ratio)
        split_by_group(main, train_ratio=rest, dev_ratio=0.0 if "dev_data" in given else section.dev_ratio, seed=section.seed)
        for row in main:
            if row["split"] == "test" and "test_data" in given:
                row["split"] = "dev"
        for key, part in parts[1:]:
            for row in part:
                row["split"] = "dev" if key == "dev_data" else "test"
    if skipped:
        logger.warning("task %s: skipped %d rows (%s), e.g. %s", name, sum(skipped.values()), dict(skipped), "; ".join(examples))
    return TaskRows(rows=rows, labels=labels, skipped=skipped, skipped_examples=examples)


def task_labels(project_dir: str | os.PathLike, *, task: str, section: TaskSection, tokens_path: Path) -> list[str]:
    """A task's labels in output order: configured, else recorded by ``prepare_<task>``, else sorted from the tokens file."""
    from pipeline.io import read_json, read_jsonl

    if section.labels:
        return list(section.labels)
    if not section.is_knbc:
        return list(read_json(Path(project_dir) / task_stats(task))["labels"])
    return sorted({row[section.label_column] for row in read_jsonl(tokens_path)})


# ------------------------------------------------------------------ the registry in jpipe.toml
def _config_text(project_dir: Path) -> str:
    from pipeline.config import CONFIG_FILENAME

    path = project_dir / CONFIG_FILENAME
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _write_config_text(project_dir: Path, text: str) -> None:
    """Check that ``text`` is a valid config, then replace jpipe.toml with it atomically (never half-written)."""
    import tempfile

    from pipeline.config import CONFIG_FILENAME, load_config
    from pipeline.io import atomic_open

    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / CONFIG_FILENAME).write_text(text, encoding="utf-8")
        load_config(scratch)  # raises ConfigError before anything is written
    with atomic_open(project_dir / CONFIG_FILENAME) as handle:
        handle.write(text)


def stored_path(project_dir: Path, path: str) -> str:
    """How a file given on the command line is written into the config: relative to the project when inside it."""
    absolute = Path(path).expanduser().resolve()
    try:
        return str(absolute.relative_to(project_dir.resolve()))
    except ValueError:
        return str(absolute)


def add_task(project_dir: str | os.PathLike, *, name: str, values: dict[str, Any]) -> TaskRows:
    """Validate task ``name`` (its section and its labelled file) and append ``[tasks.NAME]`` to jpipe.toml.

    Returns the validated rows (with their split) so the caller can report them. Nothing is
    written when anything is wrong: a duplicate name (E131), a bad value, or bad data (E250-E255).
    """
    from pipeline.config import check_task_name, load_config, make_task, task_toml
    from pipeline.errors import ConfigError

    project_dir = Path(project_dir)
    check_task_name(name)
    config = load_config(project_dir)
    if name in config.tasks:
        raise ConfigError(
            "E131",
            f"A task named '{name}' already exists in {project_dir}.",
            hint="Pick another name, or remove it first with `jpipe task remove`.",
        )
    section = make_task(name, values)
    data = load_task_rows(project_dir, name=name, section=section)
    text = _config_text(project_dir)
    if text and not text.endswith("\n"):
        text += "\n"
    _write_config_text(project_dir, text + ("\n" if text else "") + task_toml(name, values))
    return data


def remove_task(project_dir: str | os.PathLike, *, name: str) -> None:
    """Delete ``[tasks.NAME]`` (and its sub-tables) from jpipe.toml, atomically. Trained files stay where they are."""
    from pipeline.config import BUILTIN_TASKS, load_config
    from pipeline.errors import ConfigError

    project_dir = Path(project_dir)
    load_config(project_dir).task(name)  # E132 for an unknown task
    if name in BUILTIN_TASKS:
        raise ConfigError(
            "E134",
            f"'{name}' is a built-in KNBC task and cannot be removed.",
            hint=f"Set tasks.{name}.enabled = false in jpipe.toml to drop its stages.",
        )
    kept: list[str] = []
    inside = False
    for line in _config_text(project_dir).splitlines(keepends=True):
        header = line.strip()
        if header.startswith("["):
            table = header.strip("[]").strip()
            inside = table == f"tasks.{name}" or table.startswith(f"tasks.{name}.")
        if not inside:
            kept.append(line)
    text = "".join(kept).rstrip("\n") + "\n" if "".join(kept).strip() else ""
    _write_config_text(project_dir, text)
    if name in load_config(project_dir).tasks:
        raise ConfigError(
            "E134", f"Task '{name}' is not a [tasks.{name}] table that can be removed automatically.", hint="Edit jpipe.toml by hand."
        )
