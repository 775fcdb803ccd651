"""Text generation with the trained LSTM language model (``jpipe generate``).

The prompt is tokenized like the training data (GiNZA/Sudachi surface forms,
the project's split mode), or split into characters for a character-level
model. Generation continues the prompt until ``</s>`` or ``max_tokens`` new
units, and the result is detokenized: Japanese tokens are joined without
spaces; a space is kept only between two Latin-letter words ("Windows Vista").

Importing this module is cheap: torch and the tokenizer load on first use.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

TITLE_MAX_TOKENS = 30
_LATIN_END = re.compile(r"[A-Za-z]$")
_LATIN_START = re.compile(r"^[A-Za-z]")


def detokenize(tokens: list[str]) -> str:
    """Join generated units into text: no spaces between Japanese tokens.

    >>> detokenize(["京都", "の", "お", "寺", "。"])
    '京都のお寺。'
    >>> detokenize(["Windows", "Vista", "は", "重い"])
    'Windows Vistaは重い'
    """
    pieces: list[str] = []
    for token in tokens:
        if pieces and _LATIN_END.search(pieces[-1]) and _LATIN_START.search(token):
            pieces.append(" ")
        pieces.append(token)
    return "".join(pieces)


def validate_options(*, temperature: float, top_k: int, top_p: float, num: int, max_tokens: int) -> None:
    """User-facing checks of the sampling options (``PipelineError`` with what to pass instead)."""
    if not temperature > 0:
        raise PipelineError(
            f"--temperature must be greater than 0, got {temperature:g}.",
            hint="Typical values are 0.7-1.0 (lower = safer, higher = more varied). For the single most likely text use --top-k 1.",
        )
    if not 0 < top_p <= 1:
        raise PipelineError(f"--top-p must be in (0, 1], got {top_p:g}.", hint="For example --top-p 0.9; 1 turns nucleus filtering off.")
    if top_k < 0:
        raise PipelineError(f"--top-k must be 0 or more, got {top_k}.", hint="For example --top-k 40; 0 turns top-k filtering off.")
    if num < 1 or max_tokens < 1:
        raise PipelineError("--num and --max-tokens must be at least 1.", hint="For example --num 3 --max-tokens 60.")


def resolve_theme(theme: str | None, *, available: list[str]) -> str | None:
    """'Gourmet', 'gourmet' or 'グルメ' -> 'Gourmet'; errors list the valid names (English and Japanese)."""
    if theme is None or theme == "":
        return None
    from pipeline.data.labels import THEME_JA, theme_from_name

    valid = ", ".join(f"{t} ({THEME_JA[t]})" for t in available) or "none"
    try:
        name = theme_from_name(theme)
    except ValueError:
        raise PipelineError(f"Unknown theme '{theme}'.", hint=f"Valid themes: {valid}.") from None
    if not available:
        raise PipelineError(
            "This generator was trained without theme conditioning, so --theme cannot be used.",
            hint="Leave out --theme, or retrain with --set train_generator.theme_conditioning=true.",
        )
    if name not in available:
        raise PipelineError(f"The generator has no theme '{name}'.", hint=f"Valid themes: {valid}.")
    return name


@dataclass
class GenerationResult:
    samples: list[str]
    prompt_tokens: list[str]
    oov_prompt_tokens: list[str]
    seed: int
    theme: str | None
    ended: list[str] = field(default_factory=list)  # "eos" or "max_tokens" per sample

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "seed": self.seed,
            "theme": self.theme,
            "prompt_tokens": self.prompt_tokens,
            "oov_prompt_tokens": self.oov_prompt_tokens,
            "ended": self.ended,
        }


class TextGenerator:
    """A loaded generator plus prompt handling. ``TextGenerator.from_project(dir).generate(prompt=...)``."""

    def __init__(self, loaded, *, project_dir: str | os.PathLike | None = None) -> None:
        self.loaded = loaded
        self.project_dir = Path(project_dir) if project_dir is not None else None

    @classmethod
    def from_project(cls, project_dir: str | os.PathLike, *, device: str = "cpu") -> "TextGenerator":
        from pipeline.paths import GENERATOR_DIR

        directory = Path(project_dir) / GENERATOR_DIR
        if not (directory / "config.json").exists():
            raise PipelineError(f"No trained generator in {directory}.", hint="Train it with `jpipe run train_generator`.")
        from pipeline.models.runtime import pick_device
        from pipeline.models.language_model import load_generator

        return cls(load_generator(directory, device=pick_device(device)), project_dir=project_dir)

    def prompt_units(self, prompt: str) -> list[str]:
        """The prompt in the model's units: GiNZA surface tokens (project split mode) or characters."""
        if not prompt.strip():
            return []
        if self.loaded.level == "char":
            return [c for c in prompt if not c.isspace()]
        from pipeline.text.tokenize import load_tokenizer, tokenized_split_mode

        split_mode = tokenized_split_mode(self.project_dir) if self.project_dir else "C"
        # with_pos=False: surface forms need Sudachi only, not spaCy
        return load_tokenizer(split_mode, with_pos=False).tokenize(prompt)["surface"]

    def generate(
        self,
        *,
        prompt: str = "",
        num: int = 1,
        max_tokens: int = 60,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        theme: str | None = None,
    ) -> GenerationResult:
        """``num`` texts that continue ``prompt``; the same arguments and seed give the same texts."""
        from pipeline.models.vocab import BOS, EOS, PAD, UNK
        from pipeline.models.language_model import generate_ids, theme_slot

        validate_options(temperature=temperature, top_k=top_k, top_p=top_p, num=num, max_tokens=max_tokens)
        theme = resolve_theme(theme, available=self.loaded.themes)
        if seed is None:
            seed = secrets.randbelow(2**31)
        vocab = self.loaded.vocab
        units = self.prompt_units(prompt)
        oov = [u for u in units if u not in vocab.stoi]
        if oov:
            logger.warning(
                "Prompt %s not in the generator's vocabulary: %s (the model reads %s as <unk>; the output keeps %s).",
                "word is" if len(oov) == 1 else "words are",
                ", ".join(dict.fromkeys(oov)),
                "it" if len(oov) == 1 else "them",
                "it" if len(oov) == 1 else "them",
            )
        common = dict(
            eos_index=vocab.stoi[EOS],
            banned=[vocab.stoi[PAD], vocab.stoi[BOS], vocab.stoi[UNK]],
            theme=theme_slot(theme),
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        start = [vocab.stoi[BOS]]
        if self.loaded.unit == "article":
            # An article-level model writes an article's title (［京都観光］...) right after <s>.
            # Sample a title first (not shown, same seed) so the prompt continues as a body sentence.
            title, _ = generate_ids(self.loaded.model, prefix=start, num=1, max_tokens=TITLE_MAX_TOKENS, seed=seed, **common)[0]
            start = [*start, *title, vocab.stoi[EOS]]
        results = generate_ids(self.loaded.model, prefix=[*start, *vocab.encode(units)], num=num, max_tokens=max_tokens, seed=seed, **common)
        # The prompt is shown as typed by the user (its surface forms), even where the model saw <unk>.
        samples = [detokenize(units + vocab.decode(ids)) for ids, _ in results]
        ended = ["eos" if finished else "max_tokens" for _, finished in results]
        return GenerationResult(samples=samples, prompt_tokens=units, oov_prompt_tokens=oov, seed=seed, theme=theme, ended=ended)
