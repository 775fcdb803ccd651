"""Stage ``train_generator``: train the LSTM language model of ``pipeline.models.language_model``.

Imports torch, numpy and torch-only pipeline modules, so it runs on a GPU machine
without spaCy or gensim. The loop (epochs, early stopping, resume, checkpoints,
AMP, clipping) is ``pipeline.training.loop``; what is specific to the language model
(``LanguageModelTraining``):

- Data: the surface tokens (or characters) of ``data/tokens/knbc.jsonl``, framed
  by ``<s>`` / ``</s>`` per sentence or per article (``sequence_unit``); the
  vocabulary keeps training-split units seen at least ``min_count`` times, the
  rest become ``<unk>``. With ``vocab_size`` > 0 (init = pretrained) the vocabulary is
  pretrain_generator's (the most frequent words of KNBC's training text and the corpus,
  read from its model directory) and the decoder an adaptive softmax (untied).
- Optimisation: Adam, optional truncated BPTT (``bptt`` > 0: the hidden state is
  carried across chunks of that many tokens, gradients are not). Epoch ``e``
  batches with a ``torch.Generator`` seeded ``seed * 1000 + e``; dropout draws from
  the global torch RNG, carried across epochs (and saved in the checkpoint).
- Early stopping on dev perplexity; the learning rate is multiplied by ``lr_decay``
  after an epoch without dev improvement (``on_plateau``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.labels import THEMES
from pipeline.errors import ConfigError, InputError, ModelError
from pipeline.io import read_json, sha256_file
from pipeline.metrics import perplexity
from pipeline.models.language_model import ANY_THEME, SPECIALS, LSTMLanguageModel, sequence_nll, theme_slot
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.vocab import BOS, EOS, Vocab, embedding_matrix, read_word2vec_text
from pipeline.text.tokenize import read_token_rows
from pipeline.training.loop import DevStats, EarlyStopping, LoopSettings, StepRunner, TrainStats, checkpoint_signature, train
from pipeline.training.pretrain import fitting_cutoffs
from pipeline.training.seeds import publish_seeds, train_seeds
from pipeline.training.stage_io import TrainedModel, pretrained_vectors_file

__all__ = [
    "Encoded",
    "Sequence",
    "build_sequences",
    "build_vocab",
    "corpus_nll",
    "encode",
    "make_batches",
    "perplexity",
    "read_splits",
    "sentence_units",
    "target_count",
]

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 64
ARCHITECTURE = "LSTMLanguageModel"
# Early stopping: a dev perplexity must drop by more than this to count as a gain.
MIN_PERPLEXITY_GAIN = 1e-6


# ---------------------------------------------------------------------- data
def sentence_units(row: dict, *, level: str) -> list[str]:
    """The units of one token row: GiNZA surface tokens, or the characters they spell."""
    if level == "char":
        return list("".join(row["surface"]))
    return list(row["surface"])


@dataclass
class Sequence:
    """One training example: framed units (``<s> ... </s>``) and its article's theme."""

    units: list[str]
    theme: str


def build_sequences(rows: Iterable[dict], *, level: str, unit: str) -> list[Sequence]:
    """Sentences (``unit = "sentence"``) or whole articles framed by the special tokens.

    An article reads ``<s> s1 </s> s2 </s> ...``: every sentence end is predicted
    once, as in the sentence unit, so both units score exactly the same targets
    (each token and each ``</s>``) and their perplexities are comparable.
    """
    rows = list(rows)
    if unit == "sentence":
        return [Sequence([BOS, *sentence_units(row, level=level), EOS], row["theme"]) for row in rows]
    articles: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        articles[row["article_id"]].append(row)
    sequences = []
    for article_rows in articles.values():  # dict keeps corpus order of first appearance
        units = [BOS]
        for row in sorted(article_rows, key=lambda r: r["position"]):
            units.extend(sentence_units(row, level=level))
            units.append(EOS)
        sequences.append(Sequence(units, article_rows[0]["theme"]))
    return sequences


def read_splits(tokens_path: str | Path, *, level: str, unit: str) -> dict[str, list[Sequence]]:
    """train / dev / test sequences of the tokens file (splits are by article)."""
    rows = list(read_token_rows(tokens_path))
    return {split: build_sequences((r for r in rows if r["split"] == split), level=level, unit=unit) for split in ("train", "dev", "test")}


