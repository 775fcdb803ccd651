"""Shared pieces of the neural stages: vocabulary, tokens file, device, seeds, artifacts.

Imports torch and numpy only. A model directory is self-describing:

    model_args.json   keyword arguments that rebuild the nn.Module
    vocab.json        index -> token list, plus the token field used
    labels.json       class names in logit order (classifiers)
    model.safetensors the state_dict (no pickle)
    metrics.json      what training measured
    train_log.jsonl   one line per epoch
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import atomic_path, read_json, read_jsonl, write_json

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


@dataclass
class Vocab:
    """Token <-> index mapping. Index 0 is always padding, 1 unknown."""

    itos: list[str]

    def __post_init__(self) -> None:
        self.stoi = {token: index for index, token in enumerate(self.itos)}

    @classmethod
    def build(cls, sequences: Iterable[list[str]], *, min_count: int = 1, specials: tuple[str, ...] = (PAD, UNK), max_size: int | None = None) -> "Vocab":
        counts = Counter(token for sequence in sequences for token in sequence)
        kept = [token for token, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if count >= min_count and token not in specials]
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
    def from_json(cls, data: dict[str, Any]) -> "Vocab":
        return cls(list(data["itos"]))


def read_token_rows(path: str | os.PathLike, *, split: str | None = None) -> Iterator[dict]:
    """Rows of ``data/tokens/knbc.jsonl``, optionally of one split."""
    for row in read_jsonl(path):
        if split is None or row.get("split") == split:
            yield row


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


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def pick_device(preference: str = "auto"):
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    import torch

    from pipeline.errors import PipelineError

    if preference == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device = 'cuda' but no CUDA GPU is visible.", hint="Use --set <section>.device=auto or cpu.")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def save_state_dict(module, path: str | os.PathLike) -> None:
    """Write a module's weights as safetensors, atomically.

    ``safetensors.torch.save_model`` stores a tensor shared by several parameters
    (tied embeddings) once; load such a module with :func:`load_weights`.
    """
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(module, str(tmp))


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


def load_weights(module, path: str | os.PathLike, device: str = "cpu") -> None:
    """Load safetensors weights into ``module`` (restoring tensors that were saved once for several names)."""
    from safetensors.torch import load_model

    missing, unexpected = load_model(module, str(path), strict=True, device=str(device))
    if missing or unexpected:  # strict=True raises first; kept for clarity
        raise RuntimeError(f"weights do not match the model: missing {missing}, unexpected {unexpected}")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """A resumable training checkpoint (tensors and plain data only), written atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> dict:
    import torch

    # weights_only=True: a checkpoint can hold tensors and plain containers, never code.
    return torch.load(path, map_location=device, weights_only=True)


class EpochLog:
    """Append-only JSONL of per-epoch metrics (flushed each line, so it survives a crash)."""

    def __init__(self, path: str | os.PathLike, *, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append and self.path.exists():
            self.path.unlink()

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def read(self) -> list[dict]:
        return list(read_jsonl(self.path)) if self.path.exists() else []


def write_model_dir(directory: str | os.PathLike, *, model, model_args: dict, vocab: Vocab, metrics: dict, labels: list[str] | None = None, extra: dict | None = None) -> None:
    """Write a self-describing model directory (see module docstring)."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "model_args.json", model_args)
    write_json(directory / "vocab.json", vocab.to_json(**(extra or {})), indent=None)
    if labels is not None:
        write_json(directory / "labels.json", labels)
    save_state_dict(model, directory / "model.safetensors")
    write_json(directory / "metrics.json", {**metrics, "torch_version": torch.__version__})


def read_model_dir(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON parts of a model directory (weights are loaded by the model's own loader)."""
    directory = Path(directory)
    if not (directory / "model_args.json").exists():
        from pipeline.errors import PipelineError

        raise PipelineError(f"No trained model in {directory}.", hint="Train it with `jpipe run`.")
    info = {
        "model_args": read_json(directory / "model_args.json"),
        "vocab": read_json(directory / "vocab.json"),
        "metrics": read_json(directory / "metrics.json") if (directory / "metrics.json").exists() else {},
    }
    if (directory / "labels.json").exists():
        info["labels"] = read_json(directory / "labels.json")
    return info
