"""The text of the ``pretrain_lm`` stage: a vocabulary and id streams (numpy only, no torch).

What goes in:

* KNBC's **training** articles (``data/tokens/knbc.jsonl``, split == train; dev and test never
  train; the test articles are scored at the end);
* the token store of ``tokenize.extra_corpora`` (``data/tokens/extra/``), streamed shard by shard.
  Without one (or with an empty one) the stage falls back to KNBC's training articles, with a warning.

**Held apart:** 2% of the documents (a work of Aozora, a JSONL row; KNBC articles in the fallback),
chosen by a hash of the document's index, so the choice is fixed whatever the settings. They never
train; their perplexity is the dev metric (early stopping) and is reported.

**Budget:** ``max_tokens`` training tokens per direction. When the corpus is larger, a systematic
sample of blocks of ``BLOCK_SENTENCES`` consecutive sentences, spread over the whole corpus, is
kept; when it is smaller, the stream repeats (several passes).

**Vocabulary:** the words seen at least ``min_count`` times in that training text, most frequent
first, plus ``<pad>``, ``<unk>`` and ``</s>``. A frequency cut-off with ``<unk>`` rather than subwords
or characters: the classifier it initialises is word-level on the same token field, with its own
word vocabulary, so an LM row must mean one classifier word; rare words get too few updates
to learn a useful row anyway, and ``<unk>`` gives them one shared, trained row.

A stream is the sentences' ids, each sentence followed by ``</s>``; the backward LM reads it reversed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, InputError
from pipeline.models.vocab import EOS, PAD, UNK, Vocab
from pipeline.text.token_store import TokenStore, is_store
from pipeline.text.tokenize import read_token_rows

logger = logging.getLogger(__name__)

SPECIALS = (PAD, UNK, EOS)
HELD_APART_PERCENT = 2
EVAL_BATCH = 16  # parallel streams of the held-apart perplexity
MIN_DEV_TOKENS = 2 * EVAL_BATCH  # fewer, and there is no perplexity to stop on
BLOCK_SENTENCES = 50  # sentences kept or skipped together when sampling (keeps local context intact)
AUTO_VOCAB_LIMIT = 50_000
_EOS_MARK = -1  # </s> in the store-id streams, before mapping to the LM vocabulary


@dataclass
class PretrainText:
    """The vocabulary and the id streams (int64) the two language models train and are scored on."""

    vocab: Vocab
    train: np.ndarray  # the training stream (KNBC train articles and corpus blocks, shuffled by block)
    dev: np.ndarray  # held-apart documents, at most eval_tokens
    knbc_test: np.ndarray  # KNBC test articles, at most eval_tokens
    stats: dict = field(default_factory=dict)


def held_apart(index: int) -> bool:
    """Whether document ``index`` is held apart: a fixed 2% by a hash of the index."""
    digest = hashlib.sha256(f"pretrain-dev-{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_APART_PERCENT


def held_apart_set(count: int) -> set[int]:
    """The held-apart documents among ``count``: the 2%, or the first document when the hash picks none."""
    chosen = {index for index in range(count) if held_apart(index)}
    return chosen or ({0} if count > 1 else set())


# -------------------------------------------------------------------- KNBC
def knbc_articles(tokens_path: Path, *, token_field: str) -> tuple[list[list[list[str]]], list[list[str]]]:
    """(training articles as lists of sentences, in article order; test sentences)."""
    articles: dict[str, list[list[str]]] = {}
    test: list[list[str]] = []
    for row in read_token_rows(tokens_path):
        if row["split"] == "train":
            articles.setdefault(row.get("article_id", row["sentence_id"]), []).append(row[token_field])
        elif row["split"] == "test":
            test.append(row[token_field])
    return [articles[key] for key in sorted(articles)], test


# -------------------------------------------------------------------- store
def open_store(store_path: Path, *, token_field: str) -> TokenStore | None:
    """The token store, or None (with a warning) when there is none or it is empty."""
    if not is_store(store_path) or TokenStore.open(store_path).sentences == 0:
        logger.warning("pretrain_lm: no unlabelled corpus (tokenize.extra_corpora is empty); pretraining on KNBC's training articles only.")
        return None
    store = TokenStore.open(store_path)
    if token_field not in store.fields:
        raise ConfigError(
            "E141",
            f"The token store {store_path} keeps {', '.join(store.fields)}, not {token_field!r} (classifier.token_field).",
            hint=f"Add {token_field!r} to tokenize.store_fields and rerun tokenize.",
        )
    return store


def _store_layout(store: TokenStore, field_name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per shard: (sentence lengths, document index of each sentence), from one pass over the shards."""
    layout, documents = [], 0
    for _ids, offsets, new_doc in store.iter_shards(field_name):
        doc = documents + np.cumsum(new_doc.astype(np.int64)) - 1  # the first sentence of a store starts a document
        documents = int(doc[-1]) + 1 if len(doc) else documents
        layout.append((np.diff(offsets), doc))
    return layout


