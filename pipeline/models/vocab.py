"""Vocabulary and pretrained-vector tables (numpy only): token <-> index, embedding matrices."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


@dataclass
class Vocab:
    """Token <-> index mapping. Index 0 is always padding, 1 unknown."""

    itos: list[str]

    def __post_init__(self) -> None:
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(
        cls, sequences: Iterable[list[str]], *, min_count: int = 1, specials: tuple[str, ...] = (PAD, UNK), max_size: int | None = None
    ) -> Vocab:
        counts = Counter(token for sequence in sequences for token in sequence)
        kept = [
            token for token, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if count >= min_count and token not in specials
        ]
        if max_size is not None:
            kept = kept[: max(0, max_size - len(specials))]
        return cls(list(specials) + kept)

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_index(self) -> int:
        return self.stoi[PAD]

    @property
    def unk_index(self) -> int:
        return self.stoi[UNK]

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.unk_index
        return [self.stoi.get(token, unk) for token in tokens]

    def decode(self, indices: Iterable[int]) -> list[str]:
        return [self.itos[index] for index in indices]

    def to_json(self, **extra: Any) -> dict[str, Any]:
        return {"itos": self.itos, **extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(list(data["itos"]))


def read_word2vec_text(path: str | os.PathLike, *, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read a word2vec text-format file (``N DIM`` header, then ``word v1 v2 ...``) with numpy only."""
    words: list[str] = []
    with open(path, encoding="utf-8") as handle:
        count, dim = (int(x) for x in handle.readline().split())
        rows = np.zeros((count if limit is None else min(count, limit), dim), dtype=np.float32)
        for index, line in enumerate(handle):
            if index >= rows.shape[0]:
                break
            parts = line.rstrip("\n").rsplit(" ", dim)
            words.append(parts[0])
            rows[index] = np.asarray(parts[1:], dtype=np.float32)
    return words, rows[: len(words)]


def embedding_matrix(vocab: Vocab, words: list[str], vectors: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, float]:
    """An embedding table for ``vocab`` from pretrained vectors; returns (matrix, coverage).

    Words without a pretrained vector get small random rows; padding is zero.
    """
    rng = np.random.default_rng(seed)
    scale = float(vectors.std()) if vectors.size else 0.1
    matrix = rng.normal(0.0, scale, size=(len(vocab), vectors.shape[1])).astype(np.float32)
    matrix[vocab.pad_index] = 0.0
    index_of = {word: i for i, word in enumerate(words)}
    found = 0
    for token, row in vocab.stoi.items():
        source = index_of.get(token)
        if source is not None:
            matrix[row] = vectors[source]
            found += 1
    coverage = found / max(1, len(vocab) - 2)
    return matrix, coverage
