"""Stage ``word2vec``: gensim Word2Vec on the tokenized corpus (and the tokenized extra corpora).

The corpus is streamed from the tokens files on every pass (gensim makes one pass
to build the vocabulary and one per epoch), so extra corpora of any size are
never held in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.io import read_jsonl, usable_cores

logger = logging.getLogger(__name__)

# gensim's Cython routines truncate longer sentences (MAX_WORDS_IN_BATCH); cut documents instead.
MAX_SENTENCE_TOKENS = 10000
# The word2vec section keys passed to gensim (and recorded in meta.json "params").
TRAIN_PARAMS = ("sg", "vector_size", "window", "min_count", "negative", "sample", "epochs", "seed", "workers")


class TokenStream:
    """A restartable iterable of token lists (one per sentence / document) from tokens JSONL files
    and token stores (``data/tokens/extra/``), streamed on every pass."""

    def __init__(self, paths: list[Path], *, token_field: str, stores: list[Path] = ()) -> None:
        self.paths = list(paths)
        self.stores = list(stores)
        self.token_field = token_field

    def __iter__(self) -> Iterator[list[str]]:
        for path in self.paths:
            for row in read_jsonl(path):
                # Whitespace tokens (Sudachi maps a few symbols to ' ') cannot be word2vec keys.
                tokens = [token for token in row.get(self.token_field, ()) if token and not any(c.isspace() for c in token)]
                yield from _cut(tokens)
        for store in self.stores:
            yield from _store_sentences(store, self.token_field)


def _cut(tokens: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(tokens), MAX_SENTENCE_TOKENS):
        yield tokens[start : start + MAX_SENTENCE_TOKENS]


def _store_sentences(path: Path, field: str) -> Iterator[list[str]]:
    """Sentences of a token store as token lists, whitespace tokens dropped by id (one mask per pass)."""
    import numpy as np

    from pipeline.text.token_store import TokenStore

    store = TokenStore.open(path)
    if not store.sentences:
        return
    vocab = store.vocab(field)
    words = np.array(vocab, dtype=object)
    usable = np.array([bool(token) and not any(c.isspace() for c in token) for token in vocab], dtype=bool)
    for ids in store.iter_ids(field):
        kept = ids[usable[ids]]
        if len(kept):
            yield from _cut(words[kept].tolist())


# Corpora up to this many tokens train 30 epochs on one thread (reproducible); larger ones fewer epochs, all cores.
AUTO_SMALL_CORPUS_TOKENS = 1_000_000
AUTO_MAX_EPOCHS, AUTO_MIN_EPOCHS = 30, 5


def auto_epochs(tokens: int) -> int:
    """``word2vec.epochs = 0``: 30 up to 1M tokens, then 30 * sqrt(1M / tokens), at least 5.

    Bigger corpora need fewer passes for the same quality (each pass sees every word more often),
    so the training time grows with the square root of the corpus size instead of linearly.
    """
    if tokens <= AUTO_SMALL_CORPUS_TOKENS:
        return AUTO_MAX_EPOCHS
    return max(AUTO_MIN_EPOCHS, min(AUTO_MAX_EPOCHS, round(AUTO_MAX_EPOCHS * (AUTO_SMALL_CORPUS_TOKENS / tokens) ** 0.5)))


def auto_workers(tokens: int) -> int:
    """``word2vec.workers = 0``: one thread (reproducible) up to 1M tokens, else one per core."""
    return 1 if tokens <= AUTO_SMALL_CORPUS_TOKENS else usable_cores()


def _epoch_logger(epochs: int):
    """A gensim callback that logs epochs 1, every 5th and the last, with the elapsed time."""
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochLogger(CallbackAny2Vec):
        def __init__(self) -> None:
            self.epoch = 0
            self.started = time.perf_counter()

        def on_epoch_end(self, model) -> None:
            self.epoch += 1
            if self.epoch == 1 or self.epoch % 5 == 0 or self.epoch == epochs:
                logger.info("word2vec epoch %d/%d (%.1fs)", self.epoch, epochs, time.perf_counter() - self.started)

    return EpochLogger()


def train_word2vec(
    *,
    sentences: TokenStream,
    sg: int,
    vector_size: int,
    window: int,
    min_count: int,
    negative: int,
    sample: float,
    epochs: int,
    seed: int,
    workers: int,
):
    """Train and return a gensim ``Word2Vec`` model; logs one line per epoch. ``epochs`` or ``workers`` 0 = auto."""
    from gensim.models import Word2Vec

    from pipeline.vectors.store import quiet_gensim

    quiet_gensim()
    model = Word2Vec(
        vector_size=vector_size,
        window=window,
        min_count=min_count,
        sg=sg,
        negative=negative,
        sample=sample,
        hs=0 if negative > 0 else 1,  # negative=0 needs hierarchical softmax to train at all
        seed=seed,
        workers=workers or 1,
        epochs=epochs or AUTO_MAX_EPOCHS,
    )
    model.build_vocab(corpus_iterable=sentences)
    # 0 = auto: decided by the corpus size, known once the vocabulary pass has counted the words.
    model.epochs = epochs or auto_epochs(model.corpus_total_words)
    model.workers = workers or auto_workers(model.corpus_total_words)
    if not model.wv.index_to_key:
        from pipeline.errors import InputError

        raise InputError(
            "E209",
            f"word2vec: no word occurs at least {min_count} times.",
            hint="Lower word2vec.min_count (for example to 1), or add text.",
        )
    model.train(
        corpus_iterable=sentences,
        total_examples=model.corpus_count,
        total_words=model.corpus_total_words,
        epochs=model.epochs,
        callbacks=[_epoch_logger(model.epochs)],
    )
    return model


def word2vec_stage(ctx) -> dict[str, Any]:
    """Train Word2Vec on ``ctx.section['token_field']`` of the KNBC tokens (+ extra corpora)."""
    import gensim

    from pipeline.paths import EXTRA_TOKENS, TOKENS, WORD2VEC_DIR
    from pipeline.text.tokenize import tokenized_split_mode
    from pipeline.vectors.store import corpus_coverage, count_field, library_versions, write_vector_dir

    section = ctx.section
    field = section["token_field"]
    paths = [ctx.input(TOKENS)]
    stores = [ctx.input(EXTRA_TOKENS)] if section["use_extra_corpora"] else []
    for store in stores:
        _check_store_field(store, field)
    sentences = TokenStream(paths, token_field=field, stores=stores)
    started = time.perf_counter()
    params = {key: section[key] for key in TRAIN_PARAMS}
    model = train_word2vec(sentences=sentences, **params)
    training_seconds = time.perf_counter() - started
    params.update(epochs=model.epochs, workers=model.workers)  # what auto (0) resolved to
    paths += stores
    keyed = model.wv
    coverage = corpus_coverage(keyed.key_to_index, count_field(ctx.input(TOKENS), field))
    meta = {
        "source": "word2vec",
        "token_field": field,
        # Queries are normalized with the split mode of the tokens the vectors were trained on.
        "split_mode": tokenized_split_mode(ctx.project_dir),
        "algorithm": "skip-gram" if section["sg"] else "CBOW",
        "params": params,
        "corpus_files": [str(Path(p).relative_to(ctx.project_dir)) if Path(p).is_relative_to(ctx.project_dir) else str(p) for p in paths],
        "training_sentences": model.corpus_count,
        "training_tokens": model.corpus_total_words,
        "training_seconds": round(training_seconds, 3),
        "coverage": coverage,
        "versions": {**library_versions(), "gensim": gensim.__version__},
    }
    directory = ctx.output(WORD2VEC_DIR)
    meta = write_vector_dir(directory, keyed_vectors=keyed, meta=meta)
    logger.info(
        "word2vec: %d words x %d dims from %d tokens in %.1fs; KNBC type coverage %.1f%%",
        meta["vocab_size"],
        meta["dim"],
        model.corpus_total_words,
        training_seconds,
        100 * coverage["type_coverage"],
    )
    return {
        "vocab_size": meta["vocab_size"],
        "dim": meta["dim"],
        "training_seconds": round(training_seconds, 2),
        "training_tokens": model.corpus_total_words,
        "type_coverage": coverage["type_coverage"],
        "token_coverage": coverage["token_coverage"],
    }


def _check_store_field(path: Path, field: str) -> None:
    from pipeline.errors import ConfigError
    from pipeline.text.token_store import TokenStore

    store = TokenStore.open(path)
    if store.sentences and field not in store.fields:
        raise ConfigError(
            "E141",
            f"word2vec.token_field = '{field}' is not in the token store {path} (it keeps {', '.join(store.fields)}).",
            hint=f"Add '{field}' to tokenize.store_fields and rerun tokenize, or set word2vec.use_extra_corpora = false.",
        )
