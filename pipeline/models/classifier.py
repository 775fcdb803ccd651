"""The BiLSTM + attention sentence/review classifier (topic and sentiment share it).

    token ids (B, T) --embedding--> (B, T, E)
        --packed bidirectional LSTM/GRU--> forward, backward states (B, T, H) each
        --merge concat|sum|ave|mul--> (B, T, D)      D = 2H for concat, else H
        --attention pooling over the real tokens--> (B, D) and weights (B, T)
        --dropout, linear--> logits (B, C)

Padding never influences the result: the recurrent layer runs on a packed
sequence (it never reads the padded steps), and the attention scores of padded
positions are set to -inf before the softmax, so their weights are exactly 0.
Adding extra padding columns to a batch therefore changes neither the logits
nor the weights of the real tokens.

Imports torch only. A trained model lives in a model directory
(``pipeline.models.model_dir.write_model_dir``); ``AttentionClassifier.from_dir`` and
``load_classifier`` rebuild it on any device from ``config.json`` and
``model.safetensors``. ``predict_split`` scores an encoded split (training's dev
evaluation and the test-split evaluation share it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pipeline.errors import ConfigError
from pipeline.models.batching import EncodedSplit, bucket_batches, iterate_batches
from pipeline.models.layers import ATTENTION_SCORERS, lengths_to_mask, masked_attention_pool
from pipeline.models.model_dir import load_state_dict, read_model_dir
from pipeline.models.vocab import Vocab

__all__ = [
    "ATTENTIONS",
    "CELLS",
    "MERGE_MODES",
    "AttentionClassifier",
    "LoadedClassifier",
    "lengths_to_mask",
    "load_classifier",
    "predict_split",
]

MERGE_MODES = ("concat", "sum", "ave", "mul")
CELLS = ("lstm", "gru")
ATTENTIONS = tuple(ATTENTION_SCORERS)
EVAL_BATCH_SIZE = 256


class AttentionClassifier(nn.Module):
    """Embedding -> bidirectional LSTM/GRU (packed) -> merge -> masked attention -> dropout -> linear.

    ``forward(token_ids, lengths)`` returns ``(logits, attention)``: logits (B, C) and
    attention weights (B, T) that sum to 1 over each row's real tokens and are 0 on padding.
    All constructor arguments are keyword-only and JSON-serialisable: they are ``model_args`` in ``config.json``.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embedding_dim: int,
        num_classes: int,
        hidden_size: int = 128,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional_merge: str = "concat",
        attention: str = "additive",
        attention_size: int = 128,
        dropout: float = 0.3,
        embedding_dropout: float = 0.0,
        word_dropout: float = 0.0,
        freeze_embeddings: bool = False,
        padding_index: int = 0,
        unk_index: int = 1,
    ) -> None:
        super().__init__()
        for name, value, choices in (
            ("cell", cell, CELLS),
            ("bidirectional_merge", bidirectional_merge, MERGE_MODES),
            ("attention", attention, ATTENTIONS),
        ):
            if value not in choices:
                raise ConfigError(
                    "E109",
                    f"AttentionClassifier: {name} must be one of {choices}, got {value!r}.",
                    hint=f"Use one of: {', '.join(choices)}.",
                )
        self.hidden_size = hidden_size
        self.merge = bidirectional_merge
        self.word_dropout = word_dropout
        self.padding_index = padding_index
        self.unk_index = unk_index
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_index)
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        rnn_class = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn_class(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            # dropout between stacked layers (PyTorch warns when set with one layer)
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.output_size = 2 * hidden_size if bidirectional_merge == "concat" else hidden_size
        self.attention = ATTENTION_SCORERS[attention](self.output_size, attention_size)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(self.output_size, num_classes)

    def load_pretrained_embeddings(self, matrix) -> None:
        """Copy a (vocab_size, embedding_dim) numpy/tensor table into the embedding."""
        with torch.no_grad():
            self.embedding.weight.copy_(torch.as_tensor(matrix, dtype=self.embedding.weight.dtype))

    def _merge(self, states: torch.Tensor) -> torch.Tensor:
        # states (B, T, 2H): forward directions first, then backward (PyTorch layout)
        if self.merge == "concat":
            return states
        forward, backward = states[..., : self.hidden_size], states[..., self.hidden_size :]
        if self.merge == "sum":
            return forward + backward
        if self.merge == "ave":
            return (forward + backward) / 2
        return forward * backward

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """token_ids (B, T) long, lengths (B,) long (>= 1; a CPU tensor avoids a device sync).

        Returns logits (B, C) and attention weights (B, T).
        """
        batch_size, max_length = token_ids.shape
        lengths_cpu = lengths.to("cpu")
        if self.training and self.word_dropout > 0:
            # Word dropout: hide whole tokens behind <unk> so the model cannot lean on a
            # single memorised word (padding stays padding).
            hide = (torch.rand(token_ids.shape, device=token_ids.device) < self.word_dropout) & (token_ids != self.padding_index)
            token_ids = token_ids.masked_fill(hide, self.unk_index)
        embedded = self.embedding_dropout(self.embedding(token_ids))  # (B, T, E)
        # enforce_sorted=False: batches need not be sorted (the batcher sorts them anyway,
        # which makes the internal sort a no-op permutation).
        packed = pack_padded_sequence(embedded, lengths_cpu, batch_first=True, enforce_sorted=False)
        packed_states, _ = self.rnn(packed)
        # total_length keeps T even when the longest row is shorter than the padded width.
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=max_length)  # (B, T, 2H)
        states = self._merge(states)  # (B, T, D)

        mask = lengths_to_mask(lengths_cpu, max_length, device=token_ids.device)  # (B, T)
        pooled, weights = masked_attention_pool(self.attention(states), states, mask)  # (B, D), (B, T)
        logits = self.output(self.dropout(pooled))  # (B, C)
        return logits, weights

    # ------------------------------------------------------------ persistence
    @classmethod
    def from_dir(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> AttentionClassifier:
        """Rebuild a trained model from ``config.json`` + ``model.safetensors`` on ``device`` (eval mode).

        The weights are stored as CPU tensors, so a model trained on a GPU loads on a CPU-only machine.
        """
        directory = Path(directory)
        info = read_model_dir(directory, architecture="AttentionClassifier")
        model = cls(**info["model_args"])
        model.load_state_dict(load_state_dict(directory / "model.safetensors", device="cpu"))
        return model.to(device).eval()


@dataclass
class LoadedClassifier:
    """A trained classifier with everything needed to encode new text."""

    model: AttentionClassifier
    vocab: Vocab
    labels: list[str]
    token_field: str
    max_tokens: int
    task: str
    metrics: dict[str, Any]
    device: torch.device

    def encode(self, tokens: list[str]) -> list[int]:
        """Token strings -> ids, at least one id (an empty text becomes one <unk>)."""
        return self.vocab.encode(tokens) or [self.vocab.unk_index]


def load_classifier(directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> LoadedClassifier:
    """A model directory -> ``LoadedClassifier`` (model in eval mode on ``device``)."""
    directory = Path(directory)
    info = read_model_dir(directory, architecture="AttentionClassifier")
    vocab_json = info["vocab"]
    model = AttentionClassifier.from_dir(directory, device=device)
    return LoadedClassifier(
        model=model,
        vocab=Vocab.from_json(vocab_json),
        labels=list(info["labels"]),
        token_field=vocab_json.get("token_field", "norm"),
        max_tokens=int(vocab_json.get("max_tokens", 200)),
        task=vocab_json.get("task", directory.name),
        metrics=info.get("metrics", {}),
        device=torch.device(device),
    )


@torch.inference_mode()
def predict_split(
    model: AttentionClassifier,
    split: EncodedSplit,
    *,
    device: torch.device,
    amp: bool = False,
    loss_fn: nn.Module | None = None,
    batch_size: int = EVAL_BATCH_SIZE,
) -> dict[str, Any]:
    """Predictions (N,), probabilities (N, C) and mean loss (None without ``loss_fn``) of a split, in split order."""
    model.eval()
    num_rows = len(split)
    probabilities = torch.zeros((num_rows, model.output.out_features), dtype=torch.float32)
    loss_sum = torch.zeros((), device=device)  # summed on the device: one host sync at the end
    for batch in iterate_batches(split, bucket_batches(split.lengths, batch_size=batch_size, shuffle=False), device=device):
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits, _ = model(batch.token_ids, batch.lengths)  # (B, C)
        logits = logits.float()
        if loss_fn is not None:
            loss_sum += loss_fn(logits, batch.labels) * len(batch.indices)
        probabilities[torch.from_numpy(batch.indices)] = torch.softmax(logits, dim=-1).cpu()
    return {
        "probabilities": probabilities.numpy(),
        "predictions": probabilities.argmax(dim=-1).numpy(),
        "loss": float(loss_sum.item()) / max(1, num_rows) if loss_fn is not None else None,
    }
