"""Resumable training checkpoints (tensors and plain data, loaded with ``weights_only=True``) and the epoch log."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.io import atomic_path, read_jsonl


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """A resumable training checkpoint (tensors and plain data only), written atomically."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, *, device: str = "cpu") -> dict:
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
