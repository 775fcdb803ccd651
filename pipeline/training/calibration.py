"""Temperature scaling fitted on dev, and the calibration / ensemble files a training stage publishes.

:func:`fit_temperature` finds the one temperature ``T`` (logits divided by ``T``) that minimises the
mean negative log-likelihood of the dev labels (Guo et al. 2017). The NLL is convex in ``1 / T``
(a log-sum-exp of linear functions minus a linear one), so a golden-section search on ``log T``
over ``[1/20, 20]`` finds its minimum; no gradient, no torch. Temperature scaling never changes
the argmax: labels and macro-F1 stay what they were, only the probabilities move.

:func:`calibrate_seeds` is what ``train_<task>`` runs after publishing: every seed's dev
probabilities give that seed's ``calibration.json`` (the published directory gets its kept
seed's); with ``ensemble = true`` the members' calibrated dev probabilities are averaged and a
second temperature is fitted on that average, into ``ensemble.json`` (``pipeline.models.calibration``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.metrics import ECE_BINS, expected_calibration_error, negative_log_likelihood
from pipeline.models.calibration import CALIBRATION_NAME, ENSEMBLE_NAME, apply_temperature, write_calibration

logger = logging.getLogger(__name__)

LOG_T_RANGE = (math.log(0.05), math.log(20.0))
GOLDEN = (math.sqrt(5) - 1) / 2


def _log_probabilities(probabilities) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), 1e-300))


def temperature_nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``targets`` under ``softmax(logits / temperature)``."""
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scaled).sum(axis=1))
    return float((log_norm - scaled[np.arange(len(targets)), targets]).mean())


def fit_temperature(*, targets, logits=None, probabilities=None, iterations: int = 80) -> float:
    """The temperature minimising the dev NLL, from ``logits`` (N, C) or ``probabilities`` (N, C: their logs are used).

    1.0 for no rows. The result lies in [0.05, 20]; rounded to 5 digits.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if (logits is None) == (probabilities is None):
        raise ValueError("give logits or probabilities")
    if len(targets) == 0:
        return 1.0
    z = np.asarray(logits, dtype=np.float64) if logits is not None else _log_probabilities(probabilities)
    low, high = LOG_T_RANGE
    inner_low, inner_high = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
    f_low, f_high = (temperature_nll(z, targets, math.exp(x)) for x in (inner_low, inner_high))
    for _ in range(iterations):
        if f_low <= f_high:
            high, inner_high, f_high = inner_high, inner_low, f_low
            inner_low = high - GOLDEN * (high - low)
            f_low = temperature_nll(z, targets, math.exp(inner_low))
        else:
            low, inner_low, f_low = inner_low, inner_high, f_high
            inner_high = low + GOLDEN * (high - low)
            f_high = temperature_nll(z, targets, math.exp(inner_high))
    return round(math.exp((low + high) / 2), 5)


def calibration_record(probabilities, targets, *, temperature: float | None = None) -> dict[str, Any]:
    """``calibration.json``'s content for dev ``probabilities``: the fitted (or given) temperature, dev ECE and NLL before/after."""
    targets = np.asarray(targets, dtype=np.int64)
    temperature = fit_temperature(probabilities=probabilities, targets=targets) if temperature is None else temperature
    after = apply_temperature(np.asarray(probabilities, dtype=np.float64), temperature)
    return {
        "temperature": temperature,
        "fitted_on": "dev",
        "method": "temperature scaling (dev NLL)",
        "dev_rows": int(len(targets)),
        "bins": ECE_BINS,
        "dev_ece_before": round(expected_calibration_error(probabilities, targets), 5),
        "dev_ece_after": round(expected_calibration_error(after, targets), 5),
        "dev_nll_before": round(negative_log_likelihood(probabilities, targets), 5),
        "dev_nll_after": round(negative_log_likelihood(after, targets), 5),
    }


def ensemble_probabilities(member_probabilities: list, temperatures: list[float]):
    """The mean of the members' calibrated probabilities (each member's own temperature)."""
    stacked = [apply_temperature(np.asarray(p, dtype=np.float64), t) for p, t in zip(member_probabilities, temperatures, strict=True)]
    return np.mean(stacked, axis=0)


