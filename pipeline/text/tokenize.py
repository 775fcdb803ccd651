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
import threading
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
    if len(text) <= max_bytes // 4 or len(text.encode("utf-8")) <= max_bytes:  # a character is at most 4 bytes
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

    What the fields cost per token is what SudachiPy costs: three reads of the morpheme (surface,
    dictionary form, normalized form) and its POS id. Everything that depends on the POS alone (the tag,
    spaCy's tag -> UD POS rules for it) is worked out once per POS id and kept (``_kinds``), and the
    ``MorphemeList`` that SudachiPy fills is reused instead of being allocated per text. Each thread gets its own
    Sudachi tokenizer and list, so one ``Tokenizer`` may serve several threads at once.
    """

    def __init__(self, split_mode: str = "C", *, with_pos: bool = True) -> None:
        """``with_pos=False`` skips UD POS (empty ``pos`` list) and so never imports spaCy:
        word-similarity queries only need the normalized form and load in a fraction of the time."""
        if split_mode not in SPLIT_MODES:
            raise ConfigError("E109", f"Unknown Sudachi split mode '{split_mode}'.", hint="Valid split modes: A, B, C.")
        try:
            from sudachipy import Dictionary, SplitMode

            if with_pos:
                from spacy.lang.ja import TAG_BIGRAM_MAP, TAG_MAP, TAG_ORTH_MAP, resolve_pos
                from spacy.parts_of_speech import NAMES as POS_NAMES
                from spacy.symbols import POS
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "E110", f"Tokenization needs spaCy and SudachiPy ({exc}).", hint="Install them: pip install ginza ja-ginza"
            ) from None
        self.split_mode = split_mode
        self.with_pos = with_pos
        if with_pos:
            self._resolve_pos = resolve_pos
            self._pos_names = POS_NAMES
            self._pos_tables = (TAG_ORTH_MAP, TAG_BIGRAM_MAP, TAG_MAP, POS)
        # Same dictionary as spaCy's JapaneseTokenizer (the installed SudachiDict), same split mode.
        self._dictionary = Dictionary()
        self._sudachi_mode = getattr(SplitMode, split_mode)
        # POS id -> (tag, UD POS by the tag alone, {orth: UD POS}, {next tag: (UD POS, next token's UD POS)})
        self._kinds: dict[int, tuple] = {}
        self._unmapped_tags = False  # set when a tag has no entry in spaCy's TAG_MAP (see _ud_pos)
        self._local = threading.local()

    def _kind(self, morpheme, pos_id: int) -> tuple:
        """What depends on the POS id only, worked out on its first occurrence."""
        # spaCy's tag: the first four POS levels joined by '-', without '*'
        tag = "-".join(part for part in morpheme.part_of_speech()[:4] if part != "*")
        kind = (tag, None, None, None)
        if self.with_pos:
            kind = (tag, *self._pos_rules(tag))
        self._kinds[pos_id] = kind
        return kind

    def _pos_rules(self, tag: str) -> tuple:
        """spacy.lang.ja.resolve_pos's tables for one tag, as UD POS names (``None`` where TAG_MAP lacks a tag)."""
        orth_map, bigram_map, tag_map, pos_key = self._pos_tables
        names = self._pos_names
        unigram = names[tag_map[tag][pos_key]] if pos_key in tag_map.get(tag, ()) else None
        self._unmapped_tags = self._unmapped_tags or unigram is None
        orth = {word: names[pos] for word, pos in orth_map[tag].items()} if tag in orth_map else None
        bigram = {
            second: (unigram if current is None else names[current], names[following] if following else None)
            for (first, second), (current, following) in bigram_map.items()
            if first == tag
        }
        return unigram, orth, bigram or None

    def _morphemes(self, piece: str):
        """SudachiPy's morphemes of ``piece``, from this thread's Sudachi tokenizer, into its reused ``MorphemeList``.

        A Sudachi tokenizer fails in a second thread while it runs ("Already borrowed"), and a ``Morpheme`` points
        into its list (none may outlive the loop over it: ``tokenize`` keeps none), so each thread has its own of
        both, made on its first text (they share the loaded dictionary).
        """
        try:
            sudachi, out = self._local.sudachi
        except AttributeError:
            sudachi = self._dictionary.create(mode=self._sudachi_mode)
            out = sudachi.tokenize("")
            self._local.sudachi = (sudachi, out)
        return sudachi.tokenize(piece, out=out)

    def tokenize(self, text: str) -> dict[str, list[str]]:
        """Tokens of ``text`` as ``{"surface": [...], "lemma": [...], "norm": [...], "pos": [...], "tag": [...]}``.

        Whitespace is dropped (spaCy keeps it as token whitespace, not as words).
        """
        surfaces: list[str] = []
        lemmas: list[str] = []
        norms: list[str] = []
        kinds: list[tuple] = []
        known = self._kinds
        for piece in split_long_text(text):
            for morpheme in self._morphemes(piece):
                surface = morpheme.surface()
                if not surface or surface.isspace():
                    continue
                pos_id = morpheme.part_of_speech_id()
                kinds.append(known.get(pos_id) or self._kind(morpheme, pos_id))
                surfaces.append(surface)
                # spaCy: "if there's no lemma info (it's an unk) just use the surface"
                lemmas.append(morpheme.dictionary_form() or surface)
                norms.append(morpheme.normalized_form())
        tags = [kind[0] for kind in kinds]
        pos = self._ud_pos(surfaces, kinds, tags) if self.with_pos else []
        return {"surface": surfaces, "lemma": lemmas, "norm": norms, "pos": pos, "tag": tags}

    def surfaces_and_norms(self, text: str) -> dict[str, list[str]]:
        """``tokenize(text)``'s ``surface`` and ``norm`` lists alone (the token store's usual fields), without
        reading the dictionary form and POS of every morpheme for fields that nobody keeps."""
        surfaces: list[str] = []
        norms: list[str] = []
        for piece in split_long_text(text):
            for morpheme in self._morphemes(piece):
                surface = morpheme.surface()
                if not surface or surface.isspace():
                    continue
                surfaces.append(surface)
                norms.append(morpheme.normalized_form())
        return {"surface": surfaces, "norm": norms}

    def _ud_pos(self, surfaces: list[str], kinds: list[tuple], tags: list[str]) -> list[str]:
        """UD POS by spacy.lang.ja.resolve_pos's rules (orth map, tag bigram map, tag map), from the kept tables."""
        pos: list[str] = []
        decided = None  # set by the previous token's bigram rule, as in spaCy
        last = len(kinds) - 1
        for index, (_, unigram, orth, bigram) in enumerate(kinds):
            if decided:
                pos.append(decided)
                decided = None
                continue
            if orth is not None:
                name = orth.get(surfaces[index])
                if name is not None:
                    pos.append(name)
                    continue
            if bigram is not None and index < last:
                rule = bigram.get(tags[index + 1])
                if rule is not None:
                    name, decided = rule
                    pos.append(name)
                    continue
            pos.append(unigram)
        if self._unmapped_tags and None in pos:
            return self._ud_pos_by_spacy(surfaces, tags)  # a tag outside TAG_MAP: spaCy's function, and its KeyError
        return pos

    def _ud_pos_by_spacy(self, surfaces: list[str], tags: list[str]) -> list[str]:
        pos: list[str] = []
        next_pos = None
        names = self._pos_names
        for index, (surface, tag) in enumerate(zip(surfaces, tags, strict=True)):
            if next_pos:
                pos.append(names[next_pos])
                next_pos = None
                continue
            current, next_pos = self._resolve_pos(surface, tag, tags[index + 1] if index + 1 < len(tags) else None)
            pos.append(names[current])
        return pos

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
