"""BiLSTM BIO tagger: the span baseline (b) of the opinion extractor's evaluation (torch only).

token ids (B, S) -> embedding -> BiLSTM -> linear -> tag logits (B, S, 3) for O / B / I.
"""

from __future__ import annotations

import torch
from torch import nn

TAGS = ("O", "B", "I")


class BiLSTMTagger(nn.Module):
    def __init__(
        self, *, vocab_size: int, embedding_dim: int = 64, hidden_size: int = 64, dropout: float = 0.3, pad_index: int = 0
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(2 * hidden_size, len(TAGS))

    def forward(self, token_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, S) ids, (B,) CPU lengths -> (B, S, 3) tag logits (padding positions are garbage: mask them)."""
        embedded = self.dropout(self.embedding(token_ids))  # (B, S, E)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=token_ids.shape[1])  # (B, S, 2H)
        return self.output(self.dropout(states))


def spans_from_tags(tags: list[int]) -> list[tuple[int, int]]:
    """Token ranges [start, end) of B I* runs (an I without a B starts a span too)."""
    spans: list[tuple[int, int]] = []
    start = None
    for index, tag in enumerate([*tags, 0]):
        if tag == 1 or (tag == 2 and start is None) or tag == 0:
            if start is not None:
                spans.append((start, index))
                start = None
            if tag in (1, 2):
                start = index
    return spans