def build_vocab(sequences: list[Sequence], *, min_count: int) -> Vocab:
    """Training-split units seen at least ``min_count`` times, after the four special tokens."""
    return Vocab.build((s.units for s in sequences), min_count=min_count, specials=SPECIALS)


@dataclass
class Encoded:
    """A sequence as vocabulary indices plus its theme slot (1.. = a theme; ANY_THEME is never stored)."""

    ids: list[int]
    theme: int


def encode(sequences: list[Sequence], vocab: Vocab) -> list[Encoded]:
    return [Encoded(vocab.encode(s.units), theme_slot(s.theme)) for s in sequences]


def target_count(encoded: list[Encoded]) -> int:
    """Predicted positions: every unit after ``<s>`` (tokens and each ``</s>``)."""
    return sum(len(e.ids) - 1 for e in encoded)


def make_batches(
    encoded: list[Encoded], *, batch_size: int, pad_index: int, generator: torch.Generator | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``(tokens [batch, time] padded with pad_index, themes [batch])``.

    Sequences of similar length share a batch (less padding, much faster on CPU).
    With ``generator`` the grouping and the batch order are shuffled, reproducibly.
    """
    if generator is not None:
        # random tie-break inside equal lengths, then sort by length, then shuffle batches
        noise = torch.rand(len(encoded), generator=generator).tolist()
        order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i].ids), noise[i]))
    else:
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if generator is not None:
        groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    batches = []
    for group in groups:
        longest = max(len(encoded[i].ids) for i in group)
        tokens = torch.full((len(group), longest), pad_index, dtype=torch.long)
        for row, i in enumerate(group):
            tokens[row, : len(encoded[i].ids)] = torch.tensor(encoded[i].ids, dtype=torch.long)
        themes = torch.tensor([encoded[i].theme for i in group], dtype=torch.long)
        batches.append((tokens, themes))
    return batches


# ---------------------------------------------------------------- perplexity
@torch.no_grad()
def corpus_nll(
    model: nn.Module, encoded: list[Encoded], *, pad_index: int, device: torch.device | str = "cpu", use_theme: bool = False
) -> tuple[float, int]:
    """(sum of -log p(target) in nats, number of targets) over ``encoded``.

    Every position after ``<s>`` is scored once with the full left context of its
    sequence. ``use_theme=False`` feeds the "any theme" slot: the model gets no
    information the n-gram baseline lacks.
    """
    themes = [e.theme if use_theme else ANY_THEME for e in encoded]
    pairs = sequence_nll(model, [e.ids for e in encoded], themes, pad_index=pad_index, device=device, batch_size=EVAL_BATCH_SIZE)
    # fsum: ~10^5 terms must not lose precision
    return math.fsum(nll for nll, _ in pairs), sum(count for _, count in pairs)


# ------------------------------------------------------------------- vectors
def pretrained_embeddings(
    vocab: Vocab, *, vectors_file: Path, surface_to_norm: dict[str, str], seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embedding table for a surface-form vocabulary from vectors keyed by the normalized form.

    A surface form takes the vector of the same string when there is one
    (京都 -> 京都), else the vector of its most frequent normalized form in the
    training data (美味しかっ -> 美味しい). Other rows stay random.
    """
    words, vectors = read_word2vec_text(vectors_file)
    matrix, _ = embedding_matrix(vocab, words, vectors, seed=seed)
    index_of = {word: i for i, word in enumerate(words)}
    exact = via_norm = 0
    for token, row in vocab.stoi.items():
        if token in SPECIALS:
            continue
        if token in index_of:
            exact += 1
        elif surface_to_norm.get(token) in index_of:
            matrix[row] = vectors[index_of[surface_to_norm[token]]]
            via_norm += 1
    words_in_vocab = len(vocab) - len(SPECIALS)
    stats = {
        "vector_words": len(words),
        "coverage_exact": round(exact / max(words_in_vocab, 1), 4),
        "coverage": round((exact + via_norm) / max(words_in_vocab, 1), 4),
    }
    return matrix, stats


def surface_norms(tokens_path: Path) -> dict[str, str]:
    """Surface form -> its most frequent normalized form in the training split."""
    pairs: dict[str, Counter] = defaultdict(Counter)
    for row in read_token_rows(tokens_path, split="train"):
        for surface, norm in zip(row["surface"], row["norm"], strict=True):
            pairs[surface][norm] += 1
    return {surface: counts.most_common(1)[0][0] for surface, counts in pairs.items()}


# --------------------------------------------------------------------- model
def generator_cutoffs(vocab_size: int, hidden_size: int) -> list[int]:
    """The adaptive softmax's cutoffs: pretrain_lm's (``fitting_cutoffs``), or, for a vocabulary too small for
    them (2,001 rows or fewer), one cutoff at half the vocabulary: the head holds the more frequent half."""
    return fitting_cutoffs(vocab_size, hidden_size) or [max(1, vocab_size // 2)]


def uses_corpus_vocab(section: dict) -> bool:
    """``vocab_size`` > 0: the corpus-sized vocabulary and an adaptive softmax (absent key: a section of before it existed)."""
    return section.get("vocab_size", 0) > 0


def generator_model_args(section: dict, vocab: Vocab) -> dict[str, Any]:
    """The model's constructor arguments; ``vocab_size`` > 0 adds an adaptive softmax and unties the weights."""
    args = {
        "vocab_size": len(vocab),
        "embedding_size": section["embedding_size"],
        "hidden_size": section["hidden_size"],
        "num_layers": section["num_layers"],
        "dropout": section["dropout"],
        "tie_weights": section["tie_weights"],
        "num_theme_slots": len(THEMES) + 1 if section["theme_conditioning"] else 0,
        "pad_index": vocab.pad_index,
    }
    if uses_corpus_vocab(section):  # only then: the config.json of other models stays as it was
        if section["tie_weights"]:
            logger.info("train_generator.vocab_size > 0: adaptive softmax, so tie_weights is ignored (untied decoder)")
        args.update(tie_weights=False, adaptive_cutoffs=generator_cutoffs(len(vocab), section["hidden_size"]))
    return args


def _init_pretrained(model: LSTMLanguageModel, *, vectors_file: Path, tokens_path: Path, section: dict, vocab: Vocab) -> dict[str, Any]:
    """Copy pretrained vectors into the embedding; returns coverage statistics."""
    source = section["embedding_init"]
    matrix, stats = pretrained_embeddings(
        vocab, vectors_file=vectors_file, surface_to_norm=surface_norms(tokens_path), seed=section["seed"]
    )
    if matrix.shape[1] != section["embedding_size"]:
        same = " and train_generator.hidden_size (tied weights need equal sizes)" if section["tie_weights"] else ""
        raise ModelError(
            "E307",
            f"The {source} vectors have {matrix.shape[1]} dimensions but train_generator.embedding_size is {section['embedding_size']}.",
            hint=f"Set train_generator.embedding_size{same} to {matrix.shape[1]}.",
        )
    matrix[vocab.pad_index] = 0.0
    model.init_embeddings(matrix)
    stats["source"] = source
    logger.info(
        "embeddings from %s: %.1f%% of the vocabulary (%.1f%% by surface form, the rest via the normalized form)",
        source,
        100 * stats["coverage"],
        100 * stats["coverage_exact"],
    )
    return stats


def generator_extra(section: dict, model: LSTMLanguageModel) -> dict[str, Any]:
    """What vocab.json records beside the tokens: how the model reads text (load_generator reads it back)."""
    return {
        "level": section["level"],
        "unit": section["sequence_unit"],
        "token_field": "surface",
        "themes": THEMES if model.theme_embedding is not None else [],
        "min_count": section["min_count"],
        # the requested size (train_generator checks it); recorded only when set, so other vocab.json files stay as they were
        **({"vocab_size": section["vocab_size"]} if uses_corpus_vocab(section) else {}),
    }


def pretrained_vocab(directory: Path | None, section: dict) -> Vocab:
    """``vocab_size`` > 0: the vocabulary pretrain_generator built (KNBC + corpus counts), from its model directory,
    so that both stages have the same one; it must have been built for this ``vocab_size``."""
    if directory is None:  # the config check already requires init = pretrained
        raise ConfigError(
            "E108", "train_generator.vocab_size > 0 needs init = pretrained.", hint='Set train_generator.init = "pretrained".'
        )
    info = read_json(directory / "vocab.json")
    vocab = Vocab.from_json(info)
    words = len(vocab) - len(SPECIALS)
    if info.get("vocab_size", 0) != section["vocab_size"] or words > section["vocab_size"]:
        raise ModelError(
            "E318",
            f"The pretrained generator LM in {directory} has a vocabulary of {words} words built for vocab_size = "
            f"{info.get('vocab_size', 0)}; train_generator.vocab_size is {section['vocab_size']}.",
            hint="Rerun pretrain_generator: it builds the vocabulary from the train_generator settings.",
        )
    return vocab


def init_from_pretrained(model: LSTMLanguageModel, vocab: Vocab, *, directory: Path) -> dict[str, Any]:
    """Copy every weight of pretrain_generator's LM (same vocabulary, same shape) into ``model``."""
    from pipeline.models.language_model import load_generator

    pretrained = load_generator(directory)
    if pretrained.vocab.itos != vocab.itos:
        raise ModelError(
            "E318",
            f"The pretrained generator LM in {directory} has a vocabulary of {len(pretrained.vocab)} words, "
            f"this generator one of {len(vocab)} (or the same size in another order).",
            hint="Rerun pretrain_generator: it builds the vocabulary from the same tokens and train_generator settings.",
        )
    try:
        model.load_state_dict(pretrained.model.state_dict())
    except RuntimeError as error:  # a different size, layer count or theme conditioning
        raise ModelError(
            "E318",
            f"The pretrained generator LM in {directory} does not have this generator's shape: {str(error).splitlines()[0]}",
            hint="Rerun pretrain_generator after changing train_generator sizes.",
        ) from error
    return {"init": "pretrained", "pretrained_dev_perplexity": pretrained.metrics.get("dev_perplexity")}


def _vectors_file(ctx, section: dict) -> Path | None:
    if section["embedding_init"] != "random" and section["level"] == "char":
        raise ConfigError(
            "E108",
            "train_generator.embedding_init needs level = 'word': the vector sources hold words, not characters.",
            hint='Set train_generator.embedding_init = "random" with train_generator.level = "char".',
        )
    return pretrained_vectors_file(ctx, section_name="train_generator", source=section["embedding_init"])


# ----------------------------------------------------------------- training
def _chunk_loss_sum(
    model: LSTMLanguageModel, inputs: torch.Tensor, targets: torch.Tensor, themes: torch.Tensor, state, *, pad_index: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(sum of -log p(targets) over the non-padding targets, the LSTM state): the adaptive softmax's own loss
    (no ``[batch, time, vocab]`` table) or cross-entropy on the full softmax's logits."""
    if getattr(model, "adaptive", None) is not None:  # a stand-in module without one: full softmax
        mean, state = model.adaptive_loss(inputs, targets, themes=themes, state=state, ignore_index=pad_index)
        return mean.float() * int((targets != pad_index).sum()), state
    logits, state = model(inputs, themes=themes, state=state)  # [batch, chunk, vocab]
    loss_sum = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=pad_index, reduction="sum"
    )
    return loss_sum, state


def _train_chunks(
    model: LSTMLanguageModel, tokens: torch.Tensor, themes: torch.Tensor, *, steps: StepRunner, pad_index: int, bptt: int
) -> tuple[float, int]:
    """One batch, ``tokens`` [batch, time], in BPTT chunks; returns (sum of NLL in nats, targets)."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # [batch, time-1]
    chunk = bptt if bptt > 0 else inputs.size(1)
    total, count, state = 0.0, 0, None
    for start in range(0, inputs.size(1), chunk):
        chunk_targets = targets[:, start : start + chunk]
        chunk_count = int((chunk_targets != pad_index).sum())
        if chunk_count == 0:  # only padding left in this batch
            break
        with steps.autocast():
            loss_sum, state = _chunk_loss_sum(model, inputs[:, start : start + chunk], chunk_targets, themes, state, pad_index=pad_index)
        steps.step(loss_sum / chunk_count)
        # truncated BPTT: keep the state's values, cut its gradient history
        state = tuple(s.detach() for s in state)
        total += float(loss_sum.detach())
        count += chunk_count
    return total, count


def train_pass(
    model: LSTMLanguageModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: StepRunner,
    pad_index: int,
    bptt: int,
    theme_dropout: float,
) -> tuple[float, int]:
    """One pass over ``batches``; returns (sum of training NLL in nats, targets)."""
    model.train()
    device = steps.device
    total, count = 0.0, 0
    for tokens, themes in batches:
        tokens, themes = tokens.to(device), themes.to(device)
        if model.theme_embedding is not None and theme_dropout > 0:
            # "any theme" for a random share of sequences, so unconditioned generation is learned too
            dropped = torch.rand(themes.shape, device=device) < theme_dropout
            themes = themes.masked_fill(dropped, ANY_THEME)
        batch_total, batch_count = _train_chunks(model, tokens, themes, steps=steps, pad_index=pad_index, bptt=bptt)
        total += batch_total
        count += batch_count
    return total, count


class LanguageModelTraining:
    """The language model's part of the training loop: seeded batch order, BPTT, dev perplexity, lr decay."""

    def __init__(self, *, model: LSTMLanguageModel, train: list[Encoded], dev: list[Encoded], section: dict, pad_index: int) -> None:
        self.model = model
        self.train, self.dev = train, dev
        self.section = section
        self.pad_index = pad_index

    def train_epoch(self, epoch: int, steps: StepRunner) -> TrainStats:
        # a fresh, seeded order every epoch: the same on a resumed run
        shuffle = torch.Generator().manual_seed(self.section["seed"] * 1000 + epoch)
        batches = make_batches(self.train, batch_size=self.section["batch_size"], pad_index=self.pad_index, generator=shuffle)
        nll, count = train_pass(
            self.model,
            steps.progress(batches, total=len(batches), desc=f"generator epoch {epoch}"),
            steps=steps,
            pad_index=self.pad_index,
            bptt=self.section["bptt"],
            theme_dropout=self.section["theme_dropout"],
        )
        return TrainStats(record={"train_perplexity": round(perplexity(nll, count), 3)}, items=count, unit="tokens")

    def evaluate(self, epoch: int, steps: StepRunner) -> DevStats:
        device = steps.device
        dev_perplexity = perplexity(*corpus_nll(self.model, self.dev, pad_index=self.pad_index, device=device))
        record = {"dev_perplexity": round(dev_perplexity, 3)}
        if self.model.theme_embedding is not None:
            with_theme = corpus_nll(self.model, self.dev, pad_index=self.pad_index, device=device, use_theme=True)
            record["dev_perplexity_with_theme"] = round(perplexity(*with_theme), 3)
        return DevStats(record=record, value=dev_perplexity)

    def on_plateau(self, steps: StepRunner) -> None:
        """No dev gain: multiply the learning rate by ``lr_decay`` (saved with the optimizer state)."""
        for group in steps.optimizer.param_groups:
            group["lr"] *= self.section["lr_decay"]


# --------------------------------------------------------------------- stage
def _read_data(tokens_path: Path, section: dict, *, vocab: Vocab | None = None) -> tuple[Vocab, list[Encoded], list[Encoded]]:
    """The vocabulary (``vocab``, or built from the training split) and the encoded train and dev sequences."""
    splits = read_splits(tokens_path, level=section["level"], unit=section["sequence_unit"])
    if not splits["train"] or not splits["dev"]:
        raise InputError(
            "E209",
            "The tokens file has no train or no dev sentences.",
            hint="Check prepare.train_ratio and prepare.dev_ratio, then `jpipe run tokenize`.",
        )
    if vocab is None:
        vocab = build_vocab(splits["train"], min_count=section["min_count"])
    return vocab, encode(splits["train"], vocab), encode(splits["dev"], vocab)


def _initialise(
    model: LSTMLanguageModel, *, section: dict, vocab: Vocab, tokens_path: Path, vectors_file: Path | None, pretrained_dir: Path | None
) -> dict[str, Any]:
    """The model's starting weights: pretrain_generator's LM, or pretrained vectors in the embedding, or random."""
    if pretrained_dir is not None:  # its embedding already started from the same vectors
        return init_from_pretrained(model, vocab, directory=pretrained_dir)
    if vectors_file is not None:
        stats = _init_pretrained(model, vectors_file=vectors_file, tokens_path=tokens_path, section=section, vocab=vocab)
        return {"embedding_" + key: value for key, value in stats.items()}
    return {}


def train_language_model(
    *,
    section: dict,
    tokens_path: Path,
    vectors_file: Path | None,
    work_dir: Path,
    resume: bool,
    pretrained_dir: Path | None = None,
    name: str = "train_generator",
) -> TrainedModel:
    """Train on the training split with early stopping on dev perplexity; the model keeps its best weights.

    ``pretrained_dir``: start from that LM (pretrain_generator's output) and fine-tune.
    """
    seed_everything(section["seed"])  # before the model: its initial weights come from the seed
    device = pick_device(section["device"])
    fixed_vocab = pretrained_vocab(pretrained_dir, section) if uses_corpus_vocab(section) else None
    vocab, train_set, dev_set = _read_data(tokens_path, section, vocab=fixed_vocab)
    model_args = generator_model_args(section, vocab)
    model = LSTMLanguageModel(**model_args)
    init_stats = _initialise(
        model, section=section, vocab=vocab, tokens_path=tokens_path, vectors_file=vectors_file, pretrained_dir=pretrained_dir
    )
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=section["learning_rate"])
    steps = StepRunner(model=model, optimizer=optimizer, device=device, amp=section.get("amp", False), grad_clip=section["grad_clip"])
    parameter_count = sum(p.numel() for p in model.parameters())
    logger.info(
        "train_generator: %s-level %s sequences, %d train / %d dev, vocabulary %d, %d parameters, device %s, init %s",
        *(section["level"], section["sequence_unit"], len(train_set), len(dev_set), len(vocab), parameter_count, device),
        "pretrained" if pretrained_dir else "scratch",
    )
    signature = checkpoint_signature(
        # vocab_size = 0 left out: a checkpoint of before the key existed still resumes
        {key: value for key, value in dict(section).items() if key != "vocab_size" or value},
        vocab=vocab.itos,
        tokens=sha256_file(tokens_path),
        vectors=sha256_file(vectors_file) if vectors_file else None,
        pretrained=sha256_file(pretrained_dir / "model.safetensors") if pretrained_dir else None,
    )
    stopping = EarlyStopping(monitor="dev_perplexity", mode="min", patience=section["patience"], min_delta=MIN_PERPLEXITY_GAIN)
    settings = LoopSettings(name=name, epochs=section["epochs"], stopping=stopping, work_dir=work_dir, signature=signature, resume=resume)
    training = LanguageModelTraining(model=model, train=train_set, dev=dev_set, section=section, pad_index=vocab.pad_index)
    result = train(training, steps=steps, settings=settings)
    metrics = {
        "level": section["level"],
        "sequence_unit": section["sequence_unit"],
        **result.metrics,
        "vocab_size": len(vocab),
        "train_tokens": target_count(train_set),
        "parameters": parameter_count,
        **init_stats,
    }
    extra = generator_extra(section, model)
    return TrainedModel(
        model=model, architecture=ARCHITECTURE, model_args=model_args, vocab=vocab, metrics=metrics, records=result.records, extra=extra
    )


def train_generator_stage(ctx) -> dict[str, Any]:
    """Stage ``train_generator``: one model per seed (``seeds``); the median-dev-perplexity one is ``models/generator``."""
    from pipeline.paths import GENERATOR_DIR, PRETRAINED_GENERATOR_DIR, TOKENS

    section = ctx.section
    tokens_path = ctx.input(TOKENS)
    vectors_file = _vectors_file(ctx, section)
    pretrained_dir = ctx.input(PRETRAINED_GENERATOR_DIR) if section["init"] == "pretrained" else None
    trained = train_seeds(
        section,
        work_dir=Path(ctx.work_dir),
        name="train_generator",
        train_one=functools.partial(
            train_language_model, tokens_path=tokens_path, vectors_file=vectors_file, resume=ctx.resume, pretrained_dir=pretrained_dir
        ),
    )
    return publish_seeds(ctx, GENERATOR_DIR, trained, token_field="surface", monitor="dev_perplexity", config=dict(section))
