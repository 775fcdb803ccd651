"""Opinion (評判) records as token sequences for the seq2seq extractor, and back.

A KNBC evaluation is ``{evaluator, expression, type, polarity, target}``; the extractor
reads a sentence's GiNZA surface tokens and writes its evaluations as one token sequence::

    type <sep> expression tokens <sep> target tokens <rec> type <sep> ... </s>

An empty sequence (just ``</s>`` for the decoder) means "no opinion". The type is one
token (``批評＋``); expression and target are spelled with the sentence's own tokens when
their text is found in the sentence (so the decoder can copy them), else segmented
greedily into known tokens (targets such as ``[プリペイド携帯]`` are implicit: KNBC writes
them in brackets when the sentence does not say them).

Standard library only: the training stage uses this without spaCy or SudachiPy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

SEP = "<sep>"
REC = "<rec>"
# The KNBC corpus2 evaluation types, polar ones with their full-width sign as in the corpus.
TYPES = (
    "批評＋",
    "批評−",
    "メリット＋",
    "メリット−",
    "感情＋",
    "感情−",
    "採否＋",
    "採否−",
    "出来事＋",
    "出来事−",
    "当為",
    "要望",
)
_POLARITY = {"＋": "+", "−": "-"}


def polarity(evaluation_type: str) -> str | None:
    """``+`` / ``-`` from a type's last character; None for 当為, 要望."""
    return _POLARITY.get(evaluation_type[-1:]) if evaluation_type else None


def strip_brackets(value: str) -> str:
    """``[プリペイド携帯]`` -> ``プリペイド携帯`` (KNBC brackets implicit evaluators and targets)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
        return value[1:-1].strip()
    return value


# ------------------------------------------------------------------ spans
def token_offsets(text: str, tokens: Sequence[str]) -> list[tuple[int, int] | None]:
    """Character ``(start, end)`` of each token in ``text``, searched left to right (None when not found)."""
    offsets: list[tuple[int, int] | None] = []
    position = 0
    for token in tokens:
        start = text.find(token, position)
        if start < 0:
            offsets.append(None)
            continue
        offsets.append((start, start + len(token)))
        position = start + len(token)
    return offsets


def find_span(text: str, value: str) -> list[int] | None:
    """``[start, end)`` of the first occurrence of ``value`` in ``text``; None when absent or empty."""
    if not value:
        return None
    start = text.find(value)
    return None if start < 0 else [start, start + len(value)]


def covering_tokens(offsets: Sequence[tuple[int, int] | None], span: Sequence[int]) -> tuple[int, int] | None:
    """Token index range ``[first, last + 1)`` of the tokens overlapping the character ``span``."""
    inside = [i for i, offset in enumerate(offsets) if offset is not None and offset[0] < span[1] and offset[1] > span[0]]
    return (inside[0], inside[-1] + 1) if inside else None


def segment(value: str, known: set[str], *, longest: int = 12) -> list[str]:
    """Greedy longest-match segmentation of ``value`` into ``known`` tokens, single characters otherwise."""
    tokens: list[str] = []
    position = 0
    while position < len(value):
        for size in range(min(longest, len(value) - position), 0, -1):
            piece = value[position : position + size]
            if size == 1 or piece in known:
                tokens.append(piece)
                position += size
                break
    return tokens


def value_tokens(text: str, tokens: Sequence[str], offsets, value: str, known: set[str]) -> list[str]:
    """``value`` as tokens: the sentence's tokens covering it when found there, else segmented."""
    span = find_span(text, value)
    if span is not None:
        covered = covering_tokens(offsets, span)
        if covered is not None:
            return list(tokens[covered[0] : covered[1]])
    return segment(value, known)


# --------------------------------------------------------- linearization
def linearize(records: Iterable[dict[str, Any]], *, text: str, tokens: Sequence[str], known: set[str] | None = None) -> list[str]:
    """``records`` (type, expression, target) as the decoder's target tokens (without ``</s>``)."""
    offsets = token_offsets(text, tokens)
    known = set(tokens) | (known or set())
    output: list[str] = []
    for record in records:
        if output:
            output.append(REC)
        output.append(record["type"])
        output.append(SEP)
        output += value_tokens(text, tokens, offsets, record["expression"], known)
        output.append(SEP)
        output += value_tokens(text, tokens, offsets, strip_brackets(record.get("target") or ""), known)
    return output


def parse(output: Sequence[str], *, text: str | None = None) -> list[dict[str, Any]]:
    """Records from decoder tokens (the inverse of :func:`linearize`); malformed pieces are dropped.

    A record needs a known type and a non-empty expression; a missing target is "".
    With ``text``, each record gets ``expression_span`` / ``target_span`` (None when not in ``text``).
    """
    records: list[dict[str, Any]] = []
    chunk: list[str] = []
    for token in [*output, REC]:
        if token != REC:
            chunk.append(token)
            continue
        record = _parse_record(chunk)
        chunk = []
        if record is None or record in [{k: r[k] for k in ("type", "expression", "target")} for r in records]:
            continue  # malformed or repeated
        if text is not None:
            record["expression_span"] = find_span(text, record["expression"])
            record["target_span"] = find_span(text, record["target"])
        records.append(record)
    return [{**r, "polarity": polarity(r["type"])} for r in records]


def _parse_record(chunk: list[str]) -> dict[str, Any] | None:
    if len(chunk) < 3 or chunk[0] not in TYPES or chunk[1] != SEP:
        return None
    rest = chunk[2:]
    cut = rest.index(SEP) if SEP in rest else len(rest)
    expression = "".join(token for token in rest[:cut] if token != SEP)
    target = "".join(token for token in rest[cut + 1 :] if token != SEP)
    if not expression:
        return None
    return {"type": chunk[0], "expression": expression, "target": target}


def gold_records(evaluations: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The prepared sentence table's evaluations as records (brackets of implicit targets removed)."""
    return [
        {"type": e["type"], "expression": e["expression"], "target": strip_brackets(e.get("target") or ""), "polarity": polarity(e["type"])}
        for e in evaluations
        if e.get("type") in TYPES and e.get("expression")
    ]
