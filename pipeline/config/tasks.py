"""Classification tasks as data: ``[tasks.NAME]`` sections (the task registry).

A task is a labelled file (CSV, TSV or JSONL, ``.gz`` allowed) with a text and a label
column, or ``data = "knbc"``: the corpus tokens file (``data/tokens/knbc.jsonl``), whose
columns are ``theme``, ``sentiment``, ``article_id``, ... and whose split comes from
``[prepare]``. KNBC's topic and sentiment are the two built-in tasks below; they are
ordinary entries of the registry, and the stage table makes ``train_NAME`` and
``evaluate_NAME`` (plus ``prepare_NAME`` for a file task) for every enabled task.

A task's classifier is the ``[classifier]`` section with the task's ``class_weights`` and
its ``[tasks.NAME.classifier]`` table applied on top (:func:`effective_classifier`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, ClassVar

from pipeline.config.schema import ClassifierSection, Section, section, setting
from pipeline.errors import ConfigError

KNBC_DATA = "knbc"
TASK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Stage names made from a task name must not collide with the other stages.
RESERVED_TASK_NAMES = frozenset({"generator", "vectors", "classifiers", "spacy_vectors", "word2vec"})
# Keys that decide what the task's data (its rows, labels and split) is; the rest is about training.
DATA_KEYS = (
    "data",
    "format",
    "text_column",
    "label_column",
    "id_column",
    "group_column",
    "labels",
    "dev_data",
    "test_data",
    "train_ratio",
    "dev_ratio",
    "test_ratio",
    "seed",
    "allow_rare",
)

# The two KNBC tasks, built from the corpus tokens (values that differ from the TaskSection defaults).
BUILTIN_TASKS: dict[str, dict[str, Any]] = {
    "topic": {
        "data": KNBC_DATA,
        "label_column": "theme",
        "id_column": "sentence_id",
        "group_column": "article_id",
        "labels": ["Gourmet", "Keitai", "Kyoto", "Sports"],
        # Word dropout: the topic model overfits within one epoch otherwise.
        "classifier": {"word_dropout": 0.2},
        "description": "KNBC article theme of each sentence (Gourmet / Keitai / Kyoto / Sports).",
    },
    "sentiment": {
        "data": KNBC_DATA,
        "label_column": "sentiment",
        "id_column": "sentence_id",
        "group_column": "article_id",
        "labels": ["negative", "neutral", "positive"],
        # The sentiment classes are unbalanced (mostly neutral).
        "class_weights": True,
        "description": "KNBC 評判 polarity of each sentence (negative / neutral / positive).",
    },
}


@section
class TaskSection(Section):
    """``[tasks.NAME]``: one classification task (its data, its split, its classifier overrides)."""

    section_name: ClassVar[str] = "tasks.<name>"
    data: str = setting(
        "", help='Labelled file (CSV, TSV or JSONL, .gz allowed; relative to the project directory), or "knbc" for the corpus tokens.'
    )
    format: str = setting("auto", help="File format; auto = from the extension.", choices=("auto", "csv", "tsv", "jsonl"))
    text_column: str = setting("text", help="Column (CSV/TSV) or field (JSONL) holding the text.")
    label_column: str = setting("label", help="Column or field holding the label.")
    id_column: str = setting("", help="Column or field holding a row id (empty: the row number).")
    group_column: str = setting(
        "", help="Rows of one group (an article, a product) never land in two splits (empty: every row its own group)."
    )
    labels: list[str] = setting([], help="The labels in output order (empty: the sorted labels found in the data).")
    dev_data: str = setting("", help="Labelled dev file (same columns); empty: split off the main file by dev_ratio.")
    test_data: str = setting("", help="Labelled test file (same columns); empty: split off the main file by test_ratio.")
    train_ratio: float = setting(0.8, help="Share of groups in the training split (when there is no dev/test file).", min=0.0, max=1.0)
    dev_ratio: float = setting(0.1, help="Share of groups in the dev split.", min=0.0, max=1.0)
    test_ratio: float = setting(0.1, help="Share of groups in the test split.", min=0.0, max=1.0)
    seed: int = setting(13, help="Seed of the group shuffle of the split.")
    class_weights: bool = setting(False, help="Weight the training loss by inverse class frequency.")
    allow_rare: bool = setting(False, help="Train even when a label has fewer than 5 examples (with a warning).")
    enabled: bool = setting(True, help="false: no stages are made for this task.", fingerprint=False)
    description: str = setting("", help="What the task predicts (shown by `jpipe task list`).", fingerprint=False)
    classifier: dict = setting({}, help="Settings of [classifier] that differ for this task, e.g. { word_dropout = 0.2 }.")

    def check(self) -> None:
        if not self.data:
            raise ConfigError(
                "E135", f"{self.section_name}.data is not set.", hint=f'Set {self.section_name}.data to a labelled file or "knbc".'
            )
        total = self.train_ratio + self.dev_ratio + self.test_ratio
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                "E108",
                f"{self.section_name}.train_ratio + dev_ratio + test_ratio must sum to 1, got {total:g}.",
                hint=f"For example {self.section_name}.train_ratio = 0.8, dev_ratio = 0.1, test_ratio = 0.1.",
            )
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError("E108", f"{self.section_name}.labels lists a label twice: {self.labels}.")
        settings = ClassifierSection.settings()
        for key, value in self.classifier.items():
            if key not in settings:
                close = difflib.get_close_matches(key, list(settings), n=1)
                raise ConfigError(
                    "E102",
                    f"Unknown config key '{self.section_name}.classifier.{key}'." + (f" Did you mean '{close[0]}'?" if close else ""),
                    hint=f"Valid keys in [{self.section_name}.classifier]: {', '.join(settings)}.",
                )
            self.classifier[key] = settings[key].check(f"{self.section_name}.classifier.{key}", value)

    @property
    def is_knbc(self) -> bool:
        return self.data == KNBC_DATA


def check_task_name(name: str) -> str:
    """``name`` if it can name a task (and its stages); else ConfigError E130."""
    if not TASK_NAME.match(name) or name in RESERVED_TASK_NAMES:
        raise ConfigError(
            "E130",
            f"'{name}' cannot name a task.",
            hint="Use 1-32 lowercase letters, digits or _, starting with a letter, and not one of: "
            + ", ".join(sorted(RESERVED_TASK_NAMES))
            + ".",
        )
    return name


def make_task(name: str, values: dict[str, Any]) -> TaskSection:
    """The validated ``[tasks.NAME]`` section: built-in defaults (for topic/sentiment), then ``values``."""
    check_task_name(name)
    cls = type(f"TaskSection_{name}", (TaskSection,), {"section_name": f"tasks.{name}", "__module__": __name__})
    merged = {**BUILTIN_TASKS.get(name, {}), **values}
    if "classifier" in values and name in BUILTIN_TASKS:
        merged["classifier"] = {**BUILTIN_TASKS[name].get("classifier", {}), **values["classifier"]}
    return cls(**merged)


def validate_task_value(name: str, key: str, value: Any) -> Any:
    """One ``tasks.NAME.key`` value checked against the schema (``key`` may be ``classifier.KEY``)."""
    settings = TaskSection.settings()
    if key.startswith("classifier."):
        inner = key.split(".", 1)[1]
        make_task(name, {"data": "x", "classifier": {inner: value}})  # raises on an unknown key or bad value
        return ClassifierSection.settings()[inner].check(f"tasks.{name}.classifier.{inner}", value)
    if key not in settings:
        close = difflib.get_close_matches(key, list(settings), n=1)
        raise ConfigError(
            "E102",
            f"Unknown config key 'tasks.{name}.{key}'." + (f" Did you mean '{close[0]}'?" if close else ""),
            hint=f"Valid keys in [tasks.{name}]: {', '.join(settings)}.",
        )
    return settings[key].check(f"tasks.{name}.{key}", value)


def effective_classifier(base: ClassifierSection, task: TaskSection) -> ClassifierSection:
    """``[classifier]`` with the task's class weighting and ``[tasks.NAME.classifier]`` table applied."""
    return dataclasses.replace(base, **{"class_weights": task.class_weights, **task.classifier})


def data_view(task: TaskSection) -> dict[str, Any]:
    """The fingerprinted keys that decide the task's rows, labels and split."""
    return {key: task.to_dict()[key] for key in DATA_KEYS}
