"""Test-split calibration figures of a task's classifiers: ECE (15 bins) and Brier, before and after temperature scaling.

Each model directory's temperature is the one training fitted on dev (``calibration.json``,
``pipeline.training.calibration``); test is never used to fit anything. ``evaluate_<task>`` adds:

* to the ``bilstm_attention`` row: ``calibration`` = the kept model's test ECE / Brier / NLL before
  and after its temperature, and ``<figure>_mean`` / ``<figure>_std`` over the seeds;
* with an ``ensemble.json``, a ``bilstm_ensemble`` row: the seed ensemble's test macro-F1 and
  accuracy (one run: std 0) and its calibration figures ("before" is the plain mean of the
  members' raw probabilities, "after" the members' calibrated mean under the ensemble's temperature);
* ``calibration.png``: the reliability diagram of the published model (the ensemble when there is one), before and after.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FIGURES = ("ece", "brier", "nll")


def calibration_figures(probabilities, targets, *, temperature: float, after=None) -> dict[str, Any]:
    """Test ECE, Brier and NLL of ``probabilities`` before and after ``temperature`` (or of ``after`` when given), 4 digits."""
    from pipeline.metrics import brier_score, expected_calibration_error, negative_log_likelihood
    from pipeline.models.calibration import apply_temperature

    probabilities = np.asarray(probabilities, dtype=np.float64)
    after = apply_temperature(probabilities, temperature) if after is None else np.asarray(after, dtype=np.float64)
    functions = {"ece": expected_calibration_error, "brier": brier_score, "nll": negative_log_likelihood}
    figures: dict[str, Any] = {"temperature": temperature}
    for name, function in functions.items():
        figures[f"{name}_before"] = round(function(probabilities, targets), 4)
        figures[f"{name}_after"] = round(function(after, targets), 4)
    return figures


def spread(runs: list[dict[str, Any]]) -> dict[str, float]:
    """``<figure>_<before|after>_mean`` / ``_std`` over the seeds' calibration figures (4 digits)."""
    from pipeline.metrics import mean_std

    result: dict[str, float] = {}
    for name in FIGURES:
        for when in ("before", "after"):
            mean, std = mean_std(run[f"{name}_{when}"] for run in runs)
            result[f"{name}_{when}_mean"], result[f"{name}_{when}_std"] = round(mean, 4), round(std, 4)
    return result


def ensemble_row(
    member_probabilities: list, targets, *, member_temperatures: list[float], temperature: float, labels: list[str]
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The ensemble's test figures (classification + calibration) and its probabilities before and after."""
    from pipeline.evaluation.classifiers import classification_metrics
    from pipeline.models.calibration import apply_temperature
    from pipeline.training.calibration import ensemble_probabilities

    before = np.mean([np.asarray(p, dtype=np.float64) for p in member_probabilities], axis=0)
    after = apply_temperature(ensemble_probabilities(member_probabilities, member_temperatures), temperature)
    predictions = after.argmax(axis=1).tolist()
    row = {
        **classification_metrics(targets=list(targets), predictions=predictions, labels=labels),
        "members": len(member_probabilities),
        "calibration": {
            **calibration_figures(before, targets, temperature=temperature, after=after),
            "member_temperatures": member_temperatures,
        },
    }
    return row, before, after


def plot_reliability(*, task: str, targets, before, after, title: str, path: Path) -> None:
    """Reliability diagram (accuracy against confidence, 15 bins) before and after calibration, with the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.metrics import ECE_BINS, expected_calibration_error, reliability_bins

    figure, (axis, counts_axis) = plt.subplots(
        2, 1, figsize=(6, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    axis.plot([0, 1], [0, 1], color="tab:gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    width = 1.0 / ECE_BINS
    for probabilities, name, color, offset in ((before, "before", "tab:orange", -0.25), (after, "after", "tab:blue", 0.25)):
        bins = reliability_bins(probabilities, targets)
        ece = expected_calibration_error(probabilities, targets)
        points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"], strict=True) if c is not None]
        axis.plot(*zip(*points, strict=True), marker="o", color=color, label=f"{name}: ECE {ece:.3f}")
        centres = [edge + width * (0.5 + offset / 2) for edge in bins["edges"][:-1]]
        counts_axis.bar(centres, bins["count"], width=width / 2, color=color, label=name)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy in the bin")
    axis.legend(loc="upper left")
    axis.set_title(f"{task}: {title}", fontsize=10)
    counts_axis.set_xlabel(f"confidence (top-class probability, {ECE_BINS} bins)")
    counts_axis.set_ylabel("test rows")
    figure.savefig(path, dpi=110)
    plt.close(figure)
