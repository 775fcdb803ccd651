"""The search space of ``jpipe tune``, declared once, next to the typed config it searches.

Every key is a ``[classifier]`` key (:class:`pipeline.config.schema.ClassifierSection`), and every
bound and choice passes that key's own check (type, choices, range): :func:`check_search_space`
runs when this module is imported, so a space that drifts from the config fails at once (E150).

``[tune] params = [...]`` narrows the search to some of the keys; the others keep their configured
value. What a project cannot use is left out when the study starts (``pipeline.workflow.tune``):
vector sources that are not built, and ``init = "pretrained"`` without the pretrained language models.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pipeline.config.schema import ClassifierSection
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One searched key: a float range (``log``: sampled on a log scale) or a list of choices."""

    kind: str  # "float" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def values(self) -> tuple[Any, ...]:
        """The values that must pass the config key's check: the bounds, or every choice."""
        return (self.low, self.high) if self.kind == "float" else self.choices


# The keys searched, in the order a trial samples them (init first: a pretrained start pins hidden_size and
# embedding_init to the language models'). Ranges around the defaults that matter most on KNBC-sized data.
SEARCH_SPACE: dict[str, Param] = {
    "init": Param("choice", choices=("scratch", "pretrained")),
    "learning_rate": Param("float", low=3e-4, high=1e-2, log=True),
    "hidden_size": Param("choice", choices=(64, 128, 256)),
    "dropout": Param("float", low=0.0, high=0.6),
    "word_dropout": Param("float", low=0.0, high=0.4),
    "embedding_init": Param("choice", choices=("spacy", "word2vec", "imported", "random")),
    "freeze_embeddings": Param("choice", choices=(True, False)),
    "batch_size": Param("choice", choices=(16, 32, 64)),
    "class_weights": Param("choice", choices=(False, True)),
}
# With init = pretrained these keep the configured value: the language models were trained with them.
PRETRAINED_PINNED = ("hidden_size", "embedding_init")


def _unknown_key(key: str, *, where: str) -> ConfigError:
    valid = list(ClassifierSection.settings())
    close = difflib.get_close_matches(key, valid, n=1)
    return ConfigError(
        "E150",
        f"{where}: '{key}' is not a [classifier] config key." + (f" Did you mean '{close[0]}'?" if close else ""),
        hint=f"Search-space keys must be [classifier] keys: {', '.join(valid)}.",
    )


def check_search_space(space: dict[str, Param]) -> None:
    """Every key a ``[classifier]`` key and every bound or choice a valid value of it; else ``ConfigError`` E150."""
    settings = ClassifierSection.settings()
    for key, param in space.items():
        if key not in settings:
            raise _unknown_key(key, where="the tuning search space")
        if param.kind not in ("float", "choice") or not param.values():
            raise ConfigError("E150", f"The tuning search space gives '{key}' no values to sample ({param}).")
        for value in param.values():
            settings[key].check(f"classifier.{key}", value)


def check_params(params: list[str]) -> None:
    """``[tune] params``: each a key of :data:`SEARCH_SPACE`; else ``ConfigError`` E150 that lists them."""
    for key in params:
        if key not in ClassifierSection.settings():
            raise _unknown_key(key, where="tune.params")
        if key not in SEARCH_SPACE:
            raise ConfigError(
                "E150",
                f"tune.params: '{key}' is a [classifier] key, but not one the search space covers.",
                hint=f"Searchable keys: {', '.join(SEARCH_SPACE)}. Set {key} in [classifier] to fix it instead.",
            )


def searched(params: list[str]) -> dict[str, Param]:
    """The space ``[tune] params`` asks for (all of it when empty), in :data:`SEARCH_SPACE` order."""
    check_params(params)
    return {key: param for key, param in SEARCH_SPACE.items() if not params or key in params}


check_search_space(SEARCH_SPACE)
