"""The LSTM language model behind ``jpipe generate``, its loader and its sampling loop.

Imports torch, numpy and torch-only pipeline modules, so it runs on a GPU
machine without spaCy.

A sequence is a list of vocabulary indices framed by the special tokens::

    sentence unit:  <s> w1 w2 ... wn </s>
    article unit:   <s> w1 ... </s> v1 ... </s> ...   (one article, sentences in order)

The model reads ``sequence[:-1]`` and predicts ``sequence[1:]``. Units are
GiNZA surface tokens (``level = "word"``) or characters (``level = "char"``).

Theme conditioning adds a learned theme vector to every input embedding.
Slot 0 is "any theme": training replaces the true theme by it with
probability ``theme_dropout``, so one model generates both with and without a
theme, and its perplexity can be measured without theme information (a fair
comparison with an n-gram model that never sees the theme).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.data.labels import THEMES
from pipeline.errors import ConfigError, ModelError
from pipeline.models.model_dir import load_state_dict, read_model_dir
from pipeline.models.sampling import sample_next, seeded_generator
from pipeline.models.vocab import BOS, EOS, PAD, UNK, Vocab

logger = logging.getLogger(__name__)

SPECIALS = (PAD, UNK, BOS, EOS)
ANY_THEME = 0  # theme slot used when no theme is given


def theme_slot(theme: str | None) -> int:
    """Slot of a theme name (``Gourmet`` ...) in the theme embedding; ``None`` -> "any theme"."""
    return ANY_THEME if theme is None else THEMES.index(theme) + 1


class LSTMLanguageModel(nn.Module):
    """Embedding (+ theme) -> stacked LSTM -> linear decoder over the vocabulary.

    Dropout is applied to the embeddings, between LSTM layers and before the
    decoder. With ``tie_weights`` the decoder reuses the embedding matrix (Press
    & Wolf 2017), which needs ``embedding_size == hidden_size``; on a corpus as
    small as KNBC it is also the single most effective regulariser.

    With ``adaptive_cutoffs`` (the pretraining LMs of ``pretrain_lm`` and a generator with
    ``train_generator.vocab_size`` > 0, vocabularies of tens of thousands of words) the decoder is an
    adaptive softmax (Grave et al. 2017): frequent words in a full head, rarer ones in smaller tail
    clusters, several times cheaper than the full softmax on a CPU. Training then calls
    :meth:`adaptive_loss` and scoring :meth:`adaptive_nll` (the target's exact log-probability without
    the ``[batch, time, vocab]`` table); ``forward`` still returns ``[batch, time, vocab]`` scores
    (exact log-probabilities), so sampling works unchanged. Such a model has no per-theme output
    bias: the theme enters through the input embedding only.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        tie_weights: bool = False,
        num_theme_slots: int = 0,
        pad_index: int = 0,
        adaptive_cutoffs: list[int] | None = None,
    ) -> None:
        super().__init__()
        if adaptive_cutoffs and tie_weights:
            raise ConfigError("E108", "An adaptive-softmax language model cannot tie its weights.", hint="Leave tie_weights off.")
        if tie_weights and embedding_size != hidden_size:
            raise ConfigError(
                "E108",
                f"tie_weights needs embedding_size == hidden_size, got {embedding_size} and {hidden_size}.",
                hint="Set train_generator.embedding_size and train_generator.hidden_size to the same value, or train_generator.tie_weights = false.",
            )
        self.vocab_size = vocab_size
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.num_theme_slots = num_theme_slots
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_index)
        # num_theme_slots = len(THEMES) + 1 (slot 0 = any theme) or 0 (no conditioning).
        # The theme enters twice: added to every input embedding (the LSTM can use it in
        # its dynamics) and as a per-theme output bias [slots, vocab] (theme word frequencies).
        self.theme_embedding = nn.Embedding(num_theme_slots, embedding_size) if num_theme_slots else None
        self.theme_output_bias = nn.Embedding(num_theme_slots, vocab_size) if num_theme_slots and not adaptive_cutoffs else None
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            embedding_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        # Decoder weight [vocab, hidden]. Tied: the embedding matrix itself, so the
        # state_dict holds it once (safetensors refuses two names for one tensor).
        self.tie_weights = tie_weights
        self.adaptive = None
        if adaptive_cutoffs:
            # head: the first cutoff words + one entry per tail cluster; tails project to hidden / 4**i
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(hidden_size, vocab_size, list(adaptive_cutoffs), div_value=4.0)
        full = self.adaptive is None
        self.output_weight = nn.Parameter(torch.empty(vocab_size, hidden_size)) if full and not tie_weights else None
        self.output_bias = nn.Parameter(torch.zeros(vocab_size)) if full else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[self.embedding.padding_idx].zero_()
        if self.theme_embedding is not None:
            nn.init.uniform_(self.theme_embedding.weight, -0.1, 0.1)
        if self.theme_output_bias is not None:
            nn.init.zeros_(self.theme_output_bias.weight)
        if self.output_weight is not None:
            nn.init.uniform_(self.output_weight, -0.1, 0.1)

    def init_embeddings(self, matrix) -> None:
        """Copy a pretrained ``[vocab_size, embedding_size]`` table (numpy or tensor) into the embedding."""
        table = torch.as_tensor(matrix, dtype=self.embedding.weight.dtype)
        if tuple(table.shape) != tuple(self.embedding.weight.shape):
            raise ModelError(
                "E307",
                f"The embedding table has shape {tuple(table.shape)}, the model needs {tuple(self.embedding.weight.shape)}.",
                hint="Make train_generator.embedding_size equal to the vectors' dimensions.",
            )
        with torch.no_grad():
            self.embedding.weight.copy_(table)

    def forward(
        self,
        tokens: torch.Tensor,
        *,
        themes: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``tokens`` [batch, time] -> (logits [batch, time, vocab], (h, c) each [layers, batch, hidden]).

        ``themes`` [batch] holds theme slots; ignored by a model without conditioning.
        ``state`` continues from a previous chunk (truncated BPTT, generation).
        With an adaptive softmax the scores are log-probabilities (log_softmax leaves them unchanged).
        """
        themes = self._default_themes(tokens, themes)
        output, state = self.hidden_states(tokens, themes=themes, state=state)  # output [batch, time, hidden]
        if self.adaptive is not None:
            flat = self.dropout(output).reshape(-1, output.size(-1))  # [batch * time, hidden]
            return self.adaptive.log_prob(flat).view(*tokens.shape, -1), state
        weight = self.embedding.weight if self.tie_weights else self.output_weight
        logits = nn.functional.linear(self.dropout(output), weight, self.output_bias)  # [batch, time, vocab]
        if self.theme_output_bias is not None:
            logits = logits + self.theme_output_bias(themes).unsqueeze(1)
        return logits, state

    def hidden_states(
        self, tokens: torch.Tensor, *, themes: torch.Tensor | None = None, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``tokens`` [batch, time] -> (LSTM outputs [batch, time, hidden], final (h, c))."""
        embedded = self.embedding(tokens)  # [batch, time, embedding]
        if self.theme_embedding is not None and themes is not None:
            embedded = embedded + self.theme_embedding(themes).unsqueeze(1)  # broadcast over time
        return self.lstm(self.dropout(embedded), state)

    def _default_themes(self, tokens: torch.Tensor, themes: torch.Tensor | None) -> torch.Tensor | None:
        """``themes``, or the "any theme" slot for every row of a theme-conditioned model (as ``forward`` does)."""
        if themes is None and self.theme_embedding is not None:
            return torch.full((tokens.size(0),), ANY_THEME, dtype=torch.long, device=tokens.device)
        return themes

    def _adaptive_inputs(
        self, tokens: torch.Tensor, themes: torch.Tensor | None, state: tuple[torch.Tensor, torch.Tensor] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The adaptive softmax's input rows [batch * time, hidden] (dropout applied) and the final LSTM state."""
        output, state = self.hidden_states(tokens, themes=self._default_themes(tokens, themes), state=state)
        return self.dropout(output).reshape(-1, output.size(-1)), state

    def adaptive_loss(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        themes: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        ignore_index: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Mean -log p(targets) in nats over the positions of ``targets`` [batch, time] (adaptive-softmax models only).

        ``ignore_index``: positions whose target is this index (padding) are left out of the mean.
        """
        flat, state = self._adaptive_inputs(tokens, themes, state)
        flat_targets = targets.reshape(-1)
        if ignore_index is not None:
            keep = flat_targets != ignore_index
            flat, flat_targets = flat[keep], flat_targets[keep]
        return self.adaptive(flat, flat_targets).loss, state

    def adaptive_nll(
        self,
        tokens: torch.Tensor,
        targets: torch.Tensor,
        *,
        themes: torch.Tensor | None = None,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """-log p(target) in nats at every position, [batch, time] (adaptive-softmax models only): the exact
        log-probability ``forward`` gives the target, computed for the targets alone."""
        flat, state = self._adaptive_inputs(tokens, themes, state)
        return -self.adaptive(flat, targets.reshape(-1)).output.view(targets.shape), state


def build_model(model_args: dict[str, Any]) -> LSTMLanguageModel:
    """Rebuild the module from ``config.json``'s model_args (unknown keys are an error, not ignored)."""
    return LSTMLanguageModel(**model_args)


class LoadedGenerator:
    """A trained generator: the module (in eval mode), its vocabulary and what training recorded."""

    def __init__(
        self,
        *,
        model: LSTMLanguageModel,
        vocab: Vocab,
        level: str,
        unit: str,
        themes: list[str],
        min_count: int | None,
        metrics: dict,
        directory: Path,
    ) -> None:
        self.model = model
        self.min_count = min_count
        self.vocab = vocab
        self.level = level
        self.unit = unit
        self.themes = themes
        self.metrics = metrics
        self.directory = directory

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def theme_conditioned(self) -> bool:
        return self.model.theme_embedding is not None


def load_generator(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load a generator model directory (config.json + vocab.json + model.safetensors) onto ``device``.

    The weights were saved from CPU tensors, so a model trained on a GPU loads on
    a CPU-only machine and the other way round.
    """
    directory = Path(directory)
    info = read_model_dir(directory, architecture="LSTMLanguageModel")
    vocab = Vocab.from_json(info["vocab"])
    model = build_model(info["model_args"])
    model.load_state_dict(load_state_dict(directory / "model.safetensors", device="cpu"))
    model.to(device).eval()
    return LoadedGenerator(
        model=model,
        vocab=vocab,
        level=info["vocab"].get("level", "word"),
        unit=info["vocab"].get("unit", "sentence"),
        themes=list(info["vocab"].get("themes", [])),
        min_count=info["vocab"].get("min_count"),
        metrics=info["metrics"],
        directory=directory,
    )


@torch.no_grad()
def generate_ids(
    model: LSTMLanguageModel,
    *,
    prefix: list[int],
    num: int,
    max_tokens: int,
    eos_index: int,
    banned: list[int],
    theme: int = ANY_THEME,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[tuple[list[int], bool]]:
    """Sample ``num`` continuations of ``prefix`` (which starts with ``<s>``).

    Returns one ``(token indices, ended_with_eos)`` per sample; ``</s>`` itself is
    not included. All samples run as one batch; a sample that produced ``</s>``
    stops growing while the others continue, up to ``max_tokens`` new tokens.
    """
    model.eval()
    device = next(model.parameters()).device
    generator = seeded_generator(seed)
    context = torch.tensor([prefix] * num, dtype=torch.long, device=device)  # [num, prefix]
    themes = torch.full((num,), theme, dtype=torch.long, device=device)
    logits, state = model(context, themes=themes)
    next_logits = logits[:, -1, :]  # [num, vocab]
    outputs: list[list[int]] = [[] for _ in range(num)]
    finished = [False] * num
    for _ in range(max_tokens):
        chosen = sample_next(
            next_logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator, banned=banned
        )  # [num] on CPU
        for row, index in enumerate(chosen.tolist()):
            if finished[row]:
                continue
            if index == eos_index:
                finished[row] = True
            else:
                outputs[row].append(index)
        if all(finished):
            break
        logits, state = model(chosen.view(num, 1).to(device), themes=themes, state=state)
        next_logits = logits[:, -1, :]
    return list(zip(outputs, finished, strict=True))


def _target_nll(
    model: LSTMLanguageModel, inputs: torch.Tensor, targets: torch.Tensor, *, themes: torch.Tensor, pad_index: int
) -> torch.Tensor:
    """[batch, time]: -log p of each target in nats; padding positions are 0.

    An adaptive-softmax model scores the targets alone (the same log-probabilities as its ``forward``,
    without a ``[batch, time, vocab]`` table); a full-softmax model takes cross-entropy on its logits.
    """
    if getattr(model, "adaptive", None) is not None:  # a stand-in module without one: full softmax
        nll, _ = model.adaptive_nll(inputs, targets, themes=themes)
        return nll.float().masked_fill(targets == pad_index, 0.0)
    logits, _ = model(inputs, themes=themes)
    return nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=pad_index, reduction="none")


@torch.no_grad()
def sequence_nll(
    model: LSTMLanguageModel,
    sequences: list[list[int]],
    themes: list[int],
    *,
    pad_index: int,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
) -> list[tuple[float, int]]:
    """Per sequence, (sum of -log p(target) in nats, number of targets), in the input order.

    Each sequence is framed (``<s> ... </s>``); every position after the first is a
    target, scored with the full left context. Sequences of similar length share a
    batch (less padding); the results are put back in the input order.
    """
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    for start in range(0, len(order), batch_size):
        group = order[start : start + batch_size]
        longest = max(len(sequences[i]) for i in group)
        tokens = torch.full((len(group), longest), pad_index, dtype=torch.long)
        for row, index in enumerate(group):
            tokens[row, : len(sequences[index])] = torch.tensor(sequences[index], dtype=torch.long)
        tokens = tokens.to(device)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # [batch, time-1] each
        group_themes = torch.tensor([themes[i] for i in group], dtype=torch.long, device=device)
        nll = _target_nll(model, inputs, targets, themes=group_themes, pad_index=pad_index)
        sums = nll.double().sum(dim=1).tolist()
        counts = (targets != pad_index).sum(dim=1).tolist()
        for row, index in enumerate(group):
            results[index] = (sums[row], counts[row])
    return results
