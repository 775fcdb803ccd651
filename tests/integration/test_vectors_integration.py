"""word2vec + spacy_vectors + import + evaluate_vectors on the real KNBC project (slow: about a minute)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import load_config
from pipeline.paths import SPACY_VECTORS_DIR, VECTORS_MAP, VECTORS_REPORT, WORD2VEC_DIR
from pipeline.workflow.runner import Runner
from tests.conftest import SYNONYMS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors_project(real_project, tmp_path_factory) -> Path:
    if not SYNONYMS.exists():
        pytest.skip(f"Sudachi synonym dictionary not found at {SYNONYMS}")
    project = tmp_path_factory.mktemp("vectors_real") / "proj"
    shutil.copytree(real_project, project)
    overrides = [f"evaluate_vectors.synonyms_path={json.dumps(str(SYNONYMS))}"]
    runner = Runner(project, load_config(project, overrides))
    runner.run("word2vec")
    runner.run("spacy_vectors")
    runner.run("combined_vectors")  # ginza + word2vec (ginza_vectors runs first: an upstream)
    # A third source, imported from word2vec's own text export: must behave like word2vec.
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(project), "vectors", "import", str(project / WORD2VEC_DIR / "vectors.txt")])
    assert result.exit_code == 0, result.output
    runner.run("evaluate_vectors")
    return project


def test_sources_have_sane_meta(vectors_project):
    w2v = json.loads((vectors_project / WORD2VEC_DIR / "meta.json").read_text(encoding="utf-8"))
    spacy = json.loads((vectors_project / SPACY_VECTORS_DIR / "meta.json").read_text(encoding="utf-8"))
    assert 1000 < w2v["vocab_size"] < spacy["coverage"]["corpus_types"]
    assert w2v["coverage"]["token_coverage"] > 0.9  # min_count 2 drops only rare words
    assert spacy["coverage"]["type_coverage"] > 0.8 and spacy["dim"] == 300
    shared = spacy["shared_rows"]
    assert shared["model_keys"] > 10 * shared["model_rows"]  # ~480k keys on 20k rows
    assert 0 < shared["vocab_words_sharing_a_row"] < shared["vocab_words_with_vector"]


def test_report_has_sane_values(vectors_project):
    report = json.loads((vectors_project / VECTORS_REPORT).read_text(encoding="utf-8"))
    # ginza and combined (optional inputs, built above) get dev/test figures only.
    assert set(report["sources"]) == {"word2vec", "spacy", "imported", "ginza", "combined"}
    for name in ("word2vec", "spacy", "imported"):
        synonyms = report["sources"][name]["synonyms"]
        assert synonyms["pairs"] > 100, name
        assert 0 < synonyms["pair_coverage"] < 1
        assert synonyms["roc_auc"] > 0.5, (name, synonyms)
        assert 0 <= synonyms["neighbour_precision"]["r_precision"] <= 1
    # the imported copy of word2vec scores like word2vec
    assert report["sources"]["imported"]["synonyms"]["roc_auc"] == pytest.approx(
        report["sources"]["word2vec"]["synonyms"]["roc_auc"], abs=1e-3
    )
    common = report["common"]
    assert common["pairs"] > 100 and all(r["roc_auc"] > 0.5 for r in common["results"].values())
    for word in ("京都", "携帯", "美味しい", "野球", "店", "電話", "寺", "試合"):
        for name in ("word2vec", "spacy"):
            assert len(report["sources"][name]["neighbours"][word]["neighbours"]) == 10, (name, word)
    assert report["map"]["words"] == 150
    png = (vectors_project / VECTORS_MAP).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_synonym_halves_per_source(vectors_project):
    """Every source gets coverage and ROC-AUC on both fixed halves; the choice is made on dev; a readable table beside."""
    from pipeline.paths import VECTORS_COVERAGE_TABLE

    splits = json.loads((vectors_project / VECTORS_REPORT).read_text(encoding="utf-8"))["synonym_splits"]
    results = splits["sources"]
    assert set(results) == {"word2vec", "spacy", "imported", "ginza", "combined"}
    for name, result in results.items():
        for half in ("dev", "test"):
            figures = result[half]
            assert figures["groups"] == splits["groups"][half] and 0 <= figures["coverage"] <= figures["coverage_words"] <= 1
            assert figures["roc_auc"] is None or 0.5 < figures["roc_auc"] <= 1, (name, half, figures)
    # The whole ja_ginza table covers far more synonym groups than the KNBC vocabulary does.
    assert results["ginza"]["test"]["coverage"] > 5 * results["spacy"]["test"]["coverage"]
    assert results["combined"]["test"]["coverage"] >= results["ginza"]["test"]["coverage"]
    assert results["imported"]["dev"]["coverage"] == results["word2vec"]["dev"]["coverage"]
    choice = splits["choice"]
    assert choice["source"] in results and choice["test_roc_auc"] == results[choice["source"]]["test"]["roc_auc"]
    table = (vectors_project / VECTORS_COVERAGE_TABLE).read_text(encoding="utf-8")
    assert all(f"| {name} | test |" in table for name in results) and f"**{choice['source']}**" in table


def test_queries_on_the_real_vectors(vectors_project):
    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(vectors_project), "similar", "食べた", "--json", "--vectors", "spacy"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["keys"] == ["食べる"] and len(data["neighbours"]) == 10
    pairs = "京都\t大阪\n野球\tサッカー\n京都\tｘｙｚｚｙ語\n"
    result = CliRunner().invoke(
        app, ["--dir", str(vectors_project), "similarity", "--pairs", "-", "--json", "--vectors", "spacy"], input=pairs
    )
    assert result.exit_code == 0, result.output
    scores = [json.loads(line)["score"] for line in result.stdout.splitlines()]
    assert scores[0] is not None and scores[1] is not None and scores[2] is None
