"""Stage ``train_generator``: train the LSTM language model of ``pipeline.nn.generator``.

Imports torch, numpy and torch-only pipeline modules, so it runs on a GPU machine
without spaCy or gensim.

- Data: the surface tokens (or characters) of ``data/tokens/knbc.jsonl``, framed
  by ``<s>`` / ``</s>`` per sentence or per article (``sequence_unit``); the
  vocabulary keeps training-split units seen at least ``min_count`` times, the
  rest become ``<unk>``.
- Optimisation: Adam, gradient clipping, optional truncated BPTT (``bptt`` > 0:
  the hidden state is carried across chunks of that many tokens, gradients are
  not). The learning rate is multiplied by ``lr_decay`` after an epoch without
  dev improvement; training stops after ``patience`` such epochs, keeping the
  weights of the best dev perplexity.
- Every epoch appends a line to ``train_log.jsonl`` and writes a checkpoint in
  the stage's work directory; ``jpipe run train_generator --resume`` continues
  from it when data and settings match (``epochs`` and ``patience`` may change,
  so a finished run can be extended).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.io import sha256_file, sha256_text
from pipeline.data.labels import THEMES
from pipeline.models.model_dir import write_model_dir
from pipeline.models.runtime import pick_device, seed_everything
from pipeline.models.vocab import BOS, EOS, Vocab, embedding_matrix, read_word2vec_text
from pipeline.text.tokenize import read_token_rows
from pipeline.training.checkpoint import EpochLog, load_checkpoint, save_checkpoint
from pipeline.models.language_model import ANY_THEME, SPECIALS, LSTMLanguageModel, theme_slot

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.jsonl"
EVAL_BATCH_SIZE = 64
# Keys that may change between an interrupted run and its --resume.
RESUMABLE_CHANGES = ("epochs", "patience", "device")


# ---------------------------------------------------------------------- data
def sentence_units(row: dict, level: str) -> list[str]:
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
        return [Sequence([BOS, *sentence_units(row, level), EOS], row["theme"]) for row in rows]
    articles: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        articles[row["article_id"]].append(row)
    sequences = []
    for article_rows in articles.values():  # dict keeps corpus order of first appearance
        units = [BOS]
        for row in sorted(article_rows, key=lambda r: r["position"]):
            units.extend(sentence_units(row, level))
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


def make_batches(encoded: list[Encoded], *, batch_size: int, pad_index: int, generator: torch.Generator | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
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
def corpus_nll(model: nn.Module, encoded: list[Encoded], *, pad_index: int, device: torch.device | str = "cpu", use_theme: bool = False) -> tuple[float, int]:
    """(sum of -log p(target) in nats, number of targets) over ``encoded``.

    Every position after ``<s>`` is scored once with the full left context of its
    sequence. ``use_theme=False`` feeds the "any theme" slot: the model gets no
    information the n-gram baseline lacks.
    """
    model.eval()
    total, count = 0.0, 0
    for tokens, themes in make_batches(encoded, batch_size=EVAL_BATCH_SIZE, pad_index=pad_index):
        tokens = tokens.to(device)
        themes = themes.to(device) if use_theme else torch.full_like(themes, ANY_THEME).to(device)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # [batch, time-1] each
        logits, _ = model(inputs, themes=themes)  # [batch, time-1, vocab]
        # float64 sum: ~10^5 terms must not lose precision
        nll = nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=pad_index, reduction="sum")
        total += float(nll.double())
        count += int((targets != pad_index).sum())
    return total, count


def perplexity(total_nll: float, count: int) -> float:
    return math.exp(total_nll / max(count, 1))


# ------------------------------------------------------------------- vectors
def pretrained_embeddings(vocab: Vocab, *, vectors_file: Path, surface_to_norm: dict[str, str], seed: int) -> tuple[np.ndarray, dict[str, Any]]:
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


def _surface_to_norm(tokens_path: Path) -> dict[str, str]:
    pairs: dict[str, Counter] = defaultdict(Counter)
    for row in read_token_rows(tokens_path, split="train"):
        for surface, norm in zip(row["surface"], row["norm"]):
            pairs[surface][norm] += 1
    return {surface: counts.most_common(1)[0][0] for surface, counts in pairs.items()}


# --------------------------------------------------------------------- stage
def _model_args(section: dict, vocab: Vocab) -> dict[str, Any]:
    return {
        "vocab_size": len(vocab),
        "embedding_size": section["embedding_size"],
        "hidden_size": section["hidden_size"],
        "num_layers": section["num_layers"],
        "dropout": section["dropout"],
        "tie_weights": section["tie_weights"],
        "num_theme_slots": len(THEMES) + 1 if section["theme_conditioning"] else 0,
        "pad_index": vocab.pad_index,
    }


def _signature(section: dict, vocab: Vocab, tokens_sha: str) -> str:
    """What a checkpoint must match to be resumed: settings (except RESUMABLE_CHANGES), vocabulary, data."""
    settings = {key: value for key, value in section.items() if key not in RESUMABLE_CHANGES}
    return sha256_text(json.dumps({"settings": settings, "vocab": vocab.itos, "tokens": tokens_sha}, sort_keys=True, ensure_ascii=False))


def train_epoch(
    model: LSTMLanguageModel,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    *,
    optimizer: torch.optim.Optimizer,
    pad_index: int,
    device: torch.device,
    bptt: int,
    grad_clip: float,
    theme_dropout: float,
) -> tuple[float, int]:
    """One pass over ``batches``; returns (sum of training NLL in nats, targets)."""
    model.train()
    total, count = 0.0, 0
    for tokens, themes in batches:
        tokens, themes = tokens.to(device), themes.to(device)
        if model.theme_embedding is not None and theme_dropout > 0:
            # "any theme" for a random share of sequences, so unconditioned generation is learned too
            dropped = torch.rand(themes.shape, device=device) < theme_dropout
            themes = themes.masked_fill(dropped, ANY_THEME)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # [batch, time-1]
        chunk = bptt if bptt > 0 else inputs.size(1)
        state = None
        for start in range(0, inputs.size(1), chunk):
            chunk_targets = targets[:, start : start + chunk]
            chunk_count = int((chunk_targets != pad_index).sum())
            if chunk_count == 0:  # only padding left in this batch
                break
            logits, state = model(inputs[:, start : start + chunk], themes=themes, state=state)
            loss_sum = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), chunk_targets.reshape(-1), ignore_index=pad_index, reduction="sum")
            optimizer.zero_grad(set_to_none=True)
            (loss_sum / chunk_count).backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            # truncated BPTT: keep the state's values, cut its gradient history
            state = tuple(s.detach() for s in state)
            total += float(loss_sum.detach())
            count += chunk_count
    return total, count


def train_generator_stage(ctx) -> dict[str, Any]:
    from pipeline.paths import GENERATOR_DIR, TOKENS, VECTOR_SOURCES

    section = ctx.section
    level, unit = section["level"], section["sequence_unit"]
    seed_everything(section["seed"])
    device = pick_device(section["device"])
    tokens_path = ctx.input(TOKENS)

    splits = read_splits(tokens_path, level=level, unit=unit)
    if not splits["train"] or not splits["dev"]:
        raise PipelineError("The tokens file has no train or no dev sentences.", hint="Check the prepare split ratios, then `jpipe run tokenize`.")
    vocab = build_vocab(splits["train"], min_count=section["min_count"])
    train, dev = encode(splits["train"], vocab), encode(splits["dev"], vocab)
    pad = vocab.pad_index
    model_args = _model_args(section, vocab)
    model = LSTMLanguageModel(**model_args)

    vector_stats: dict[str, Any] = {}
    if section["embedding_init"] != "random":
        source = section["embedding_init"]
        if level == "char":
            raise PipelineError(
                "train_generator.embedding_init needs level = 'word': the vector sources hold words, not characters.",
                hint="Use --set train_generator.embedding_init=random with level=char.",
            )
        vectors_file = ctx.input(VECTOR_SOURCES[source]) / "vectors.txt"
        if not vectors_file.exists():
            raise PipelineError(f"{vectors_file} is missing.", hint=f"Run `jpipe run {'word2vec' if source == 'word2vec' else source}` first, or use embedding_init=random.")
        matrix, vector_stats = pretrained_embeddings(vocab, vectors_file=vectors_file, surface_to_norm=_surface_to_norm(tokens_path), seed=section["seed"])
        if matrix.shape[1] != section["embedding_size"]:
            raise PipelineError(
                f"The {source} vectors have {matrix.shape[1]} dimensions but train_generator.embedding_size is {section['embedding_size']}.",
                hint=f"Use --set train_generator.embedding_size={matrix.shape[1]}"
                + (f" --set train_generator.hidden_size={matrix.shape[1]} (tied weights need equal sizes)." if section["tie_weights"] else "."),
            )
        matrix[pad] = 0.0
        model.init_embeddings(matrix)
        vector_stats["source"] = source
        logger.info("embeddings from %s: %.1f%% of the vocabulary (%.1f%% by surface form, the rest via the normalized form)", source, 100 * vector_stats["coverage"], 100 * vector_stats["coverage_exact"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=section["learning_rate"])
    parameter_count = sum(p.numel() for p in model.parameters())

    # ---- resume
    signature = _signature(section, vocab, sha256_file(tokens_path))
    checkpoint_path = Path(ctx.work_dir) / CHECKPOINT
    state = {"epoch": 0, "best_dev": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [], "stopped": False, "lr": section["learning_rate"]}
    best_weights = copy.deepcopy(model.state_dict())
    if ctx.resume and checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path, device=str(device))
        if checkpoint.get("signature") != signature:
            logger.warning("Checkpoint %s is from other data or settings: starting from scratch.", checkpoint_path)
        else:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            best_weights = checkpoint["best_model"]
            state = checkpoint["state"]
            # a larger --set patience lets an early-stopped run continue
            state["stopped"] = state["bad_epochs"] >= section["patience"]
            torch.set_rng_state(checkpoint["torch_rng"].cpu())
            if device.type == "cuda" and checkpoint.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(checkpoint["cuda_rng"].cpu())
            logger.info("Resuming after epoch %d (best dev perplexity %.2f at epoch %d).", state["epoch"], state["best_dev"], state["best_epoch"])
    elif ctx.resume:
        logger.info("No checkpoint in %s: starting from scratch.", ctx.work_dir)
    epoch_log = EpochLog(Path(ctx.work_dir) / LOG)
    for record in state["history"]:
        epoch_log.write(record)

    logger.info(
        "train_generator: %s-level %s sequences, %d train / %d dev, vocabulary %d, %d parameters, device %s",
        level, unit, len(train), len(dev), len(vocab), parameter_count, device,
    )
    started = time.perf_counter()
    epochs_this_run = 0
    while state["epoch"] < section["epochs"] and not state["stopped"]:
        epoch = state["epoch"] + 1
        for group in optimizer.param_groups:
            group["lr"] = state["lr"]
        # a fresh, seeded order every epoch: the same on a resumed run
        shuffle = torch.Generator().manual_seed(section["seed"] * 1000 + epoch)
        batches = make_batches(train, batch_size=section["batch_size"], pad_index=pad, generator=shuffle)
        epoch_started = time.perf_counter()
        train_nll, train_count = train_epoch(
            model, batches, optimizer=optimizer, pad_index=pad, device=device, bptt=section["bptt"],
            grad_clip=section["grad_clip"], theme_dropout=section["theme_dropout"],
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - epoch_started
        dev_ppl = perplexity(*corpus_nll(model, dev, pad_index=pad, device=device))
        record = {
            "epoch": epoch,
            "train_perplexity": round(perplexity(train_nll, train_count), 3),
            "dev_perplexity": round(dev_ppl, 3),
            "learning_rate": state["lr"],
            "train_seconds": round(train_seconds, 2),
            "train_tokens_per_second": round(train_count / max(train_seconds, 1e-9), 1),
            "device": device.type,
        }
        if model.theme_embedding is not None:
            record["dev_perplexity_with_theme"] = round(perplexity(*corpus_nll(model, dev, pad_index=pad, device=device, use_theme=True)), 3)
        if dev_ppl < state["best_dev"] - 1e-6:
            state.update(best_dev=dev_ppl, best_epoch=epoch, bad_epochs=0)
            best_weights = copy.deepcopy(model.state_dict())
        else:
            state["bad_epochs"] += 1
            state["lr"] *= section["lr_decay"]
            state["stopped"] = state["bad_epochs"] >= section["patience"]
        state["epoch"] = epoch
        state["history"].append(record)
        epoch_log.write(record)
        logger.info("epoch %d: train ppl %.2f, dev ppl %.2f (best %.2f @ %d), %.1fs", epoch, record["train_perplexity"], dev_ppl, state["best_dev"], state["best_epoch"], train_seconds)
        save_checkpoint(
            checkpoint_path,
            {
                "signature": signature,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_model": best_weights,
                "state": state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            },
        )
        epochs_this_run += 1
        if state["stopped"]:
            logger.info("Early stop: %d epochs without dev improvement.", state["bad_epochs"])

    model.load_state_dict(best_weights)
    history = state["history"]
    epoch_seconds = [r["train_seconds"] for r in history if r["device"] == device.type]
    metrics = {
        "level": level,
        "sequence_unit": unit,
        "dev_perplexity": round(state["best_dev"], 3),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "stopped_early": state["stopped"],
        "vocab_size": len(vocab),
        "train_tokens": target_count(train),
        "parameters": parameter_count,
        "device": device.type,
        "seconds_per_epoch": round(sum(epoch_seconds) / max(len(epoch_seconds), 1), 2),
        "train_seconds_this_run": round(time.perf_counter() - started, 1),
        **({"embedding_" + key: value for key, value in vector_stats.items()}),
    }
    if history and "dev_perplexity_with_theme" in history[state["best_epoch"] - 1]:
        metrics["dev_perplexity_with_theme"] = history[state["best_epoch"] - 1]["dev_perplexity_with_theme"]
    out = ctx.output(GENERATOR_DIR)
    out.mkdir(parents=True, exist_ok=True)
    write_model_dir(
        out,
        model=model,
        architecture="LSTMLanguageModel",
        model_args=model_args,
        vocab=vocab,
        metrics={**metrics, "config": dict(section)},
        extra={"level": level, "unit": unit, "token_field": "surface", "themes": THEMES if model.theme_embedding is not None else [], "min_count": section["min_count"]},
    )
    (out / LOG).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in history), encoding="utf-8")
    return {key: metrics[key] for key in ("dev_perplexity", "best_epoch", "epochs_run", "vocab_size", "seconds_per_epoch", "device")}
