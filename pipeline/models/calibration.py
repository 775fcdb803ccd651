"""Calibration and seed-ensemble files of a classifier model directory (numpy only).

Two optional files sit beside ``config.json`` (written by the ``train_<task>`` stage,
``pipeline.training.calibration``):

    calibration.json  {"temperature": T, "fitted_on": "dev", "dev_ece_before", "dev_ece_after",
                       "dev_nll_before", "dev_nll_after", "dev_rows", "bins"}
    ensemble.json     {"members": ["seeds/13", "seeds/14", ...], "temperature": T_ens, "fitted_on": "dev", ...}

Temperature scaling divides the logits by ``T`` before the softmax. Because a softmax is
unchanged by adding a constant to every logit, ``softmax(log p / T)`` equals
``softmax(z / T)`` for ``p = softmax(z)``: :func:`apply_temperature` calibrates probabilities
(what the ONNX graph and an ensemble average give) exactly as it would the logits.

A directory without ``calibration.json`` has ``T = 1`` (directories trained before
calibration existed behave as they did). A damaged file is E320 naming it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import ModelError

CALIBRATION_NAME = "calibration.json"
ENSEMBLE_NAME = "ensemble.json"
RETRAIN_HINT = "Retrain the model (`jpipe run train_<task>`), copy the whole model directory again, or delete the file to use uncalibrated probabilities."


def apply_temperature(probabilities, temperature: float):
    """``softmax(log p / T)`` row-wise (float32 in, same dtype out); ``T == 1`` returns ``probabilities`` unchanged."""
    if temperature == 1.0:
        return probabilities
    probabilities = np.asarray(probabilities)
    logits = np.log(np.maximum(probabilities.astype(np.float64), 1e-300)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=-1, keepdims=True)).astype(probabilities.dtype)


def _read(path: Path) -> dict[str, Any]:
    from pipeline.io import read_json

    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise ModelError("E320", f"{path} is not valid JSON ({exc}).", hint=RETRAIN_HINT) from None
    if not isinstance(data, dict):
        raise ModelError("E320", f"{path} is not a JSON object.", hint=RETRAIN_HINT)
    return data


def _temperature(data: dict[str, Any], path: Path) -> float:
    value = data.get("temperature")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelError("E320", f"{path} has no valid temperature (a positive number), got {value!r}.", hint=RETRAIN_HINT)
    return float(value)


def read_calibration(directory: str | os.PathLike) -> dict[str, Any] | None:
    """``calibration.json`` of a model directory (its temperature checked), None when there is none."""
    path = Path(directory) / CALIBRATION_NAME
    if not path.exists():
        return None
    data = _read(path)
    data["temperature"] = _temperature(data, path)
    return data


def model_temperature(directory: str | os.PathLike) -> float:
    """The temperature of a model directory: its ``calibration.json``'s, else 1.0."""
    calibration = read_calibration(directory)
    return calibration["temperature"] if calibration else 1.0


def read_ensemble(directory: str | os.PathLike) -> dict[str, Any] | None:
    """``ensemble.json`` of a model directory (member paths resolved and checked), None when there is none."""
    directory = Path(directory)
    path = directory / ENSEMBLE_NAME
    if not path.exists():
        return None
    data = _read(path)
    members = data.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ModelError("E320", f"{path} lists no members (a list of model directories such as 'seeds/13').", hint=RETRAIN_HINT)
    data["temperature"] = _temperature(data, path)
    data["member_dirs"] = [directory / member for member in members]
    missing = [member for member, member_dir in zip(members, data["member_dirs"], strict=True) if not (member_dir / "config.json").exists()]
    if missing:
        raise ModelError(
            "E321",
            f"{path} lists members that hold no model: {', '.join(missing)}.",
            hint="Copy the whole model directory (with its seeds/), retrain the task, or delete ensemble.json to use the kept seed alone.",
        )
    return data


def write_calibration(directory: str | os.PathLike, calibration: dict[str, Any], *, name: str = CALIBRATION_NAME) -> None:
    """Write ``calibration.json`` (or ``ensemble.json`` with ``name``) atomically."""
    from pipeline.io import write_json

    write_json(Path(directory) / name, calibration)
