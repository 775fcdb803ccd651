"""Model weights (safetensors, no pickle) and self-describing model directories.

A model directory:

    model_args.json   keyword arguments that rebuild the nn.Module
    vocab.json        index -> token list, plus the token field used
    labels.json       class names in logit order (classifiers)
    model.safetensors the state_dict (no pickle)
    metrics.json      what training measured
    train_log.jsonl   one line per epoch
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.io import atomic_path, read_json, write_json
from pipeline.models.vocab import Vocab

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
