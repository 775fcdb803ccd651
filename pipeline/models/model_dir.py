"""Model weights (safetensors, no pickle) and self-contained model directories.

A model directory holds everything needed to use the model, on any machine, from
any working directory:

    config.json        {"format_version", "architecture", "model_args", "tokenizer", ...}
    vocab.json         index -> token list, plus the token field and framing used
    labels.json        class names in logit order (classifiers)
    model.safetensors  the state_dict, saved from CPU tensors (loads on CPU or GPU)
    metrics.json       what training measured
    train_log.jsonl    one line per epoch

``tokenizer`` records how text must be tokenized for this model (Sudachi split mode,
token field, normalization), so inference never looks back into a project directory.
Directories written before format 1 (``model_args.json`` instead of ``config.json``)
are read as format 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError
from pipeline.io import atomic_path, read_json, write_json
from pipeline.models.vocab import Vocab

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
LEGACY_ARGS_NAME = "model_args.json"
WEIGHTS_NAME = "model.safetensors"


def save_state_dict(module, path: str | os.PathLike) -> None:
    """Write a module's weights as safetensors, atomically.

    ``safetensors.torch.save_model`` stores a tensor shared by several parameters
    (tied embeddings) once; load such a module with :func:`load_weights`.
    """
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(module, str(tmp))


DAMAGED_WEIGHTS_HINT = "Retrain the model (rerun its training stage with `jpipe run`), or copy the whole model directory again."


def _read_weights(path: str | os.PathLike, read):
    """Run ``read(path)``; a missing, truncated or corrupt weights file becomes E304 naming the file."""
    from safetensors import SafetensorError

    try:
        return read(str(path))
    except FileNotFoundError:
        raise ModelError("E304", f"{path} is missing.", hint=DAMAGED_WEIGHTS_HINT) from None
    except (SafetensorError, OSError) as exc:
        # SafetensorError: a truncated file or a damaged header; OSError: unreadable (permissions, I/O).
        raise ModelError("E304", f"{path} is damaged or truncated ({exc}).", hint=DAMAGED_WEIGHTS_HINT) from None


def load_state_dict(path: str | os.PathLike, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    return _read_weights(path, lambda name: load_file(name, device=str(device)))


def load_weights(module, path: str | os.PathLike, device: str = "cpu") -> None:
    """Load safetensors weights into ``module`` (restoring tensors that were saved once for several names)."""
    from safetensors.torch import load_model

    missing, unexpected = _read_weights(path, lambda name: load_model(module, name, strict=True, device=str(device)))
    if missing or unexpected:  # strict=True raises first; kept for clarity
        raise RuntimeError(f"weights do not match the model: missing {missing}, unexpected {unexpected}")


def write_model_dir(
    directory: str | os.PathLike,
    *,
    model,
    architecture: str,
    model_args: dict,
    vocab: Vocab,
    metrics: dict,
    labels: list[str] | None = None,
    tokenizer: dict[str, Any] | None = None,
    extra: dict | None = None,
) -> None:
    """Write a self-contained model directory (see the module docstring).

    ``extra`` goes into ``vocab.json`` beside the token list (token field, framing, task).
    """
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "model_args": model_args,
        "tokenizer": tokenizer or {},
        "labels": labels,
    }
    write_json(directory / CONFIG_NAME, config)
    write_json(directory / "vocab.json", vocab.to_json(**(extra or {})), indent=None)
    if labels is not None:
        write_json(directory / "labels.json", labels)
    save_state_dict(model, directory / WEIGHTS_NAME)
    write_json(directory / "metrics.json", {**metrics, "torch_version": torch.__version__})


def _legacy_architecture(model_args: dict[str, Any]) -> str | None:
    """The architecture of a format-0 directory, told from its constructor arguments."""
    if "num_classes" in model_args:
        return "AttentionClassifier"
    if "num_theme_slots" in model_args or "tie_weights" in model_args:
        return "LSTMLanguageModel"
    return None


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        config = read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ModelError(
            "E304", f"{path} is not valid JSON ({exc}).", hint="Copy the whole model directory again, or retrain the model."
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("model_args"), dict):
        raise ModelError("E304", f"{path} has no model_args table.", hint="Copy the whole model directory again, or retrain the model.")
    return config


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a model directory, checked for format version (legacy dirs read as format 0)."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.exists():
        legacy = directory / LEGACY_ARGS_NAME
        if legacy.exists():
            args = read_json(legacy)
            return {"format_version": 0, "architecture": _legacy_architecture(args), "model_args": args, "tokenizer": {}}
        what = "directory" if directory.is_dir() else "path"
        raise ModelError(
            "E301",
            f"No trained model in {directory} (no {CONFIG_NAME}; the {what} {'exists' if directory.exists() else 'does not exist'}).",
            hint="Train one with `jpipe run`, or give the path of a model directory.",
        )
    version = (config := _read_config_json(path)).get("format_version")
    # bool is an int subclass: true/false is no version either.
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 0:
        raise ModelError(
            "E302",
            f"{path} has model format version {version!r}; this jpipe reads model formats 0 to {FORMAT_VERSION}.",
            hint=f"Use the jpipe version that wrote the model (format {version!r}), or retrain the model with this version (format {FORMAT_VERSION}).",
        )
    return config


def require_model_dir(directory: str | os.PathLike, *, train_hint: str) -> Path:
    """``directory`` when it holds a model (format 1 or legacy), else ModelError E301 with ``train_hint``."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).exists() and not (directory / LEGACY_ARGS_NAME).exists():
        raise ModelError("E301", f"No trained model in {directory}.", hint=train_hint)
    return directory


