"""Calibration and seed ensembles on a tiny trained classifier: what train_<task> writes, what
``Classifier.from_dir`` does with it, `jpipe classify --no-calibration`, and the evaluation's figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sudachipy")

from typer.testing import CliRunner  # noqa: E402

from pipeline.cli import app  # noqa: E402
from pipeline.errors import ModelError  # noqa: E402
from pipeline.inference.classifier import Classifier  # noqa: E402
from pipeline.models.calibration import apply_temperature  # noqa: E402
from pipeline.paths import classifier_dir, task_report_dir  # noqa: E402
from tests.conftest import fast_overrides, png_size, run_stage, write_tiny_project  # noqa: E402

TEXTS = ["ラーメンが美味しい。", "京都の寺は最高", "携帯の電池がすぐ切れる", "試合に負けて残念だ"]
SEEDS = [13, 14, 15]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Topic trained with 3 seeds as an ensemble (calibrated, the default)."""
    import torch

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("calibration") / "proj")
    summary = run_stage(project, "train_topic", fast_overrides("topic", "seeds=3", "ensemble=true", "device=cpu"))
    assert summary["ensemble_members"] == 3 and summary["temperature"] > 0
    return project


def model_dir(project: Path) -> Path:
    return project / classifier_dir("topic")


def copy_dir(project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(model_dir(project), tmp_path / "topic"))


def probabilities(classifier: Classifier) -> np.ndarray:
    return np.array([list(p.probabilities.values()) for p in classifier.predict(TEXTS)])


def test_training_writes_calibration_per_seed_and_the_ensemble(project):
    directory = model_dir(project)
    for path in [directory, *(directory / "seeds" / str(seed) for seed in SEEDS)]:
        record = json.loads((path / "calibration.json").read_text(encoding="utf-8"))
        assert record["fitted_on"] == "dev" and 0.05 <= record["temperature"] <= 20
        assert record["dev_nll_after"] <= record["dev_nll_before"] + 1e-4  # T = 1 is a candidate: the fit cannot be worse
    ensemble = json.loads((directory / "ensemble.json").read_text(encoding="utf-8"))
    assert ensemble["members"] == [f"seeds/{seed}" for seed in SEEDS] and ensemble["fitted_on"] == "dev"
    assert len(ensemble["member_temperatures"]) == 3 and ensemble["temperature"] > 0
    saved = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))["seed_summary"]["saved_seed"]
    assert json.loads((directory / "calibration.json").read_text()) == json.loads(
        (directory / "seeds" / str(saved) / "calibration.json").read_text()
    )


def test_from_dir_applies_the_temperature_and_a_dir_without_it_is_uncalibrated(project, tmp_path):
    directory = model_dir(project)
    temperature = json.loads((directory / "calibration.json").read_text())["temperature"]
    raw = probabilities(Classifier.from_dir(directory, ensemble=False, calibrated=False))
    calibrated = Classifier.from_dir(directory, ensemble=False)
    assert calibrated.temperature == temperature and not calibrated.is_ensemble
    np.testing.assert_allclose(probabilities(calibrated), apply_temperature(raw.astype(np.float32), temperature), atol=1e-5)
    assert (probabilities(calibrated).argmax(axis=1) == raw.argmax(axis=1)).all()
    copy = copy_dir(project, tmp_path)
    (copy / "calibration.json").unlink()
    (copy / "ensemble.json").unlink()
    old = Classifier.from_dir(copy)  # an old model directory: T = 1, one model
    assert old.temperature == 1.0 and not old.is_ensemble
    np.testing.assert_allclose(probabilities(old), raw, atol=1e-6)


def test_ensemble_is_the_mean_of_the_calibrated_members(project):
    directory = model_dir(project)
    spec = json.loads((directory / "ensemble.json").read_text())
    members = [Classifier.from_dir(directory / "seeds" / str(seed), calibrated=False) for seed in SEEDS]
    raw = [probabilities(member) for member in members]
    ensemble = Classifier.from_dir(directory)
    assert ensemble.is_ensemble and len(ensemble.members) == 3 and ensemble.temperature == spec["temperature"]
    calibrated = np.mean([apply_temperature(p, t) for p, t in zip(raw, spec["member_temperatures"], strict=True)], axis=0)
    np.testing.assert_allclose(probabilities(ensemble), apply_temperature(calibrated, spec["temperature"]), atol=1e-5)
    plain = Classifier.from_dir(directory, calibrated=False)  # members' raw probabilities, averaged
    np.testing.assert_allclose(probabilities(plain), np.mean(raw, axis=0), atol=1e-5)
    # attention: the mean of the members' (still summing to 1)
    weights = [m.predict(TEXTS[:1], attention=True)[0].weights for m in members]
    got = ensemble.predict(TEXTS[:1], attention=True)[0].weights
    np.testing.assert_allclose(got, np.mean(weights, axis=0), atol=1e-6)
    assert sum(got) == pytest.approx(1.0, abs=1e-5)


def test_corrupt_calibration_json_is_e320_naming_the_file(project, tmp_path):
    copy = copy_dir(project, tmp_path)
    (copy / "seeds" / "14" / "calibration.json").write_text('{"temperature": ', encoding="utf-8")
    with pytest.raises(ModelError) as error:
        Classifier.from_dir(copy)
    assert error.value.code == "E320" and str(copy / "seeds" / "14" / "calibration.json") in str(error.value)
    Classifier.from_dir(copy, calibrated=False)  # uncalibrated never reads it