def _sample_blocks(count: int, fraction: float) -> np.ndarray:
    """Which of ``count`` blocks a systematic sample of ``fraction`` keeps (bool), spread evenly."""
    if fraction >= 1.0:
        return np.ones(count, dtype=bool)
    position = np.arange(count + 1) * fraction
    return np.floor(position[1:]) > np.floor(position[:-1])


def _train_blocks(is_held: np.ndarray) -> int:
    """How many blocks of a shard (``is_held``: one bool per sentence) hold a training sentence."""
    return sum(1 for start in range(0, len(is_held), BLOCK_SENTENCES) if not is_held[start : start + BLOCK_SENTENCES].all())


def store_blocks(store: TokenStore, *, field_name: str, budget: int, eval_tokens: int) -> tuple[list[np.ndarray], np.ndarray, dict]:
    """(training blocks of store ids with ``_EOS_MARK`` after each sentence, the held-apart stream, stats)."""
    layout = _store_layout(store, field_name)
    documents = int(layout[-1][1][-1]) + 1 if layout and len(layout[-1][1]) else 0
    held = held_apart_set(documents)
    held_ids = list(held)
    train_tokens = sum(int(lengths[~np.isin(doc, held_ids)].sum()) for lengths, doc in layout)
    # which training blocks the sample keeps, known before any block is built: memory follows the budget
    keep = _sample_blocks(sum(_train_blocks(np.isin(doc, held_ids)) for _, doc in layout), min(1.0, budget / max(1, train_tokens)))
    blocks: list[np.ndarray] = []
    dev: list[np.ndarray] = []
    dev_size, block_index = 0, 0
    for (ids, offsets, _), (_lengths, doc) in zip(store.iter_shards(field_name), layout, strict=True):
        is_held = np.isin(doc, held_ids)
        bounds = offsets.tolist()
        for start in range(0, len(doc), BLOCK_SENTENCES):
            rows = range(start, min(start + BLOCK_SENTENCES, len(doc)))
            if dev_size < eval_tokens:
                for i in (i for i in rows if is_held[i]):
                    dev.append(np.append(ids[bounds[i] : bounds[i + 1]].astype(np.int64), _EOS_MARK))
                    dev_size += len(dev[-1])
            train_rows = [i for i in rows if not is_held[i]]
            if train_rows:
                if keep[block_index]:
                    blocks.append(
                        np.concatenate([np.append(ids[bounds[i] : bounds[i + 1]].astype(np.int64), _EOS_MARK) for i in train_rows])
                    )
                block_index += 1
    stats = {"corpus_documents": documents, "held_apart_documents": len(held), "corpus_train_tokens": train_tokens}
    dev_stream = np.concatenate(dev)[:eval_tokens] if dev else np.zeros(0, dtype=np.int64)
    return blocks, dev_stream, stats


# -------------------------------------------------------------------- assembly
def build_vocab(counts: np.ndarray, words: list[str], *, min_count: int, vocab_size: int) -> Vocab:
    """Words with ``counts >= min_count``, most frequent first; ``vocab_size`` (> 0) of them, or all (at most 50,000)."""
    order = np.argsort(-counts, kind="stable")
    candidates = [words[i] for i in order if counts[i] >= min_count and words[i] not in SPECIALS]
    if vocab_size and len(candidates) < vocab_size:
        raise InputError(
            "E280",
            f"The pretraining text has {len(candidates)} distinct words seen at least {min_count} times, "
            f"but pretrain_lm.vocab_size asks for {vocab_size}.",
            hint="Add unlabelled text (tokenize.extra_corpora), lower pretrain_lm.vocab_size or pretrain_lm.min_count, "
            "or set pretrain_lm.vocab_size = 0 (every word seen min_count times).",
        )
    return Vocab(list(SPECIALS) + candidates[: vocab_size or AUTO_VOCAB_LIMIT])


