"""The public API on models trained on the real KNBC: a copied model directory, loaded from
another working directory, gives what ``jpipe classify`` / ``jpipe generate`` give in the project.

Short trainings (one epoch, small layers, random embeddings) in a copy of the session's
tokenized project keep this to well under a minute on 2 CPU cores: what is checked is that
the two paths agree, not the models' quality.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import SMALL_CLASSIFIER_SETTINGS, SMALL_GENERATOR_SETTINGS, run_stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(real_project, tmp_path_factory):
    project = tmp_path_factory.mktemp("api") / "proj"
    shutil.copytree(real_project, project)
    run_stage(project, "train_topic", [f"train_topic.{s}" for s in SMALL_CLASSIFIER_SETTINGS])
    run_stage(project, "train_generator", SMALL_GENERATOR_SETTINGS)
    return project


def invoke(project, *args: str):
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_classifier_from_copied_dir_equals_jpipe_classify(trained, tmp_path, monkeypatch):
    from pipeline import Classifier
    from pipeline.paths import CLASSIFIER_DIRS, TOKENS
    from pipeline.text.tokenize import read_token_rows

    texts = [row["text"] for row in read_token_rows(trained / TOKENS, split="test")][:300]
    source = tmp_path / "reviews.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    rows = [json.loads(line) for line in invoke(trained, "classify", str(source), "--task", "topic").splitlines()]

    copy = tmp_path / "copied" / "topic"
    shutil.copytree(trained / CLASSIFIER_DIRS["topic"], copy)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    clf = Classifier.from_dir(copy)
    assert clf.split_mode == json.loads((trained / "data/tokens/meta.json").read_text(encoding="utf-8"))["split_mode"]
    predictions = clf.predict(texts)
    assert len(rows) == len(predictions) == len(texts) == 300
    worst = 0.0
    for row, prediction in zip(rows, predictions, strict=True):
        assert row["error"] is None and row["topic"]["label"] == prediction.label
        worst = max(worst, *(abs(row["topic"]["probabilities"][label] - p) for label, p in prediction.probabilities.items()))
    assert worst <= 1e-6


def test_generator_from_copied_dir_equals_jpipe_generate(trained, tmp_path, monkeypatch):
    from pipeline import Generator
    from pipeline.paths import GENERATOR_DIR

    from_cli = json.loads(invoke(trained, "generate", "--prompt", "京都の", "--num", "3", "--max-tokens", "30", "--seed", "7", "--json"))
    copy = tmp_path / "copied" / "generator"
    shutil.copytree(trained / GENERATOR_DIR, copy)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    # jpipe generate's defaults: temperature 0.8, top-k 40, top-p 0.9
    result = Generator.from_dir(copy).generate("京都の", num=3, max_tokens=30, seed=7, temperature=0.8, top_k=40, top_p=0.9)
    assert result.to_json() == from_cli
    assert result.prompt_tokens == ["京都", "の"] and all(text.startswith("京都の") for text in result.samples)
