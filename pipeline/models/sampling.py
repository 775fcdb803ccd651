"""Choosing the next token from a language model's logits: temperature, top-k, top-p.

Imports torch only. Every function works on a batch of rows, ``logits`` of
shape ``[batch, vocab]``; a removed token gets ``-inf`` so that softmax gives it
exactly zero probability.

The order follows common practice: divide by the temperature, keep the top-k,
then keep the nucleus (top-p) of what is left. Randomness comes only from the
``torch.Generator`` passed in, so one seed gives one text.
"""

from __future__ import annotations

import math

import torch

from pipeline.errors import ConfigError

# Below this temperature sampling is replaced by argmax: dividing logits by a
# tiny number overflows to inf/nan long before the distribution is a delta.
GREEDY_TEMPERATURE = 1e-5


def validate_sampling(*, temperature: float, top_k: int, top_p: float) -> None:
    """Raise ``ConfigError`` E109 (a ``ValueError``) for settings that make no sampling sense.

    Temperature 0 is valid: it means greedy decoding (argmax).
    """
    if not (temperature >= 0.0) or math.isinf(temperature):
        raise ConfigError(
            "E109", f"temperature must be a finite number >= 0, got {temperature!r}.", hint="0 is greedy decoding; 0.8 is a common choice."
        )
    if top_k < 0:
        raise ConfigError("E109", f"top_k must be >= 0 (0 = off), got {top_k!r}.", hint="For example 40; 0 turns top-k filtering off.")
    if not (0.0 < top_p <= 1.0):
        raise ConfigError("E109", f"top_p must be in (0, 1], got {top_p!r}.", hint="For example 0.9; 1 turns nucleus filtering off.")


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` highest logits per row (``k = 0`` or ``k >= vocab`` keeps all).

    Ties with the k-th value are kept too, so the kept set never depends on how
    ``topk`` orders equal values.
    """
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth_value = torch.topk(logits, k, dim=-1).values[..., -1:]  # [batch, 1]
    return logits.masked_fill(logits < kth_value, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose mass reaches ``p``.

    A token is kept when the probability mass of the tokens ranked strictly
    above it is below ``p``; the most likely token is therefore always kept.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # [batch, vocab]
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # mass of strictly higher-ranked tokens
    remove_sorted = mass_above >= p
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Tempered, top-k and top-p filtered logits (``[batch, vocab]``, float32)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / max(temperature, GREEDY_TEMPERATURE)
    return top_p_filter(top_k_filter(logits, top_k), top_p)


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    banned: list[int] | None = None,
) -> torch.Tensor:
    """One token index per row of ``logits`` (``[batch, vocab]`` -> ``[batch]``, on CPU).

    ``banned`` indices (padding, sentence start, unknown) are never chosen.
    ``temperature`` below ``GREEDY_TEMPERATURE`` (including 0) is argmax.
    Sampling runs on CPU with ``generator``, so a seed gives the same choice
    whatever device produced the logits (up to that device's arithmetic).
    """
    validate_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    logits = logits.detach().to("cpu", torch.float32)
    if banned:
        logits = logits.clone()
        logits[:, banned] = float("-inf")
    if temperature < GREEDY_TEMPERATURE:
        return logits.argmax(dim=-1)
    filtered = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    probs = torch.softmax(filtered, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator with its own stream: sampling does not touch (or depend on) the global RNG."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator
