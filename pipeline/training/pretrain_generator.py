"""Stage ``pretrain_generator``: the generator's language model, pretrained on unlabelled text.

``train_generator`` with ``init = "pretrained"`` starts from this model and fine-tunes it on KNBC's
training articles (theme conditioning kept: the theme slots are trained then; pretraining feeds
the "any theme" slot). The model has exactly the generator's shape and vocabulary, so every
weight carries over:

* vocabulary: the generator's own. By default (``train_generator.vocab_size = 0``) KNBC training
  surface tokens seen ``train_generator.min_count`` times, ``<unk>`` for the rest; corpus words outside
  it are ``<unk>`` here too, and the perplexity compares with a scratch model's. With ``vocab_size = N``
  > 0 the N most frequent surface words of KNBC's training sentences and the token store counted
  together (:func:`corpus_vocab`): far fewer ``<unk>`` on other text; train_generator reads this
  vocabulary from the model directory written here, so both stages have the same one.
  evaluate_generator scores every row of its report in the generator's vocabulary, on the same targets;
* text, budget, rounds, held-apart 2% of the documents, truncated BPTT, early stopping on the
  held-apart perplexity and resuming: those of ``pretrain_lm`` (``pipeline.training.pretrain``,
  the ``[pretrain_lm]`` settings), on the **surface** token field, forward direction only;
* the generator's decoder: full softmax with tied weights for the KNBC vocabulary (a few thousand
  words); an adaptive softmax, untied, with ``vocab_size`` > 0.

Output ``models/pretrained_generator/``: a generator model directory (``jpipe generate`` and
``jpipe score`` can use it as it is) whose metrics.json holds the perplexities and the text's statistics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ModelError
from pipeline.io import sha256_file
from pipeline.models.language_model import SPECIALS
from pipeline.models.vocab import EOS, Vocab
from pipeline.text.tokenize import read_token_rows
from pipeline.training.language_model import (
    build_vocab,
    generator_extra,
    generator_model_args,
    pretrained_embeddings,
    read_splits,
    surface_norms,
    uses_corpus_vocab,
)
from pipeline.training.pretrain import pretrain_direction
from pipeline.training.pretrain_data import PretrainText, build_pretrain_text, open_store
from pipeline.training.stage_io import pretrained_vectors_file, tokenizer_settings, write_trained_model

logger = logging.getLogger(__name__)

TOKEN_FIELD = "surface"


def corpus_vocab(tokens_path: Path, store_path: Path, size: int) -> Vocab:
    """The specials and the ``size`` most frequent surface words of KNBC's training sentences and the token store,
    counted together; most frequent first (ties: the store's order, then KNBC's order of first appearance).
    Fewer words when there are fewer (logged)."""
    counts: dict[str, int] = {}
    store = open_store(store_path, token_field=TOKEN_FIELD)  # None (with a warning) without a corpus
    if store is not None:
        for word, count in zip(store.vocab(TOKEN_FIELD), store.counts(TOKEN_FIELD).tolist(), strict=True):
            counts[word] = counts.get(word, 0) + int(count)
    for row in read_token_rows(tokens_path, split="train"):
        for word in row[TOKEN_FIELD]:
            counts[word] = counts.get(word, 0) + 1
    ranked = sorted((word for word in counts if word not in SPECIALS), key=lambda word: -counts[word])  # stable
    if len(ranked) < size:
        logger.warning(
            "train_generator.vocab_size = %d, but KNBC's training text and the corpus hold %d distinct words: the vocabulary has them all",
            size,
            len(ranked),
        )
    return Vocab([*SPECIALS, *ranked[:size]])


def generator_vocab(tokens_path: Path, generator: dict, *, store_path: Path | None = None) -> Vocab:
    """The generator's vocabulary: KNBC training words seen min_count times (what train_generator builds from the same
    tokens and settings), or with ``vocab_size`` > 0 :func:`corpus_vocab` over KNBC and the store at ``store_path``."""
    if uses_corpus_vocab(generator):
        if store_path is None:
            raise ValueError("train_generator.vocab_size > 0: the vocabulary needs the token store")
        return corpus_vocab(tokens_path, store_path, generator["vocab_size"])
    return build_vocab(read_splits(tokens_path, level="word", unit=generator["sequence_unit"])["train"], min_count=generator["min_count"])


def pretraining_text(*, tokens_path: Path, store_path: Path, section: dict, generator: dict, vocab: Vocab | None = None) -> PretrainText:
    """The pretraining text in the generator's vocabulary (also what evaluate_generator fits an n-gram model on).

    ``vocab``: that vocabulary when it is known (evaluate_generator passes the trained generator's); else built.
    """
    if vocab is None:
        vocab = generator_vocab(tokens_path, generator, store_path=store_path)
    return build_pretrain_text(tokens_path=tokens_path, store_path=store_path, section=section, token_field=TOKEN_FIELD, vocab=vocab)


def text_sentences(text: PretrainText) -> list[list[str]]:
    """The training stream as sentences of words (``</s>`` ends each; ``<unk>`` kept): an n-gram model's training text."""
    words = np.asarray(text.vocab.itos, dtype=object)[text.train]
    ends = np.flatnonzero(text.train == text.vocab.stoi[EOS])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [words[start:end].tolist() for start, end in zip(starts, ends, strict=True)]


def initial_embedding(ctx, generator: dict, vocab: Vocab, tokens_path: Path) -> np.ndarray | None:
    """The generator's pretrained vectors as the LM's starting embedding (None for embedding_init = random)."""
    vectors_file = pretrained_vectors_file(ctx, section_name="train_generator", source=generator["embedding_init"])
    if vectors_file is None:
        return None
    matrix, _ = pretrained_embeddings(vocab, vectors_file=vectors_file, surface_to_norm=surface_norms(tokens_path), seed=generator["seed"])
    if matrix.shape[1] != generator["embedding_size"]:
        raise ModelError(
            "E307",
            f"The {generator['embedding_init']} vectors have {matrix.shape[1]} dimensions but "
            f"train_generator.embedding_size is {generator['embedding_size']}.",
            hint=f"Set train_generator.embedding_size (and hidden_size, with tied weights) to {matrix.shape[1]}.",
        )
    matrix[vocab.pad_index] = 0.0
    return matrix


def pretrain_generator_stage(ctx) -> dict[str, Any]:
    """Stage ``pretrain_generator``: one forward LM of the generator's shape, written as a generator model directory."""
    from pipeline.paths import EXTRA_TOKENS, PRETRAINED_GENERATOR_DIR, TOKENS

    section, generator = ctx.section, ctx.config["train_generator"]
    tokens_path = ctx.input(TOKENS)
    text = pretraining_text(tokens_path=tokens_path, store_path=ctx.input(EXTRA_TOKENS), section=section, generator=generator)
    logger.info("pretrain_generator: %s", ", ".join(f"{key} {value}" for key, value in text.stats.items()))
    # The generator's modules, with pretraining's dropout (one pass over a large text needs little).
    model_args = {**generator_model_args(generator, text.vocab), "dropout": section["dropout"]}
    matrix = initial_embedding(ctx, generator, text.vocab, tokens_path)
    trained = pretrain_direction(
        direction="forward",
        text=text,
        embedding=(matrix, None),
        model_args=model_args,
        section={**dict(section), "freeze_vectors": False},
        work_dir=Path(ctx.work_dir),
        resume=ctx.resume,
        signature=f"{sha256_file(tokens_path)} {text.stats} {model_args} {generator['embedding_init']}",
        stage="pretrain_generator",
    )
    trained.metrics["text"] = text.stats
    # <unk> shares of the held-apart documents and of KNBC's test articles in the generator's vocabulary
    trained.metrics.update(dev_unk_rate=text.stats["dev_unk_rate"], knbc_test_unk_rate=text.stats["knbc_test_unk_rate"])
    trained.extra = generator_extra(generator, trained.model)
    tokenizer = tokenizer_settings(project_dir=ctx.project_dir, token_field=TOKEN_FIELD)
    out = ctx.output(PRETRAINED_GENERATOR_DIR)
    write_trained_model(out, trained, tokenizer=tokenizer, config={**dict(section), "train_generator": dict(generator)})
    return {
        "dev_perplexity": trained.metrics.get("dev_perplexity"),
        "knbc_test_perplexity": trained.metrics["knbc_test_perplexity"],
        "train_tokens": text.stats["train_tokens"],
        "train_unk_rate": text.stats["train_unk_rate"],
        "dev_unk_rate": text.stats["dev_unk_rate"],
        "knbc_test_unk_rate": text.stats["knbc_test_unk_rate"],
        "tokens_per_second": trained.metrics["train_tokens_per_second"],
        "vocab_size": len(text.vocab),
    }