def model_split_mode(tokenizer: dict[str, Any], *, directory: str | os.PathLike) -> str:
    """The Sudachi split mode a model was trained with (``C`` for directories that do not record it).

    Tokenizer settings this version cannot reproduce (another split mode or normalization) are an error:
    the model would see tokens unlike its training data.
    """
    split_mode = tokenizer.get("split_mode") or "C"
    normalization = tokenizer.get("normalization") or "sudachi"
    if split_mode not in ("A", "B", "C") or normalization != "sudachi":
        raise ModelError(
            "E315",
            f"{directory} was trained with tokenizer settings this version cannot reproduce "
            f"(split mode {split_mode!r}, normalization {normalization!r}; supported: split modes A, B, C with Sudachi normalization).",
            hint="Use the jpipe version that wrote the model, or retrain the model with this version.",
        )
    return split_mode


def read_model_dir(directory: str | os.PathLike, *, architecture: str | None = None) -> dict[str, Any]:
    """The JSON parts of a model directory (weights are loaded by the model's own loader).

    With ``architecture``, a directory that holds another kind of model is an error.
    """
    directory = Path(directory)
    config = read_model_config(directory)
    found = config.get("architecture")
    if architecture is not None and found is not None and found != architecture:
        raise ModelError(
            "E303",
            f"{directory} holds a model of architecture {found}, not {architecture}.",
            hint=f"Give the path of a model directory whose config.json names architecture {architecture}.",
        )
    for name in ("vocab.json", WEIGHTS_NAME):
        if not (directory / name).exists():
            raise ModelError(
                "E304",
                f"{directory} has no {name}: the model directory is incomplete.",
                hint="Copy the whole directory, or retrain the model.",
            )
    info = {
        "config": config,
        "model_args": config["model_args"],
        "tokenizer": config.get("tokenizer") or {},
        "vocab": read_json(directory / "vocab.json"),
        "metrics": read_json(directory / "metrics.json") if (directory / "metrics.json").exists() else {},
    }
    if (directory / "labels.json").exists():
        info["labels"] = read_json(directory / "labels.json")
    return info


def seed_model_dirs(model_dir: str | os.PathLike) -> list[Path]:
    """``<model_dir>/seeds/<seed>/`` (every seed of a stage that trained several), in seed order; [] for one seed."""
    from pipeline.paths import SEEDS_DIR

    root = Path(model_dir) / SEEDS_DIR
    return sorted((path for path in root.iterdir() if path.name.isdigit()), key=lambda path: int(path.name)) if root.is_dir() else []
