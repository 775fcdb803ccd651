"""Fluency scores: the perplexity of the generator's language model on any text (``jpipe score``).

Each line is scored as one sentence, framed like the training data
(``<s> units </s>``): every unit and the final ``</s>`` is a target. Units
outside the model's vocabulary become ``<unk>`` and are counted, so a low
perplexity that comes from many ``<unk>`` targets can be told apart (the OOV
rate). The theme slot is "any theme" unless a theme is given.

Lower perplexity = the text is more like what the model was trained on. Use it
to rank texts by fluency, or to check how far a domain is from KNBC's blogs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipeline.metrics import perplexity


@dataclass
class LineScore:
    """One scored line. ``perplexity`` is ``None`` for a line with nothing to score (``reason`` says why)."""

    text: str
    units: int
    oov: int
    nll: float | None
    targets: int
    reason: str | None = None

    @property
    def perplexity(self) -> float | None:
        return None if self.nll is None else perplexity(self.nll, self.targets)

    def to_json(self) -> dict[str, Any]:
        ppl = self.perplexity
        return {
            "text": self.text,
            "perplexity": None if ppl is None else round(ppl, 4),
            "units": self.units,
            "oov": self.oov,
            "targets": self.targets,
            **({"reason": self.reason} if self.reason else {}),
        }


@dataclass
class ScoreResult:
    """Per-line scores and the overall figures (perplexity over all targets of all scored lines)."""

    lines: list[LineScore]
    theme: str | None
    level: str
    skipped: list[int] = field(default_factory=list)  # indices of lines with nothing to score

    @property
    def targets(self) -> int:
        return sum(line.targets for line in self.lines if line.nll is not None)

    @property
    def perplexity(self) -> float | None:
        scored = [line for line in self.lines if line.nll is not None]
        return perplexity(math.fsum(line.nll for line in scored), self.targets) if scored else None

    @property
    def oov_rate(self) -> float:
        units = sum(line.units for line in self.lines)
        return sum(line.oov for line in self.lines) / units if units else 0.0

    def to_json(self) -> dict[str, Any]:
        ppl = self.perplexity
        return {
            "perplexity": None if ppl is None else round(ppl, 4),
            "oov_rate": round(self.oov_rate, 6),
            "lines": len(self.lines),
            "scored_lines": len(self.lines) - len(self.skipped),
            "targets": self.targets,
            "theme": self.theme,
            "level": self.level,
            "per_line": [line.to_json() for line in self.lines],
        }


def score_texts(generator, texts: Iterable[str], *, theme: str | None = None, batch_size: int = 64) -> ScoreResult:
    """Score every text with ``generator``'s language model (see the module docstring)."""
    from pipeline.models.language_model import sequence_nll, theme_slot
    from pipeline.models.vocab import BOS, EOS

    loaded = generator.loaded
    vocab = loaded.vocab
    texts = list(texts)
    unit_lists = [generator.prompt_units(text) for text in texts]
    scored = [index for index, units in enumerate(unit_lists) if units]
    sequences = [vocab.encode([BOS, *unit_lists[index], EOS]) for index in scored]
    slot = theme_slot(theme) if loaded.theme_conditioned else 0
    pairs = sequence_nll(
        loaded.model, sequences, [slot] * len(sequences), pad_index=vocab.pad_index, device=loaded.device, batch_size=batch_size
    )
    by_index = dict(zip(scored, pairs, strict=True))
    lines = []
    for index, (text, units) in enumerate(zip(texts, unit_lists, strict=True)):
        oov = sum(1 for unit in units if unit not in vocab.stoi)
        if index in by_index:
            nll, targets = by_index[index]
            lines.append(LineScore(text=text, units=len(units), oov=oov, nll=nll, targets=targets))
        else:
            lines.append(LineScore(text=text, units=0, oov=0, nll=None, targets=0, reason="empty line"))
    return ScoreResult(lines=lines, theme=theme, level=loaded.level, skipped=[i for i in range(len(texts)) if i not in by_index])
