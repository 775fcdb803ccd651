"""GiNZA tokenization: surface, lemma, Sudachi normalized form, UD POS and Sudachi tag.

ja_ginza's tokens come from spaCy's ``JapaneseTokenizer``: SudachiPy (split mode
and dictionary from the ja_ginza config) plus spaCy's Japanese tag -> UD POS
rules (``spacy.lang.ja.resolve_pos``). Those two parts are all that the five
fields need: the tok2vec, parser, NER and morphologizer of the full pipeline do
not change them. So this module uses exactly those two parts, without
building spaCy ``Doc`` objects or the split-mode A/B sub-token lists that the
tokenizer computes for the parser. A test checks that the fields match
``nlp.tokenizer`` of ja_ginza token for token.

Texts longer than Sudachi's input limit are split at sentence ends (or, for a
single huge sentence, at character boundaries) instead of failing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError
from pipeline.io import read_jsonl

logger = logging.getLogger(__name__)

FIELDS = ("surface", "lemma", "norm", "pos", "tag")
SPLIT_MODES = ("A", "B", "C")
# SudachiPy rejects inputs longer than this many UTF-8 bytes.
SUDACHI_MAX_BYTES = 49149
# Stay below the limit with a margin: the limit counts Sudachi's internal normalized text.
CHUNK_MAX_BYTES = 16384
_SENTENCE_END = re.compile(r"(?<=[。！？!?\n])")


def split_long_text(text: str, *, max_bytes: int = CHUNK_MAX_BYTES) -> list[str]:
    """Split ``text`` into pieces of at most ``max_bytes`` UTF-8 bytes.

    Pieces end at sentence ends where possible; a single over-long sentence is cut
    at character boundaries. Joining the pieces gives back ``text``.
    """
    if len(text.encode("utf-8")) <= max_bytes:
        return [text]
    pieces: list[str] = []
    current, current_bytes = [], 0
    for sentence in _SENTENCE_END.split(text):
        if not sentence:
            continue
        size = len(sentence.encode("utf-8"))
        if size > max_bytes:
            if current:
                pieces.append("".join(current))
                current, current_bytes = [], 0
            pieces.extend(_split_by_bytes(sentence, max_bytes))
            continue
        if current_bytes + size > max_bytes:
            pieces.append("".join(current))
            current, current_bytes = [], 0
        current.append(sentence)
        current_bytes += size
    if current:
        pieces.append("".join(current))
    return pieces


def _split_by_bytes(text: str, max_bytes: int) -> list[str]:
    pieces, start, size = [], 0, 0
    for index, char in enumerate(text):
        width = len(char.encode("utf-8"))
        if size + width > max_bytes:
            pieces.append(text[start:index])
            start, size = index, 0
        size += width
    pieces.append(text[start:])
    return pieces


class Tokenizer:
    """GiNZA's tokenizer fields at SudachiPy speed. ``tokenize(text)`` returns a dict of lists.

    >>> Tokenizer("C").tokenize("食べた")["lemma"]
    ['食べる', 'た']
    """

    def __init__(self, split_mode: str = "C", *, with_pos: bool = True) -> None:
        """``with_pos=False`` skips UD POS (empty ``pos`` list) and so never imports spaCy:
        word-similarity queries only need the normalized form and load in a fraction of the time."""
        if split_mode not in SPLIT_MODES:
            raise ConfigError("E109", f"Unknown Sudachi split mode '{split_mode}'.", hint="Valid split modes: A, B, C.")
        try:
            from sudachipy import Dictionary, SplitMode

            if with_pos:
                from spacy.lang.ja import resolve_pos
                from spacy.parts_of_speech import NAMES as POS_NAMES
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "E110", f"Tokenization needs spaCy and SudachiPy ({exc}).", hint="Install them: pip install ginza ja-ginza"
            ) from None
        self.split_mode = split_mode
        self.with_pos = with_pos
        if with_pos:
            self._resolve_pos = resolve_pos
            self._pos_names = POS_NAMES
        # Same dictionary as spaCy's JapaneseTokenizer (the installed SudachiDict), same split mode.
        self._dictionary = Dictionary()
        self._sudachi = self._dictionary.create(mode=getattr(SplitMode, split_mode))
        self._tag_of_pos_id: dict[int, str] = {}

    def _tag(self, morpheme) -> str:
        pos_id = morpheme.part_of_speech_id()
        tag = self._tag_of_pos_id.get(pos_id)
        if tag is None:
            # spaCy's tag: the first four POS levels joined by '-', without '*'
            tag = "-".join(part for part in morpheme.part_of_speech()[:4] if part != "*")
            self._tag_of_pos_id[pos_id] = tag
        return tag

    def tokenize(self, text: str) -> dict[str, list[str]]:
        """Tokens of ``text`` as ``{"surface": [...], "lemma": [...], "norm": [...], "pos": [...], "tag": [...]}``.

        Whitespace is dropped (spaCy keeps it as token whitespace, not as words).
        """
        surfaces: list[str] = []
        lemmas: list[str] = []
        norms: list[str] = []
        tags: list[str] = []
        for piece in split_long_text(text):
            for morpheme in self._sudachi.tokenize(piece):
                surface = morpheme.surface()
                if not surface or surface.isspace():
                    continue
                surfaces.append(surface)
                # spaCy: "if there's no lemma info (it's an unk) just use the surface"
                lemmas.append(morpheme.dictionary_form() or surface)
                norms.append(morpheme.normalized_form())
                tags.append(self._tag(morpheme))
        pos: list[str] = []
        if not self.with_pos:
            return {"surface": surfaces, "lemma": lemmas, "norm": norms, "pos": pos, "tag": tags}
        next_pos = None
        names = self._pos_names
        for index, (surface, tag) in enumerate(zip(surfaces, tags, strict=True)):
            if next_pos:  # decided by the previous token's bigram rule, as in spaCy
                pos.append(names[next_pos])
                next_pos = None
                continue
            current, next_pos = self._resolve_pos(surface, tag, tags[index + 1] if index + 1 < len(tags) else None)
            pos.append(names[current])
        return {"surface": surfaces, "lemma": lemmas, "norm": norms, "pos": pos, "tag": tags}

    def tokenize_many(self, texts: Iterable[str]) -> Iterator[dict[str, list[str]]]:
        for text in texts:
            yield self.tokenize(text)


@lru_cache(maxsize=8)
def load_tokenizer(split_mode: str = "C", *, with_pos: bool = True) -> Tokenizer:
    """A cached ``Tokenizer``: building one loads the Sudachi dictionary."""
    return Tokenizer(split_mode, with_pos=with_pos)


def tokenized_split_mode(project_dir: str | os.PathLike) -> str:
    """The split mode the project's tokens were made with (queries must use the same)."""
    from pipeline.paths import TOKENS_META

    path = Path(project_dir) / TOKENS_META
    if path.exists():
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)["split_mode"]
    return "C"


