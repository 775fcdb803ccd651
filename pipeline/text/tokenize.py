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

import gc
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.io import read_jsonl, usable_cores

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
    """Tokenize every KNBC sentence into ``knbc.jsonl``, then the extra corpora into the token store ``extra/``."""
    from pipeline.paths import EXTRA_TOKENS, TOKENS_META
    from pipeline.text.corpus import check_corpus

    section = ctx.section
    for name in section["extra_corpora"]:  # a missing, empty or non-UTF-8 corpus fails now, not after KNBC
        check_corpus(ctx.path(name), text_field=section["text_field"])
    started = time.perf_counter()
    sentence_count, token_count = _tokenize_knbc(ctx, split_mode=section["split_mode"])
    knbc_seconds = time.perf_counter() - started
    if section["extra_corpora"]:
        # The KNBC tokenizer (spaCy's POS rules + a mapped Sudachi dictionary) is not needed while the workers
        # run: free its memory before they start (a later stage loads it again in a second).
        load_tokenizer.cache_clear()
        gc.collect()
    workers = section["workers"] or usable_cores()
    started = time.perf_counter()
    store = _tokenize_extra(ctx, workers=workers)
    extra_seconds = time.perf_counter() - started
    meta = {
        "split_mode": section["split_mode"],
        "fields": list(FIELDS),
        "sentences": sentence_count,
        "tokens": token_count,
        "extra_store": EXTRA_TOKENS,
        "extra_sentences": store["sentences"],
        "extra_tokens": store["tokens"],
        "extra_skipped_bad_utf8_lines": sum(s["skipped_bad_utf8_lines"] for s in store["sources"]),
        "knbc_sentences_per_second": round(sentence_count / max(knbc_seconds, 1e-9), 1),
        "extra_seconds": round(extra_seconds, 3),
        "extra_workers": workers,
        "extra_engine": section["engine"],
        "tokenizer": "SudachiPy + spacy.lang.ja.resolve_pos (the ja_ginza tokenizer's fields)",
        "versions": _versions(),
    }
    with open(ctx.output(TOKENS_META), "w", encoding="utf-8") as handle:
        json.dump(meta, handle, ensure_ascii=False, indent=2)
    return {
        "sentences": sentence_count,
        "tokens": token_count,
        "extra_sentences": store["sentences"],
        "extra_tokens": store["tokens"],
        "skipped_lines": meta["extra_skipped_bad_utf8_lines"],
        "sentences_per_second": meta["knbc_sentences_per_second"],
    }


def _tokenize_knbc(ctx, *, split_mode: str) -> tuple[int, int]:
    from tqdm import tqdm

    from pipeline.paths import SENTENCES, TOKENS

    tokenizer = load_tokenizer(split_mode)
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
    return sentence_count, token_count


def _tokenize_extra(ctx, *, workers: int) -> dict[str, Any]:
    """The extra corpora into the token store (resumable: work shards live in the stage's work directory)."""
    from pipeline.paths import EXTRA_TOKENS
    from pipeline.text.sharded import ShardSettings, build_store

    section = ctx.section
    settings = ShardSettings(
        split_mode=section["split_mode"],
        fields=tuple(section["store_fields"]),
        shard_lines=section["shard_lines"],
        text_field=section["text_field"],
    )
    sources = [(name, ctx.path(name)) for name in section["extra_corpora"]]
    return build_store(
        sources, out_dir=ctx.output(EXTRA_TOKENS), work_dir=ctx.work_dir, settings=settings, workers=workers, engine=section["engine"]
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("sudachipy", "sudachidict-core", "spacy", "ginza", "ja-ginza"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return versions
