"""Several seeds per classifier (``[classifier] seeds``): one model per seed, the median-dev one kept,
test figures as mean ± std, "within noise", resume inside a seed, and seeds = 1 as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.config import load_config  # noqa: E402
from pipeline.metrics import mean_std, median_index, within_noise  # noqa: E402
from pipeline.workflow.runner import Runner  # noqa: E402
from pipeline.workflow.stages import build_stages  # noqa: E402
from tests.conftest import assert_same_weights, fast_overrides, interrupt_then_resume, model_weights, write_tiny_project  # noqa: E402

STAGES = ("train_topic", "evaluate_topic")


def runner_for(project: Path, overrides: list[str]) -> Runner:
    config = load_config(project, overrides)
    return Runner(project, config, stages=[s for s in build_stages(config) if s.name in STAGES])


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------ the rules
def test_mean_std_is_the_population_spread():
    mean, std = mean_std([0.70, 0.74, 0.72])
    assert mean == pytest.approx(0.72) and std == pytest.approx(np.sqrt(((0.02**2) * 2) / 3))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_median_index_is_not_the_best():
    dev = [0.91, 0.62, 0.80, 0.75, 0.70]  # best is index 0, median (0.75) index 3
    assert median_index(dev) == 3
    assert median_index([0.6, 0.9]) == 0  # even count: the lower middle, a value that exists
    assert median_index([0.7, 0.7, 0.7]) == 1  # ties: by index, the middle one


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0.74, 0.02), (0.73, 0.0), True),  # 0.01 apart, spread 0.02
        ((0.74, 0.005), (0.72, 0.0), False),  # 0.02 apart, spread 0.005
        ((0.70, 0.01), (0.72, 0.02), True),  # the larger spread counts
        ((0.70, 0.0), (0.70, 0.0), True),  # deterministic and equal
        ((0.70, 0.0), (0.7001, 0.0), False),  # deterministic and different
    ],
)
def test_within_noise_rule(a, b, expected):
    assert within_noise(mean_a=a[0], std_a=a[1], mean_b=b[0], std_b=b[1]) is expected


def test_seeds_are_a_fingerprinted_setting_only_above_one(tmp_path):
    one = load_config(tmp_path, ["classifier.seeds=1"]).fingerprint_view("tasks.topic.classifier")
    three = load_config(tmp_path, ["tasks.topic.classifier.seeds=3"]).fingerprint_view("tasks.topic.classifier")
    assert "seeds" not in one  # a project trained before seeds existed stays fresh
    assert three["seeds"] == 3 and {k: v for k, v in three.items() if k != "seeds"} == one


# ------------------------------------------------------------------ training and evaluation
@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """train_topic + evaluate_topic with seeds = 3, and the same with seeds = 1, on the tiny project."""
    torch.set_num_threads(1)
    projects = {}
    for seeds in (3, 1):
        project = write_tiny_project(tmp_path_factory.mktemp(f"seeds{seeds}") / "proj")
        runner_for(project, fast_overrides("topic", "epochs=3", "patience=3", f"seeds={seeds}")).run("evaluate_topic")
        projects[seeds] = project
    return projects


def test_one_model_per_seed_and_the_kept_one_is_among_them(three_seeds):
    model_dir = three_seeds[3] / "models/classifier/topic"
    assert sorted(p.name for p in (model_dir / "seeds").iterdir()) == ["13", "14", "15"]
    dev = {seed: read(model_dir / "seeds" / str(seed) / "metrics.json")["dev_macro_f1"] for seed in (13, 14, 15)}
    summary = read(model_dir / "metrics.json")["seed_summary"]
    assert summary["seeds"] == [13, 14, 15] and summary["dev_macro_f1"] == [dev[13], dev[14], dev[15]]
    assert summary["dev_macro_f1_mean"] == pytest.approx(np.mean(list(dev.values())), abs=1e-5)
    kept = summary["saved_seed"]
    assert_same_weights(model_dir, model_dir / "seeds" / str(kept), exact=False)
    # Different seeds give different models (the seed reaches the initial weights).
    assert not torch.equal(model_weights(model_dir / "seeds/13")["output.weight"], model_weights(model_dir / "seeds/14")["output.weight"])


def test_seed_13_of_several_is_the_single_model_of_seeds_1(three_seeds):
    single = three_seeds[1] / "models/classifier/topic"
    assert not (single / "seeds").exists()  # seeds = 1: the one model directory, as before
    assert (three_seeds[1] / ".jpipe/work/train_topic/checkpoint.pt").exists()
    assert_same_weights(single, three_seeds[3] / "models/classifier/topic/seeds/13", exact=False)


def test_report_gives_mean_and_std_over_the_seeds(three_seeds):
    report = read(three_seeds[3] / "models/report/tasks/topic/report.json")
    bilstm = report["bilstm_attention"]
    per_seed = bilstm["per_seed"]
    assert [run["seed"] for run in per_seed] == [13, 14, 15] and bilstm["seeds"] == 3
    test_f1 = [run["macro_f1"] for run in per_seed]
    assert bilstm["macro_f1_mean"] == pytest.approx(np.mean(test_f1), abs=1e-4)
    assert bilstm["macro_f1_std"] == pytest.approx(np.std(test_f1), abs=1e-4)
    assert bilstm["accuracy_mean"] == pytest.approx(np.mean([run["accuracy"] for run in per_seed]), abs=1e-4)
    # The kept model's own figure is its seed's.
    kept = next(run for run in per_seed if run["seed"] == bilstm["saved_seed"])
    assert bilstm["macro_f1"] == kept["macro_f1"] and bilstm["dev_macro_f1"] == kept["dev_macro_f1"]
    # Baselines are one deterministic run.
    assert report["tfidf_linear"]["seeds"] == 1 and report["tfidf_linear"]["macro_f1_std"] == 0.0
    assert report["tfidf_linear"]["macro_f1_mean"] == report["tfidf_linear"]["macro_f1"]
    pairs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    assert set(pairs) == {("bilstm_attention", "tfidf_linear"), ("bilstm_attention", "majority"), ("tfidf_linear", "majority")}
    first = pairs[("bilstm_attention", "tfidf_linear")]
    expected = abs(bilstm["macro_f1_mean"] - report["tfidf_linear"]["macro_f1_mean"]) <= bilstm["macro_f1_std"]
    assert first["within_noise"] is expected and first["spread"] == bilstm["macro_f1_std"]


def test_single_seed_report_has_zero_spread(three_seeds):
    bilstm = read(three_seeds[1] / "models/report/tasks/topic/report.json")["bilstm_attention"]
    assert bilstm["seeds"] == 1 and bilstm["macro_f1_std"] == 0.0 and bilstm["macro_f1_mean"] == bilstm["macro_f1"]
    assert "per_seed" not in bilstm


def test_the_kept_model_is_the_median_dev_seed_not_the_best(tmp_path, monkeypatch):
    """Dev macro-F1 forced per seed (best 13, median 15): the model directory must hold seed 15."""
    import pipeline.training.classifier as classifier

    forced = {13: 0.9, 14: 0.5, 15: 0.7}
    real = classifier.train_classifier

    def train_with_forced_dev(**kwargs):
        trained = real(**kwargs)
        trained.metrics["dev_macro_f1"] = forced[kwargs["section"]["seed"]]
        return trained

    monkeypatch.setattr(classifier, "train_classifier", train_with_forced_dev)
    project = write_tiny_project(tmp_path / "proj")
    assert runner_for(project, fast_overrides("topic", "epochs=1", "seeds=3")).run("train_topic") == ["train_topic"]
    model_dir = project / "models/classifier/topic"
    metrics = read(model_dir / "metrics.json")
    assert metrics["seed"] == 15 and metrics["seed_summary"]["saved_seed"] == 15 and metrics["dev_macro_f1"] == 0.7
    assert_same_weights(model_dir, model_dir / "seeds/15", exact=False)


def test_resume_inside_a_later_seed_matches_an_uninterrupted_run(tmp_path, monkeypatch):

    overrides = fast_overrides("topic", "epochs=3", "patience=3", "seeds=2")
    straight = write_tiny_project(tmp_path / "straight")
    runner_for(straight, overrides).run("train_topic")

    interrupted = write_tiny_project(tmp_path / "interrupted")
    interrupt_then_resume(
        lambda resume: runner_for(interrupted, overrides).run("train_topic", resume=resume), monkeypatch, seed=14, epoch=2
    )

    for seed, resumed_from in ((13, 3), (14, 2)):  # seed 13 had finished, seed 14 stopped after epoch 2
        directory = interrupted / f"models/classifier/topic/seeds/{seed}"
        assert read(directory / "metrics.json")["resumed_from_epoch"] == resumed_from
        assert_same_weights(directory, straight / f"models/classifier/topic/seeds/{seed}", exact=False)
    assert (interrupted / ".jpipe/work/train_topic/seeds/14/checkpoint.pt").exists()


def test_task_report_cli_prints_the_spread_and_the_noise_marks(three_seeds):
    from typer.testing import CliRunner

    from pipeline.cli import app

    project = three_seeds[3]
    bilstm = read(project / "models/report/tasks/topic/report.json")["bilstm_attention"]
    result = CliRunner().invoke(app, ["--dir", str(project), "task", "report", "topic"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert f"over 3 seeds: test macro-F1 {bilstm['macro_f1_mean']:.4f} ± {bilstm['macro_f1_std']:.4f}" in output
    assert f"kept seed {bilstm['saved_seed']}" in output
    assert "bilstm_attention - tfidf_linear:" in output and "tfidf_linear - majority:" in output