def calibrate_seeds(
    output_dir: Path, *, seeds: list[int], dev_probabilities: list, targets, kept_index: int, ensemble: bool
) -> dict[str, Any]:
    """Write ``calibration.json`` into ``output_dir/seeds/<seed>/`` per seed and into ``output_dir`` (the kept
    seed's); with ``ensemble`` (and more than one seed) also ``output_dir/ensemble.json``. Returns the stage summary part."""
    from pipeline.paths import SEEDS_DIR

    records = [calibration_record(probabilities, targets) for probabilities in dev_probabilities]
    several = len(seeds) > 1
    if several:
        for seed, record in zip(seeds, records, strict=True):
            write_calibration(Path(output_dir) / SEEDS_DIR / str(seed), record)
    write_calibration(output_dir, records[kept_index], name=CALIBRATION_NAME)
    summary: dict[str, Any] = {
        "temperature": records[kept_index]["temperature"],
        "dev_ece_before": records[kept_index]["dev_ece_before"],
        "dev_ece_after": records[kept_index]["dev_ece_after"],
    }
    if ensemble and several:
        averaged = ensemble_probabilities(dev_probabilities, [record["temperature"] for record in records])
        record = calibration_record(averaged, targets)
        write_calibration(
            output_dir,
            {"members": [f"{SEEDS_DIR}/{seed}" for seed in seeds], **record, "member_temperatures": [r["temperature"] for r in records]},
            name=ENSEMBLE_NAME,
        )
        summary.update(
            ensemble_members=len(seeds), ensemble_temperature=record["temperature"], ensemble_dev_ece_after=record["dev_ece_after"]
        )
    elif ensemble:
        logger.warning("ensemble = true needs seeds > 1: the model directory holds one model, no ensemble.json written")
    return summary


# Settings that act after training (calibration, which seeds are kept): left out of the checkpoint signature,
# so turning them on or off reuses the trained seeds' checkpoints.
POST_TRAINING_KEYS = ("calibrate", "ensemble")


def training_settings(section) -> dict[str, Any]:
    """``section`` without :data:`POST_TRAINING_KEYS` (what the checkpoint signature hashes)."""
    return {key: value for key, value in dict(section).items() if key not in POST_TRAINING_KEYS}


def calibrate_trained(ctx, output: str, trained: list, *, dev_split, section) -> dict[str, Any]:
    """``train_<task>``'s last step: the dev probabilities of every trained seed (``TrainedModel``) -> the calibration
    files of the published directory ``output`` (:func:`calibrate_seeds`). Nothing with ``calibrate = false``
    (then ``ensemble = true`` writes ``ensemble.json`` with temperature 1 for the members and the average)."""
    from pipeline.metrics import median_index
    from pipeline.models.classifier import predict_split
    from pipeline.training import distributed

    if not distributed.current().main:
        return {}
    dev = [predict_split(model.model, dev_split, device=next(model.model.parameters()).device)["probabilities"] for model in trained]
    targets = np.asarray(dev_split.labels, dtype=np.int64)
    kept = median_index([model.metrics["dev_macro_f1"] for model in trained]) if len(trained) > 1 else 0
    seeds = [model.metrics.get("seed", section["seed"]) for model in trained]
    ensemble = bool(section.get("ensemble", False))
    if section.get("calibrate", True):
        return calibrate_seeds(ctx.output(output), seeds=seeds, dev_probabilities=dev, targets=targets, kept_index=kept, ensemble=ensemble)
    if ensemble and len(trained) > 1:
        from pipeline.paths import SEEDS_DIR

        record = calibration_record(ensemble_probabilities(dev, [1.0] * len(dev)), targets, temperature=1.0)
        write_calibration(ctx.output(output), {"members": [f"{SEEDS_DIR}/{seed}" for seed in seeds], **record}, name=ENSEMBLE_NAME)
        return {"ensemble_members": len(seeds)}
    return {}