def _encode_sentences(sentences: list[list[str]], index: dict[str, int]) -> np.ndarray:
    """Sentences of strings -> one id array over ``index`` (new words get new ids), ``_EOS_MARK`` after each."""
    out: list[int] = []
    for sentence in sentences:
        out.extend(index.setdefault(word, len(index)) for word in sentence)
        out.append(_EOS_MARK)
    return np.asarray(out, dtype=np.int64)


def _lookup(vocab: Vocab, index: dict[str, int]) -> np.ndarray:
    """Store/KNBC id -> vocabulary row (``<unk>`` for words outside it); the last slot (id -1) is ``</s>``."""
    lookup = np.full(len(index) + 1, vocab.unk_index, dtype=np.int64)
    lookup[-1] = vocab.stoi[EOS]
    for word, row in vocab.stoi.items():
        if word in index:
            lookup[index[word]] = row
    return lookup


def build_pretrain_text(
    *, tokens_path: Path, store_path: Path, section: dict, token_field: str, vocab: Vocab | None = None
) -> PretrainText:
    """Everything :class:`PretrainText` holds, from the KNBC tokens and the token store (see the module docstring).

    ``vocab``: a fixed vocabulary (the generator's, built from KNBC) instead of one built from this text;
    its other words become ``<unk>``.
    """
    articles, test_sentences = knbc_articles(tokens_path, token_field=token_field)
    store = open_store(store_path, token_field=token_field)
    words = list(store.vocab(token_field)) if store is not None else []
    index = {word: i for i, word in enumerate(words)}  # store ids first, KNBC-only words appended
    held = held_apart_set(len(articles)) if store is None else set()
    knbc_blocks = [_encode_sentences(article, index) for i, article in enumerate(articles) if i not in held]
    knbc_tokens = sum(len(block) for block in knbc_blocks)
    stats: dict = {"knbc_train_articles": len(knbc_blocks), "knbc_train_tokens": knbc_tokens, "corpus": store is not None}
    if store is not None:
        corpus_blocks, dev, corpus_stats = store_blocks(
            store, field_name=token_field, budget=max(0, section["max_tokens"] - knbc_tokens), eval_tokens=section["eval_tokens"]
        )
        stats.update(corpus_stats)
    else:
        corpus_blocks = []
        dev = np.concatenate([_encode_sentences(articles[i], index) for i in sorted(held)])[: section["eval_tokens"]]
        stats["held_apart_articles"] = len(held)
    if len(dev) < MIN_DEV_TOKENS:
        # Without a dev perplexity early stopping never sees an improvement and would keep the initial weights.
        raise InputError(
            "E281",
            f"The held-apart documents of the pretraining text hold {len(dev)} tokens; at least {MIN_DEV_TOKENS} are needed "
            f"to measure the language models ({stats.get('corpus_documents', len(articles))} documents in all).",
            hint="Split the corpus into documents (a blank line between documents in a text corpus, one row per document in JSONL), or add text.",
        )
    test = _encode_sentences(test_sentences, index)[: section["eval_tokens"]]
    blocks = knbc_blocks + corpus_blocks
    # Blocks in a fixed shuffled order: every round of training sees KNBC and every part of the corpus.
    order = np.random.default_rng(section["seed"]).permutation(len(blocks))
    train = np.concatenate([blocks[i] for i in order]) if blocks else np.zeros(0, dtype=np.int64)
    if vocab is None:
        words = sorted(index, key=index.get)
        counts = np.bincount(train[train >= 0], minlength=len(words))
        vocab = build_vocab(counts, words, min_count=section["min_count"], vocab_size=section["vocab_size"])
    lookup = _lookup(vocab, index)
    text = PretrainText(vocab=vocab, train=lookup[train], dev=lookup[dev], knbc_test=lookup[test], stats=stats)
    stats.update(train_tokens=len(train), dev_tokens=len(dev), knbc_test_tokens=len(test), vocab_size=len(vocab))
    for name in ("train", "dev", "knbc_test"):  # the share of <unk> (the perplexities count it as a word)
        ids = getattr(text, name)
        stats[f"{name}_unk_rate"] = round(float((ids == vocab.unk_index).mean()), 4) if len(ids) else None
    return text