def read_token_rows(path: str | os.PathLike, *, split: str | None = None) -> Iterator[dict]:
    """Rows of ``data/tokens/knbc.jsonl``, optionally of one split."""
    for row in read_jsonl(path):
        if split is None or row.get("split") == split:
            yield row


# ---------------------------------------------------------------------- stage
def tokenize_stage(ctx) -> dict[str, Any]:
    """Tokenize every KNBC sentence, then stream the extra corpora line by line."""
    from tqdm import tqdm

    from pipeline.io import read_jsonl
    from pipeline.paths import EXTRA_TOKENS, SENTENCES, TOKENS, TOKENS_META

    split_mode = ctx.section["split_mode"]
    tokenizer = load_tokenizer(split_mode)
    started = time.perf_counter()
    sentence_count = token_count = 0
    with open(ctx.output(TOKENS), "w", encoding="utf-8") as out:
        rows = read_jsonl(ctx.input(SENTENCES))
        for row in tqdm(rows, desc="tokenize KNBC", unit=" sentences", mininterval=1.0, disable=None):
            tokens = tokenizer.tokenize(row["text"])
            record = {key: row[key] for key in ("sentence_id", "article_id", "theme", "sentiment", "split", "position", "text")}
            record.update(tokens)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            sentence_count += 1
            token_count += len(tokens["surface"])
    knbc_seconds = time.perf_counter() - started

    extra_docs = extra_tokens = 0
    with open(ctx.output(EXTRA_TOKENS), "w", encoding="utf-8") as out:
        for source in ctx.section["extra_corpora"]:
            for line_number, tokens in _stream_corpus(ctx.input(source), tokenizer):
                out.write(json.dumps({"source": source, "line": line_number, **tokens}, ensure_ascii=False) + "\n")
                extra_docs += 1
                extra_tokens += len(tokens["surface"])
    meta = {
        "split_mode": split_mode,
        "fields": list(FIELDS),
        "sentences": sentence_count,
        "tokens": token_count,
        "extra_documents": extra_docs,
        "extra_tokens": extra_tokens,
        "knbc_sentences_per_second": round(sentence_count / max(knbc_seconds, 1e-9), 1),
        "tokenizer": "SudachiPy + spacy.lang.ja.resolve_pos (the ja_ginza tokenizer's fields)",
        "versions": _versions(),
    }
    with open(ctx.output(TOKENS_META), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, ensure_ascii=False, indent=2)
    return {
        "sentences": sentence_count,
        "tokens": token_count,
        "extra_documents": extra_docs,
        "sentences_per_second": meta["knbc_sentences_per_second"],
    }


def _stream_corpus(path: Path, tokenizer: Tokenizer) -> Iterator[tuple[int, dict[str, list[str]]]]:
    """(line number, tokens) for every non-empty line; reads one line at a time."""
    from tqdm import tqdm

    from pipeline.io import open_text

    try:
        handle = open_text(path)
        with handle:
            for line_number, line in enumerate(
                tqdm(handle, desc=f"tokenize {path.name}", unit=" lines", mininterval=1.0, disable=None), start=1
            ):
                line = line.strip()
                if line:
                    yield line_number, tokenizer.tokenize(line)
    except UnicodeDecodeError as exc:
        raise InputError(
            "E206",
            f"Extra corpus {path} is not UTF-8 text ({exc}).",
            hint="Convert it with `iconv -t UTF-8`, or remove it from tokenize.extra_corpora.",
        ) from None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("sudachipy", "sudachidict-core", "spacy", "ginza", "ja-ginza"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions
