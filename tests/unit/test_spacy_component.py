"""The ``jpipe_classifier`` spaCy component: doc.cats from the Doc's tokens, export, and spacy.load in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

spacy = pytest.importorskip("spacy")
pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from pipeline.cli import app  # noqa: E402
from tests.conftest import fast_overrides, write_tiny_project  # noqa: E402

TEXTS = [
    "駅前のラーメン屋はスープが濃厚で美味しかった。また行きたい。",
    "新しい携帯の画面は最悪です。",
    "京都の寺で紅葉を見た。　嬉しい",  # a full-width space: a whitespace token in the Doc, dropped as by the tokenizer
    "今日は野球の試合に行く",
]


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory) -> Path:
    import torch

    from pipeline.config import load_config
    from pipeline.workflow.runner import Runner
    from pipeline.workflow.stages import build_stages

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("spacy") / "proj")
    config = load_config(project, fast_overrides("topic", "max_tokens=8") + fast_overrides("sentiment", "max_tokens=8"))
    Runner(project, config, stages=[s for s in build_stages(config) if s.name in ("train_topic", "train_sentiment")]).run()
    return project


def classify_probabilities(project: Path) -> list[dict[str, float]]:
    """``jpipe classify`` of TEXTS, flattened to ``{"task/label": p}``."""
    result = CliRunner().invoke(app, ["--dir", str(project), "classify", "-", "--top-tokens", "0"], input="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    return [{f"{t}/{label}": p for t in ("topic", "sentiment") for label, p in row[t]["probabilities"].items()} for row in rows]


def test_add_pipe_sets_cats_for_each_task_of_the_path(trained_project):
    import ja_ginza  # noqa: F401

    nlp = spacy.load("ja_ginza", exclude=["parser", "ner"])
    nlp.add_pipe("jpipe_classifier", config={"model": str(trained_project / "models/classifier")})
    expected = classify_probabilities(trained_project)
    docs = list(nlp.pipe(TEXTS, batch_size=3))
    for doc, probabilities in zip(docs, expected, strict=True):
        assert set(doc.cats) == set(probabilities)
        assert all(abs(doc.cats[key] - p) <= 1e-5 for key, p in probabilities.items())
    assert nlp(TEXTS[0]).cats == pytest.approx(docs[0].cats, abs=1e-6)  # one Doc at a time: the same up to batch padding
    single = spacy.blank("ja")
    single.add_pipe("jpipe_classifier", config={"model": str(trained_project / "models/classifier/sentiment")})
    assert sorted(single(TEXTS[0]).cats) == ["sentiment/negative", "sentiment/neutral", "sentiment/positive"]


def test_a_path_without_models_is_a_coded_error(tmp_path):
    from pipeline.errors import ModelError

    with pytest.raises(ModelError) as info:
        spacy.blank("ja").add_pipe("jpipe_classifier", config={"model": str(tmp_path)})
    assert info.value.code == "E301"


def test_exported_pipeline_loads_in_a_fresh_process_with_cats_equal_to_classify(trained_project, tmp_path):
    out = tmp_path / "exported"
    result = CliRunner().invoke(app, ["--dir", str(trained_project), "export", "spacy", str(out), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["tasks"] == ["sentiment", "topic"] and info["pipe_names"][-1] == "jpipe_classifier"
    assert str(trained_project) not in (out / "config.cfg").read_text(encoding="utf-8")  # no path back into the project
    assert sorted(p.name for p in (out / "jpipe_classifier").iterdir()) == ["sentiment", "topic"]
    code = f"import json, sys, spacy\nnlp = spacy.load({str(out)!r})\nprint(json.dumps([doc.cats for doc in nlp.pipe({TEXTS!r})]))\n"
    # Run from another directory, with the project moved away: nothing may point back into it.
    moved = trained_project.with_name("moved")
    trained_project.rename(moved)
    try:
        loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    finally:
        moved.rename(trained_project)
    cats = json.loads(loaded.stdout.strip().splitlines()[-1])
    for doc_cats, probabilities in zip(cats, classify_probabilities(trained_project), strict=True):
        assert set(doc_cats) == set(probabilities)
        assert max(abs(doc_cats[key] - p) for key, p in probabilities.items()) <= 1e-5


def test_bench_via_spacy_reports_both_rates_and_equal_probabilities(trained_project):
    from pipeline.bench.classify import benchmark_spacy

    result = benchmark_spacy(project_dir=trained_project, reviews=40, batch_size=8)
    assert result["reviews"] == 40 and result["rounds"] == 4 and result["tasks"] == ["topic", "sentiment"]
    assert result["spacy_pipe_components"] == ["jpipe_classifier"]  # ja_ginza's tokenizer only, no parser or NER
    assert result["jpipe_classify_reviews_per_second"] > 0 and result["spacy_pipe_reviews_per_second"] > 0
    expected = result["spacy_pipe_reviews_per_second"] / result["jpipe_classify_reviews_per_second"]
    assert result["ratio"] == pytest.approx(expected, abs=0.01)
    assert result["max_probability_difference"] <= 1e-5


def test_nlp_pipe_with_two_processes_gives_the_same_cats(trained_project):
    """spaCy's own multiprocessing (`nlp.pipe(n_process=2)`) carries the component to its worker processes."""
    import ja_ginza  # noqa: F401

    nlp = spacy.load("ja_ginza", exclude=["parser", "ner"])
    nlp.add_pipe("jpipe_classifier", config={"model": str(trained_project / "models/classifier")})
    texts = TEXTS * 3
    one = [doc.cats for doc in nlp.pipe(texts, batch_size=2)]
    two = [doc.cats for doc in nlp.pipe(texts, batch_size=2, n_process=2)]
    assert len(two) == len(texts)
    for a, b in zip(one, two, strict=True):
        assert set(a) == set(b) and all(abs(a[key] - b[key]) <= 1e-5 for key in a)
