"""Shared torch layers: padding masks and attention pooling scorers (imports torch only)."""

from __future__ import annotations

import math

import torch
from torch import nn


def lengths_to_mask(lengths: torch.Tensor, max_length: int, device: torch.device | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, max_length) bool mask, True on real tokens."""
    lengths = lengths.to(device) if device is not None else lengths
    positions = torch.arange(max_length, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


class AdditiveAttention(nn.Module):
    """Bahdanau-style scorer without a decoder: score_t = v . tanh(W h_t + b).

    ``v`` acts as the learned "what matters for this task" query.
    """

    def __init__(self, input_size: int, attention_size: int) -> None:
        super().__init__()
        self.project = nn.Linear(input_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        # states (B, T, D) -> scores (B, T)
        return self.score(torch.tanh(self.project(states))).squeeze(-1)


class ScaledDotAttention(nn.Module):
    """score_t = (q . W_k h_t) / sqrt(A) with one learned query vector q of size A."""

    def __init__(self, input_size: int, attention_size: int) -> None:
        super().__init__()
        self.keys = nn.Linear(input_size, attention_size, bias=False)
        self.query = nn.Parameter(torch.randn(attention_size) / math.sqrt(attention_size))
        self.scale = 1.0 / math.sqrt(attention_size)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        # (B, T, A) @ (A,) -> (B, T)
        return torch.matmul(self.keys(states), self.query) * self.scale


ATTENTION_SCORERS = {"additive": AdditiveAttention, "scaled_dot": ScaledDotAttention}


def masked_attention_pool(scores: torch.Tensor, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the real positions of ``scores`` (B, T) and the weighted sum of ``states`` (B, T, D).

    Returns pooled (B, D) and weights (B, T). Scores go through float32 even under autocast:
    -inf and softmax are safer there. Padded positions get weight exactly 0.
    """
    scores = scores.float().masked_fill(~mask, float("-inf"))  # (B, T)
    weights = torch.softmax(scores, dim=-1)  # (B, T)
    pooled = torch.bmm(weights.unsqueeze(1).to(states.dtype), states).squeeze(1)  # (B, 1, T) @ (B, T, D) -> (B, D)
    return pooled, weights
