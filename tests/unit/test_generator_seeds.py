"""Several seeds of the generator (``[train_generator] seeds``): one model per seed, the median-dev one kept,
test perplexity as mean ± std with "within noise", seeds reproducible, resume inside a seed, seeds = 1 as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.config import load_config  # noqa: E402
from pipeline.paths import GENERATOR_DIR, GENERATOR_REPORT, GENERATOR_TABLE  # noqa: E402
from pipeline.workflow.runner import Runner  # noqa: E402
from pipeline.workflow.stages import build_stages  # noqa: E402
from tests.conftest import assert_same_weights, interrupt_then_resume, model_weights  # noqa: E402
from tests.unit.test_generator import TINY, make_project  # noqa: E402

STAGES = ("train_generator", "evaluate_generator")
SETTINGS = [*(s for s in TINY if not s.startswith("train_generator.seeds")), "train_generator.epochs=2", "evaluate_generator.num_samples=1"]


def runner_for(project: Path, overrides: list[str]) -> Runner:
    config = load_config(project, overrides)
    return Runner(project, config, stages=[s for s in build_stages(config) if s.name in STAGES])


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """train_generator + evaluate_generator with seeds = 3, and twice with seeds = 1."""
    torch.set_num_threads(1)
    made = {}
    for name, seeds in (("three", 3), ("one", 1), ("one_again", 1)):
        project = make_project(tmp_path_factory.mktemp(name))
        runner_for(project, [*SETTINGS, f"train_generator.seeds={seeds}"]).run("evaluate_generator")
        made[name] = project
    return made


def test_seeds_are_fingerprinted_only_above_one(tmp_path):
    one = load_config(tmp_path, ["train_generator.seeds=1"]).fingerprint_view("train_generator")
    five = load_config(tmp_path).fingerprint_view("train_generator")
    assert "seeds" not in one and five["seeds"] == 5 and {k: v for k, v in five.items() if k != "seeds"} == one


def test_one_model_per_seed_and_the_kept_one_is_the_median(projects):
    model_dir = projects["three"] / GENERATOR_DIR
    assert sorted(p.name for p in (model_dir / "seeds").iterdir()) == ["13", "14", "15"]
    dev = [read(model_dir / "seeds" / str(seed) / "metrics.json")["dev_perplexity"] for seed in (13, 14, 15)]
    summary = read(model_dir / "metrics.json")["seed_summary"]
    assert summary["dev_perplexity"] == dev and summary["dev_perplexity_mean"] == pytest.approx(np.mean(dev), abs=1e-5)
    assert summary["saved_seed"] == 13 + sorted(range(3), key=lambda i: dev[i])[1]
    assert_same_weights(model_dir, model_dir / "seeds" / str(summary["saved_seed"]))


def test_the_same_seed_gives_the_same_model_and_another_seed_another(projects):
    single = projects["one"] / GENERATOR_DIR
    assert not (single / "seeds").exists()  # seeds = 1: the one model directory, as before seeds existed
    assert_same_weights(single, projects["one_again"] / GENERATOR_DIR)  # two runs, one seed: identical
    assert_same_weights(single, projects["three"] / GENERATOR_DIR / "seeds/13")  # seed 13 of three = the single model
    seeds = projects["three"] / GENERATOR_DIR / "seeds"
    assert not torch.equal(model_weights(seeds / "13")["lstm.weight_hh_l0"], model_weights(seeds / "14")["lstm.weight_hh_l0"])


def test_evaluation_gives_mean_and_std_and_the_noise_mark(projects):
    report = read(projects["three"] / GENERATOR_REPORT)
    lstm, ngram = report["lstm"], report["ngram"]
    test = [run["perplexity"] for run in lstm["per_seed"]]
    assert [run["seed"] for run in lstm["per_seed"]] == [13, 14, 15] and lstm["seeds"] == 3
    assert lstm["perplexity_mean"] == pytest.approx(np.mean(test), abs=1e-3)
    assert lstm["perplexity_std"] == pytest.approx(np.std(test), abs=1e-3)
    assert lstm["ratio_to_ngram_mean"] == pytest.approx(np.mean(test) / ngram["perplexity"], abs=1e-3)
    kept = next(run for run in lstm["per_seed"] if run["seed"] == lstm["saved_seed"])
    assert lstm["perplexity"] == kept["perplexity"]  # the kept model's own figure is its seed's
    noise = report["lstm_vs_ngram"]
    assert noise["within_noise"] is (abs(lstm["perplexity_mean"] - ngram["perplexity"]) <= lstm["perplexity_std"] + 1e-9)
    table = (projects["three"] / GENERATOR_TABLE).read_text(encoding="utf-8")
    assert f"{lstm['perplexity_mean']:.2f} ± {lstm['perplexity_std']:.2f}" in table and "kneser_ney, KNBC training articles" in table
    assert ("within noise" in table) is noise["within_noise"]


def test_a_single_seed_report_has_no_spread(projects):
    report = read(projects["one"] / GENERATOR_REPORT)
    assert "per_seed" not in report["lstm"] and "perplexity_mean" not in report["lstm"]
    assert f"| 1 | {report['lstm']['perplexity']:.2f} |" in (projects["one"] / GENERATOR_TABLE).read_text(encoding="utf-8")


def test_the_kept_model_is_the_median_dev_seed_not_the_best(tmp_path, monkeypatch):
    import pipeline.training.language_model as language_model

    forced = {13: 30.0, 14: 90.0, 15: 50.0}  # best (lowest) is 13, the median 15
    real = language_model.train_language_model

    def train_with_forced_dev(**kwargs):
        trained = real(**kwargs)
        trained.metrics["dev_perplexity"] = forced[kwargs["section"]["seed"]]
        return trained

    monkeypatch.setattr(language_model, "train_language_model", train_with_forced_dev)
    project = make_project(tmp_path)
    runner_for(project, [*SETTINGS, "train_generator.epochs=1", "train_generator.seeds=3"]).run("train_generator")
    metrics = read(project / GENERATOR_DIR / "metrics.json")
    assert metrics["seed"] == 15 and metrics["dev_perplexity"] == 50.0
    assert_same_weights(project / GENERATOR_DIR, project / GENERATOR_DIR / "seeds/15")


def test_resume_inside_a_later_seed_matches_an_uninterrupted_run(tmp_path, monkeypatch):

    overrides = [*SETTINGS, "train_generator.epochs=3", "train_generator.patience=3", "train_generator.seeds=2"]
    straight = make_project(tmp_path / "straight")
    runner_for(straight, overrides).run("train_generator")
    interrupted = make_project(tmp_path / "interrupted")
    interrupt_then_resume(
        lambda resume: runner_for(interrupted, overrides).run("train_generator", resume=resume), monkeypatch, seed=14, epoch=2
    )
    for seed, resumed_from in ((13, 3), (14, 2)):
        directory = interrupted / GENERATOR_DIR / "seeds" / str(seed)
        assert read(directory / "metrics.json")["resumed_from_epoch"] == resumed_from
        assert_same_weights(directory, straight / GENERATOR_DIR / "seeds" / str(seed))
