"""Calibration arithmetic without any model: ECE / Brier / NLL on hand-computed cases, temperature fitting,
applying a temperature to probabilities, and the calibration files' checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import ModelError
from pipeline.metrics import brier_score, expected_calibration_error, negative_log_likelihood, reliability_bins
from pipeline.models.calibration import apply_temperature, model_temperature, read_calibration, read_ensemble
from pipeline.training.calibration import calibration_record, ensemble_probabilities, fit_temperature, temperature_nll


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_ece_on_hand_computed_cases():
    # confidences 0.9 (right), 0.6 (wrong), 0.7 (right), 0.8 (right): four different bins of width 1/15
    probabilities = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]]
    assert expected_calibration_error(probabilities, [0, 1, 1, 0]) == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    # one bin holding a right and a wrong row at confidence 0.95: |0.5 - 0.95|
    assert expected_calibration_error([[0.95, 0.05], [0.95, 0.05]], [0, 1]) == pytest.approx(0.45)
    # 3 rows in one bin (2 right at 0.9) and 1 alone (right at 0.5): (3 * |2/3 - 0.9| + 1 * |1 - 0.5|) / 4
    rows = [[0.9, 0.1]] * 3 + [[0.5, 0.5]]
    assert expected_calibration_error(rows, [0, 0, 1, 0]) == pytest.approx((3 * abs(2 / 3 - 0.9) + 0.5) / 4)
    # perfectly confident and right: 0; no rows: 0
    assert expected_calibration_error([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == 0.0
    assert expected_calibration_error(np.zeros((0, 3)), []) == 0.0


def test_ece_bins_are_upper_closed_and_reliability_bins_agree():
    bins = reliability_bins([[1 / 15 + 1e-9, 1 - 1 / 15 - 1e-9], [0.5, 0.5], [1.0, 0.0]], [1, 0, 0])
    assert len(bins["count"]) == 15 and len(bins["edges"]) == 16
    assert bins["count"][13] == 1 and bins["count"][7] == 1 and bins["count"][14] == 1 and sum(bins["count"]) == 3
    assert bins["accuracy"][14] == 1.0 and bins["confidence"][0] is None


def test_brier_and_nll_on_hand_computed_cases():
    # (0.9-1)^2 + 0.1^2 = 0.02 ; 0.6^2 + (0.4-1)^2 = 0.72
    assert brier_score([[0.9, 0.1], [0.6, 0.4]], [0, 1]) == pytest.approx((0.02 + 0.72) / 2)
    assert brier_score([[1 / 3] * 3], [2]) == pytest.approx((1 / 3 - 1) ** 2 + 2 / 9)
    assert negative_log_likelihood([[0.9, 0.1], [0.6, 0.4]], [0, 1]) == pytest.approx(-(np.log(0.9) + np.log(0.4)) / 2)


def test_apply_temperature_equals_softmax_of_scaled_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(50, 4))
    for temperature in (0.5, 1.0, 2.5):
        got = apply_temperature(softmax(logits).astype(np.float32), temperature)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, softmax(logits / temperature), atol=1e-6)
    # the argmax never changes
    assert (apply_temperature(softmax(logits), 4.0).argmax(axis=1) == logits.argmax(axis=1)).all()


@pytest.mark.parametrize("true_temperature", [0.5, 2.0, 4.0])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(20_000, 5))
    # labels drawn from softmax(logits / T): the NLL-optimal temperature is T
    cumulative = softmax(logits / true_temperature).cumsum(axis=1)
    targets = (rng.random((len(logits), 1)) > cumulative).sum(axis=1)
    fitted = fit_temperature(logits=logits, targets=targets)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    # the same from the probabilities (their logs differ from the logits by a constant per row)
    assert fit_temperature(probabilities=softmax(logits), targets=targets) == pytest.approx(fitted, rel=1e-3)
    # it is the minimum: both neighbours have a higher NLL
    for other in (fitted * 0.9, fitted * 1.1):
        assert temperature_nll(logits, targets, other) > temperature_nll(logits, targets, fitted)


def test_calibration_record_lowers_the_nll_of_overconfident_probabilities():
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=2.0, size=(5000, 3))
    cumulative = softmax(logits).cumsum(axis=1)
    targets = (rng.random((len(logits), 1)) > cumulative).sum(axis=1)
    record = calibration_record(softmax(logits * 3), targets)  # 3x overconfident: T close to 3
    assert record["temperature"] == pytest.approx(3.0, rel=0.1)
    assert record["dev_nll_after"] < record["dev_nll_before"] and record["dev_ece_after"] < record["dev_ece_before"]
    assert record["fitted_on"] == "dev" and record["dev_rows"] == 5000 and record["bins"] == 15


def test_ensemble_probabilities_average_the_calibrated_members():
    a, b = softmax([[2.0, 0.0], [0.0, 1.0]]), softmax([[0.5, 0.0], [3.0, 0.0]])
    got = ensemble_probabilities([a, b], [2.0, 1.0])
    np.testing.assert_allclose(got, (apply_temperature(a, 2.0) + b) / 2)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)


def test_calibration_files_absent_corrupt_or_invalid(tmp_path):
    assert read_calibration(tmp_path) is None and model_temperature(tmp_path) == 1.0 and read_ensemble(tmp_path) is None
    path = tmp_path / "calibration.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="calibration.json") as error:
        model_temperature(tmp_path)
    assert error.value.code == "E320" and str(path) in str(error.value)
    for bad in ({"temperature": -1}, {"temperature": "2"}, {"temperature": True}, [], {}):
        path.write_text(json.dumps(bad), encoding="utf-8")
        with pytest.raises(ModelError) as error:
            model_temperature(tmp_path)
        assert error.value.code == "E320"
    path.write_text(json.dumps({"temperature": 1.5}), encoding="utf-8")
    assert model_temperature(tmp_path) == 1.5
    ensemble = tmp_path / "ensemble.json"
    ensemble.write_text(json.dumps({"members": [], "temperature": 1.0}), encoding="utf-8")
    with pytest.raises(ModelError) as error:
        read_ensemble(tmp_path)
    assert error.value.code == "E320" and "ensemble.json" in str(error.value)
    ensemble.write_text(json.dumps({"members": ["seeds/13"], "temperature": 1.0}), encoding="utf-8")
    with pytest.raises(ModelError) as error:  # a member that holds no model
        read_ensemble(tmp_path)
    assert error.value.code == "E321" and "seeds/13" in str(error.value)


def test_classifier_table_shows_calibration_and_the_ensemble_row():
    from pipeline.evaluation.report import classifier_table

    figures = {f"{k}_{w}_{s}": v for k in ("ece", "brier") for w, v in (("before", 0.1), ("after", 0.04)) for s in ("mean", "std")}
    bilstm = {"macro_f1": 0.7, "macro_f1_mean": 0.7, "macro_f1_std": 0.01, "accuracy": 0.7, "seeds": 5, "calibration": figures}
    ensemble = {
        "macro_f1": 0.72,
        "accuracy": 0.73,
        "seeds": 1,
        "calibration": {"temperature": 0.9, **{k: 0.05 for k in ("ece_before", "ece_after", "brier_before", "brier_after")}},
    }
    table = classifier_table({"topic": {"bilstm_attention": bilstm, "bilstm_ensemble": ensemble}})
    assert "| bilstm_ensemble | 1 | 0.7200 ± 0.0000 | 0.7200 |" in table
    assert "| bilstm_attention (mean ± std over the seeds) | 0.1000 ± 0.1000 | 0.0400 ± 0.0400 |" in table
    assert "| bilstm_ensemble (T = 0.9) | 0.0500 | 0.0500 | 0.0500 | 0.0500 |" in table
    assert "Calibration" not in classifier_table({"topic": {"bilstm_attention": {k: v for k, v in bilstm.items() if k != "calibration"}}})
