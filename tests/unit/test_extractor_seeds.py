"""Several seeds of the opinion extractor: train_extractor keeps the median-dev seed and writes every
seed, evaluate_extractor scores them all (mean ± std, "within noise" marks, extractor.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import assert_same_weights, interrupt_then_resume, model_weights, run_stage
from tests.unit.test_extractor import FAST, write_extractor_project

SEEDS = [*FAST, "train_extractor.seeds=3", "train_extractor.epochs=4", "train_extractor.patience=4"]


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only spin
    project = write_extractor_project(tmp_path_factory.mktemp("exseeds") / "proj")
    summary = run_stage(project, "train_extractor", SEEDS)
    run_stage(project, "evaluate_extractor", [*SEEDS, "evaluate_extractor.tagger_epochs=2", "evaluate_extractor.beam=2"])
    yield project, summary
    torch.set_num_threads(threads)


def test_one_model_per_seed_and_the_kept_one_is_the_median(three_seeds):
    project, summary = three_seeds
    model_dir = project / "models/extractor"
    assert sorted(p.name for p in (model_dir / "seeds").iterdir()) == ["13", "14", "15"]
    dev = [read(model_dir / "seeds" / str(seed) / "metrics.json")["dev_score"] for seed in (13, 14, 15)]
    kept = read(model_dir / "metrics.json")["seed_summary"]
    assert kept["seeds"] == [13, 14, 15] and kept["dev_score"] == dev
    assert kept["saved_seed"] == (13, 14, 15)[sorted(range(3), key=lambda i: (dev[i], i))[1]]
    assert summary["saved_seed"] == kept["saved_seed"] and summary["seeds"] == 3
    assert summary["dev_score_mean"] == pytest.approx(np.mean(dev), abs=1e-5)
    assert_same_weights(model_dir, model_dir / "seeds" / str(kept["saved_seed"]), exact=False)
    weights = [model_weights(model_dir / "seeds" / str(seed))["output.weight"] for seed in (13, 14)]
    assert not torch.equal(*weights)  # the seed reaches the initial weights


def test_seed_13_of_three_is_the_single_model_of_seeds_1(three_seeds, tmp_path):
    project, _ = three_seeds
    single = write_extractor_project(tmp_path / "proj")
    run_stage(single, "train_extractor", [*SEEDS, "train_extractor.seeds=1"])
    assert not (single / "models/extractor/seeds").exists()
    assert_same_weights(single / "models/extractor", project / "models/extractor/seeds/13", exact=False)


def test_resume_inside_seed_14_matches_an_uninterrupted_run(three_seeds, tmp_path, monkeypatch):
    project, _ = three_seeds
    interrupted = write_extractor_project(tmp_path / "proj")
    overrides = [*SEEDS, "train_extractor.seeds=2"]  # seeds 13 and 14, each trained exactly as in the fixture
    interrupt_then_resume(
        lambda resume: run_stage(interrupted, "train_extractor", overrides, resume=resume, tag=f"resume-{resume}"),
        monkeypatch,
        seed=14,
        epoch=2,
    )
    for seed, resumed_from in ((13, 4), (14, 2)):
        directory = interrupted / "models/extractor/seeds" / str(seed)
        assert read(directory / "metrics.json")["resumed_from_epoch"] == resumed_from
        assert_same_weights(directory, project / "models/extractor/seeds" / str(seed))


def test_evaluation_scores_every_seed_with_its_noise(three_seeds):
    project, _ = three_seeds
    report = read(project / "models/report/extractor.json")
    for name in ("seq2seq", "seq2seq_greedy", "baseline_a", "baseline_b"):
        row = report[name]
        assert row["seeds"] == 3 and [run["seed"] for run in row["per_seed"]] == [13, 14, 15]
        values = [run["record_f1"] for run in row["per_seed"]]
        assert row["record_f1"] == pytest.approx(np.mean(values), abs=1e-4)
        assert row["record_f1_std"] == pytest.approx(np.std(values), abs=1e-4)
    for name in ("seq2seq_greedy", "baseline_a", "baseline_b"):
        compared = report["comparisons"][name]["expression_f1"]
        base, other = report["seq2seq"], report[name]
        assert compared["difference"] == pytest.approx(base["expression_f1"] - other["expression_f1"], abs=1e-4)
        spread = max(base["expression_f1_std"], other["expression_f1_std"])
        assert compared["within_noise"] == (abs(compared["difference"]) <= spread + 1e-9)
    assert report["saved_seed"] == read(project / "models/extractor/metrics.json")["seed"]
    table = (project / "models/report/extractor.md").read_text(encoding="utf-8")
    assert "| seq2seq, beam 2 | 3 |" in table and "| (b) BiLSTM BIO tagger + typed spans | 3 |" in table
    assert f"{report['seq2seq']['record_f1']:.3f} ± {report['seq2seq']['record_f1_std']:.3f}" in table
    line = next(line for line in table.splitlines() if line.startswith("- vs (a) TF-IDF type + last predicate: "))
    assert line.startswith("- vs (a) TF-IDF type + last predicate: expr overlap F1") and "; record F1 " in line


def test_the_seeds_setting_moved_to_train_extractor(tmp_path):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, ["evaluate_extractor.seeds=3"])
    assert error.value.code == "E102" and "train_extractor.seeds" in error.value.hint
    (tmp_path / "jpipe.toml").write_text("[evaluate_extractor]\nseeds = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no longer"):
        load_config(tmp_path)


def test_bench_train_extractor_times_both_teacher_forcing_paths(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    project = write_extractor_project(tmp_path / "proj")
    runner = CliRunner()
    args = ["--dir", str(project), "bench", "train", "--model", "extractor", "--steps", "2", "--json"]
    result = runner.invoke(app, [*args, *(value for setting in FAST for value in ("--set", setting))])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout[result.stdout.index("{") :])
    assert payload["steps"] == 2 and payload["batch_size"] == 8
    assert payload["packed_sentences_per_second"] > 0 and payload["stepwise_sentences_per_second"] > 0
    assert payload["speedup"] == pytest.approx(payload["packed_sentences_per_second"] / payload["stepwise_sentences_per_second"], rel=0.01)
    wrong = runner.invoke(app, ["--dir", str(project), "bench", "train", "--model", "seq2seq"])
    assert wrong.exit_code == 2 and "classifier, lm or extractor" in wrong.output
