"""``Generator``: text generation with a trained LSTM language model (``jpipe generate``).

The prompt is tokenized like the training data (GiNZA/Sudachi surface forms,
the split mode recorded in the model directory), or split into characters for a character-level
model. Generation continues the prompt until ``</s>`` or ``max_tokens`` new
units, and the result is detokenized: Japanese tokens are joined without
spaces; a space is kept only between two Latin-letter words ("Windows Vista").

Importing this module is cheap: torch and the tokenizer load on first use.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, ModelError

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
    """Checks of the sampling options, shared by the library and ``jpipe generate`` (``ConfigError`` E109).

    ``temperature`` 0 is greedy decoding (the most likely token at each step), as in
    :func:`pipeline.models.sampling.sample_next`; a negative or non-finite value is an error.
    """
    if not (0.0 <= temperature < math.inf):
        raise ConfigError(
            "E109",
            f"temperature must be 0 or more, got {temperature:g}.",
            hint="0 picks the most likely token at each step (greedy); typical sampling values are 0.7-1.0 (lower = safer, higher = more varied).",
        )
    if not 0 < top_p <= 1:
        raise ConfigError("E109", f"top_p must be in (0, 1], got {top_p:g}.", hint="For example 0.9; 1 turns nucleus filtering off.")
    if top_k < 0:
        raise ConfigError("E109", f"top_k must be 0 or more, got {top_k}.", hint="For example 40; 0 turns top-k filtering off.")
    if num < 1 or max_tokens < 1:
        raise ConfigError(
            "E109",
            f"num and max_tokens must be at least 1, got num={num}, max_tokens={max_tokens}.",
            hint="For example num 3 and max_tokens 60.",
        )


def resolve_theme(theme: str | None, *, available: list[str]) -> str | None:
    """'Gourmet', 'gourmet' or 'グルメ' -> 'Gourmet'; errors list the valid names (English and Japanese)."""
    if theme is None or theme == "":
        return None
    from pipeline.data.labels import THEME_JA, theme_from_name

    valid = ", ".join(f"{t} ({THEME_JA[t]})" for t in available) or "none"
    try:
        name = theme_from_name(theme)
    except ValueError:
        known = ", ".join(f"{t} ({ja})" for t, ja in THEME_JA.items())
        raise ConfigError("E109", f"Unknown theme '{theme}'.", hint=f"Valid themes: {valid if available else known}.") from None
    if not available:
        raise ModelError(
            "E316",
            "This generator was trained without theme conditioning, so it cannot write in a given theme.",
            hint="Leave the theme out, or retrain with train_generator.theme_conditioning = true (`jpipe run train_generator`).",
        )
    if name not in available:
        raise ModelError("E316", f"The generator has no theme '{name}'.", hint=f"Valid themes: {valid}.")
    return name


@dataclass
class GenerationResult:
    samples: list[str]
    prompt_tokens: list[str]
    oov_prompt_tokens: list[str]
    seed: int
    theme: str | None
    ended: list[str] = field(default_factory=list)  # "eos" or "max_tokens" per sample

    @property
    def text(self) -> str:
        """The first sample (the only one with ``num=1``)."""
        return self.samples[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "seed": self.seed,
            "theme": self.theme,
            "prompt_tokens": self.prompt_tokens,
            "oov_prompt_tokens": self.oov_prompt_tokens,
            "ended": self.ended,
        }


@dataclass
class GenerationPlan:
    """A checked generation request with its prompt in model units (:meth:`Generator.prepare`)."""

    units: list[str]
    oov: list[str]
    seed: int
    theme: str | None
    num: int
    max_tokens: int
    sampling: dict[str, Any]  # temperature, top_k, top_p


class Generator:
    """A trained LSTM generator plus prompt handling, loaded from its model directory.

    ``Generator.from_dir("models/generator").generate("京都の", seed=7).text``. The prompt is
    tokenized with the split mode recorded in the model directory (C for legacy directories),
    never with a project's settings, so the directory works alone on any machine.
    """

    def __init__(self, loaded, *, split_mode: str | None = None) -> None:
        """``loaded``: a ``pipeline.models.language_model.LoadedGenerator``; ``split_mode`` defaults to
        the one recorded in its directory."""
        from pipeline.models.model_dir import model_split_mode, read_model_config

        self.loaded = loaded
        if split_mode is None:
            split_mode = model_split_mode(read_model_config(loaded.directory).get("tokenizer") or {}, directory=loaded.directory)
        self.split_mode = split_mode

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, *, device: str = "cpu") -> Generator:
        """Load the model directory ``directory`` on ``device`` (``cpu``, ``cuda`` or ``auto``)."""
        from pipeline.models.language_model import load_generator
        from pipeline.models.runtime import pick_device

        return cls(load_generator(Path(directory), device=pick_device(device)))

    def score(self, texts, *, theme: str | None = None):
        """Perplexity of the model on each text and overall, with the OOV rate: a
        :class:`pipeline.inference.scoring.ScoreResult` (``.perplexity``, ``.oov_rate``, ``.lines``)."""
        from pipeline.inference.scoring import score_texts

        if theme is not None:
            theme = resolve_theme(theme, available=self.themes)
        return score_texts(self, texts, theme=theme)

    @property
    def themes(self) -> list[str]:
        return list(self.loaded.themes)

    def prompt_units(self, prompt: str) -> list[str]:
        """The prompt in the model's units: GiNZA surface tokens (the model's split mode) or characters."""
        if not prompt.strip():
            return []
        if self.loaded.level == "char":
            return [c for c in prompt if not c.isspace()]
        from pipeline.text.tokenize import load_tokenizer

        # with_pos=False: surface forms need Sudachi only, not spaCy
        return load_tokenizer(self.split_mode, with_pos=False).tokenize(prompt)["surface"]

    def prepare(
        self,
        prompt: str = "",
        *,
        num: int = 1,
        max_tokens: int = 60,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        theme: str | None = None,
    ) -> GenerationPlan:
        """Check the options, pick the seed and tokenize the prompt: everything before sampling.

        The only step that uses the (not thread-safe) Sudachi tokenizer; :meth:`complete`
        and :meth:`stream_plan` then only run the model.
        """
        validate_options(temperature=temperature, top_k=top_k, top_p=top_p, num=num, max_tokens=max_tokens)
        theme = resolve_theme(theme, available=self.loaded.themes)
        if seed is None:
            seed = secrets.randbelow(2**31)
        units = self.prompt_units(prompt)
        oov = [u for u in units if u not in self.loaded.vocab.stoi]
        if oov:
            logger.warning(
                "Prompt %s not in the generator's vocabulary: %s (the model reads %s as <unk>; the output keeps %s).",
                "word is" if len(oov) == 1 else "words are",
                ", ".join(dict.fromkeys(oov)),
                "it" if len(oov) == 1 else "them",
                "it" if len(oov) == 1 else "them",
            )
        sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        return GenerationPlan(units=units, oov=oov, seed=seed, theme=theme, num=num, max_tokens=max_tokens, sampling=sampling)

    def generate(
        self,
        prompt: str = "",
        *,
        num: int = 1,
        max_tokens: int = 60,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        theme: str | None = None,
    ) -> GenerationResult:
        """``num`` texts that continue ``prompt``; the same arguments and seed give the same texts.

        ``temperature`` 0 is greedy decoding (then ``seed``, ``top_k`` and ``top_p`` do not matter).
        """
        options = dict(num=num, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, theme=theme)
        return self.complete(self.prepare(prompt, **options))

    def complete(self, plan: GenerationPlan) -> GenerationResult:
        """The texts of a prepared generation (see :meth:`prepare`)."""
        results = self._sample(plan.units, num=plan.num, max_tokens=plan.max_tokens, seed=plan.seed, theme=plan.theme, **plan.sampling)
        # The prompt is shown as typed by the user (its surface forms), even where the model saw <unk>.
        samples = [detokenize(plan.units + self.loaded.vocab.decode(ids)) for ids, _ in results]
        ended = ["eos" if finished else "max_tokens" for _, finished in results]
        return GenerationResult(
            samples=samples, prompt_tokens=plan.units, oov_prompt_tokens=plan.oov, seed=plan.seed, theme=plan.theme, ended=ended
        )

    def stream(
        self,
        prompt: str = "",
        *,
        max_tokens: int = 60,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        theme: str | None = None,
    ) -> Iterator[str]:
        """One text, piece by piece: the prompt first (when there is one), then each new token as it is sampled.

        ``"".join(generator.stream(prompt, seed=s, ...))`` equals ``generator.generate(prompt, seed=s, ...).text``
        (same options, ``num`` 1). Options are checked and the prompt tokenized at the call, before the
        first piece is asked for; give ``seed`` to know it (one is drawn otherwise, as in :meth:`generate`).
        """
        options = dict(max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, theme=theme)
        return self.stream_plan(self.prepare(prompt, num=1, **options))

    def stream_plan(self, plan: GenerationPlan) -> Iterator[str]:
        """Text pieces of a prepared one-sample generation; they join into :meth:`complete`'s text."""
        if plan.num != 1:
            raise ConfigError("E109", f"Streaming writes one text at a time, got num={plan.num}.", hint="Stream with num 1.")
        return self._stream_pieces(plan)

    def _stream_pieces(self, plan: GenerationPlan) -> Iterator[str]:
        last = plan.units[-1] if plan.units else ""
        if plan.units:
            yield detokenize(plan.units)
        for index in self._iter_ids(plan):
            token = self.loaded.vocab.itos[index]
            yield (" " if last and _LATIN_END.search(last) and _LATIN_START.search(token) else "") + token
            last = token

    def _iter_ids(self, plan: GenerationPlan) -> Iterator[int]:
        """Token ids of one continuation, one step at a time: the loop of ``generate_ids`` with num 1 (same seed, same ids)."""
        import torch

        from pipeline.models.sampling import sample_next, seeded_generator

        common = self._common(plan.theme, plan.sampling)
        prefix = self._prefix(plan.units, seed=plan.seed, common=common)
        eos_index, banned, sampling = common["eos_index"], common["banned"], plan.sampling
        model = self.loaded.model
        model.eval()
        device = next(model.parameters()).device
        generator = seeded_generator(plan.seed)
        themes = torch.full((1,), common["theme"], dtype=torch.long, device=device)
        with torch.no_grad():  # each step in its own block: the grad mode never stays off between pieces
            logits, state = model(torch.tensor([prefix], dtype=torch.long, device=device), themes=themes)
        for _ in range(plan.max_tokens):
            chosen = sample_next(logits[:, -1, :], generator=generator, banned=banned, **sampling)
            index = int(chosen[0])
            if index == eos_index:
                return
            yield index
            with torch.no_grad():
                logits, state = model(chosen.view(1, 1).to(device), themes=themes, state=state)

    def _common(self, theme: str | None, sampling: dict[str, Any]) -> dict[str, Any]:
        """Arguments of ``generate_ids`` shared by the title and the text: end token, banned tokens, theme slot, sampling."""
        from pipeline.models.language_model import theme_slot
        from pipeline.models.vocab import BOS, EOS, PAD, UNK

        vocab = self.loaded.vocab
        return dict(
            eos_index=vocab.stoi[EOS], banned=[vocab.stoi[PAD], vocab.stoi[BOS], vocab.stoi[UNK]], theme=theme_slot(theme), **sampling
        )

    def _prefix(self, units: list[str], *, seed: int, common: dict[str, Any]) -> list[int]:
        """``<s>``, a hidden title for article-level models, then the prompt: what the model reads before the first new token."""
        from pipeline.models.language_model import generate_ids
        from pipeline.models.vocab import BOS, EOS

        vocab = self.loaded.vocab
        start = [vocab.stoi[BOS]]
        if self.loaded.unit == "article":
            # An article-level model writes an article's title (［京都観光］...) right after <s>.
            # Sample a title first (not shown, same seed) so the prompt continues as a body sentence.
            title, _ = generate_ids(self.loaded.model, prefix=start, num=1, max_tokens=TITLE_MAX_TOKENS, seed=seed, **common)[0]
            start = [*start, *title, vocab.stoi[EOS]]
        return [*start, *vocab.encode(units)]

    def _sample(
        self, units: list[str], *, num: int, max_tokens: int, seed: int, theme: str | None, **sampling: Any
    ) -> list[tuple[list[int], bool]]:
        """Token ids of ``num`` continuations of ``units`` and whether each ended with ``</s>``."""
        from pipeline.models.language_model import generate_ids

        common = self._common(theme, sampling)
        prefix = self._prefix(units, seed=seed, common=common)
        return generate_ids(self.loaded.model, prefix=prefix, num=num, max_tokens=max_tokens, seed=seed, **common)