def test_ensemble_members_that_do_not_fit_are_e321(project, tmp_path):
    copy = copy_dir(project, tmp_path)
    labels_path = copy / "seeds" / "15" / "labels.json"
    labels_path.write_text(json.dumps(list(reversed(json.loads(labels_path.read_text())))), encoding="utf-8")
    with pytest.raises(ModelError, match="labels") as error:
        Classifier.from_dir(copy)
    assert error.value.code == "E321"
    Classifier.from_dir(copy, ensemble=False)  # the kept model alone still loads
    shutil.rmtree(copy / "seeds" / "15")
    with pytest.raises(ModelError, match="seeds/15") as error:
        Classifier.from_dir(copy)
    assert error.value.code == "E321"


def test_classify_no_calibration_changes_the_probabilities_not_the_labels(project, tmp_path):
    work = Path(shutil.copytree(project, tmp_path / "proj"))
    directory = model_dir(work)
    (directory / "ensemble.json").unlink()
    (directory / "calibration.json").write_text(json.dumps({"temperature": 3.0, "fitted_on": "dev"}), encoding="utf-8")
    runner = CliRunner()
    outputs = {}
    for flag in ("--calibration", "--no-calibration"):
        result = runner.invoke(app, ["--dir", str(work), "classify", "--text", TEXTS[0], "--task", "topic", flag])
        assert result.exit_code == 0, result.output
        outputs[flag] = json.loads(result.stdout.splitlines()[0])
    calibrated, raw = (outputs[flag]["topic"] for flag in ("--calibration", "--no-calibration"))
    assert calibrated["label"] == raw["label"] and calibrated["probabilities"] != raw["probabilities"]
    expected = apply_temperature(np.array([list(raw["probabilities"].values())], dtype=np.float64), 3.0)[0]
    np.testing.assert_allclose(list(calibrated["probabilities"].values()), expected, atol=2e-5)


def test_evaluation_reports_ece_and_brier_before_after_and_the_ensemble(project):
    summary = run_stage(project, "evaluate_topic", fast_overrides("topic", "seeds=3", "ensemble=true", "device=cpu"))
    report = json.loads((project / task_report_dir("topic") / "report.json").read_text(encoding="utf-8"))
    calibration = report["bilstm_attention"]["calibration"]
    for key in ("ece", "brier", "nll"):
        for when in ("before", "after"):
            assert f"{key}_{when}_mean" in calibration and f"{key}_{when}_std" in calibration
    per_seed = report["bilstm_attention"]["per_seed"]
    assert [run["seed"] for run in per_seed] == SEEDS and all("ece_after" in run and "temperature" in run for run in per_seed)
    assert calibration["ece_after_mean"] == pytest.approx(np.mean([run["ece_after"] for run in per_seed]), abs=1e-4)
    ensemble = report["bilstm_ensemble"]
    assert ensemble["members"] == 3 and ensemble["seeds"] == 1 and "ece_after" in ensemble["calibration"]
    assert any(pair["a"] == "bilstm_attention" and pair["b"] == "bilstm_ensemble" for pair in report["comparisons"])
    assert summary["bilstm_ensemble_macro_f1"] == ensemble["macro_f1"]
    width, height = png_size(project / task_report_dir("topic") / "calibration.png")
    assert width > 300 and height > 300


def test_turning_the_ensemble_off_reuses_the_trained_checkpoints(project, tmp_path):
    """calibrate / ensemble act after training: they are not in the checkpoint signature, so a resumed run
    republishes the same weights (one model directory, no ensemble.json) without training again."""
    from tests.conftest import assert_same_weights

    work = Path(shutil.copytree(project, tmp_path / "proj"))
    before = Path(shutil.copytree(model_dir(work), tmp_path / "before"))
    summary = run_stage(work, "train_topic", fast_overrides("topic", "seeds=3", "ensemble=false", "device=cpu"), resume=True)
    assert "ensemble_members" not in summary and not (model_dir(work) / "ensemble.json").exists()
    assert_same_weights(before, model_dir(work))
    for seed in SEEDS:
        assert_same_weights(before / "seeds" / str(seed), model_dir(work) / "seeds" / str(seed))
    assert json.loads((model_dir(work) / "calibration.json").read_text()) == json.loads((before / "calibration.json").read_text())


def test_bench_calibration_fits_on_dev_as_training_does(project):
    from pipeline.bench.calibration import benchmark_calibration, report_lines

    result = benchmark_calibration(project_dir=project, tasks=["topic"], throughput_texts=20)
    topic = result["tasks"]["topic"]
    directory = model_dir(project)
    for run in topic["seeds"]:  # the bench's dev fit is the one train_topic wrote
        written = json.loads((directory / "seeds" / str(run["seed"]) / "calibration.json").read_text())
        assert run["temperature"] == pytest.approx(written["temperature"], rel=1e-3)
        assert run["dev_ece_after"] == pytest.approx(written["dev_ece_after"], abs=1e-3)
    assert topic["ensemble"]["temperature"] == pytest.approx(json.loads((directory / "ensemble.json").read_text())["temperature"], rel=1e-3)
    assert topic["ece_after_mean"] == pytest.approx(np.mean([run["ece_after"] for run in topic["seeds"]]), abs=1e-4)
    throughput = topic["throughput"]
    assert throughput["texts"] == 20 and throughput["single_reviews_per_s"] > 0 and throughput["ensemble_reviews_per_s"] > 0
    assert any(line.startswith("  ensemble macro-F1") for line in report_lines(result))
