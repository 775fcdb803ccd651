"""``benchmark_classify`` on a tiny trained project: the counts, keys and rates it reports are right."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sudachipy")

from pipeline.bench.classify import SHORT_REVIEWS, benchmark_classify, benchmark_texts  # noqa: E402
from pipeline.paths import TOKENS  # noqa: E402
from tests.conftest import fast_overrides, run_stage, write_tiny_project  # noqa: E402

KEYS = {
    "reviews",
    "classified",
    "source",
    "mean_characters",
    "tasks",
    "device",
    "int8",
    "label_agreement_with_fp32",
    "threads",
    "batch_size",
    "seconds",
    "reviews_per_second",
    "tokenize_only_reviews_per_second",
    "model_load_seconds",
    "peak_rss_mb",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("bench") / "proj")
    for task in ("topic", "sentiment"):
        run_stage(project, f"train_{task}", fast_overrides(task, "epochs=2"))
    return project


def test_benchmark_counts_keys_and_rates(project):
    texts, source = benchmark_texts(project)
    assert source == "KNBC test sentences" and texts and all(5 <= len(t) <= 80 for t in texts)
    result = benchmark_classify(project_dir=project, reviews=70, batch_size=16)
    assert set(result) == KEYS
    assert result["reviews"] == 70 and result["classified"] == 70  # every row, none with an error
    assert result["source"] == source and result["tasks"] == ["topic", "sentiment"]
    assert result["mean_characters"] == pytest.approx(sum(map(len, texts)) / len(texts), abs=0.05)
    assert result["device"] == "cpu" and result["int8"] is False and result["label_agreement_with_fp32"] is None
    assert result["batch_size"] == 16 and result["threads"] >= 1
    # The rate is 70 rows over the unrounded time; "seconds" is rounded to 1 ms.
    seconds = result["seconds"]
    assert seconds >= 0.001 and 70 / (seconds + 0.0005) - 0.1 <= result["reviews_per_second"] <= 70 / (seconds - 0.0005) + 0.1
    assert result["tokenize_only_reviews_per_second"] > 0 and result["model_load_seconds"] > 0 and result["peak_rss_mb"] > 50


def test_benchmark_int8_reports_label_agreement(project):
    result = benchmark_classify(project_dir=project, reviews=20, batch_size=8, int8=True)
    assert result["int8"] is True and result["reviews"] == result["classified"] == 20
    agreement = result["label_agreement_with_fp32"]
    assert set(agreement) == {"topic", "sentiment"} and all(0.0 <= share <= 1.0 for share in agreement.values())
    # The tiny models' labels survive int8 on most texts.
    assert min(agreement.values()) >= 0.8


def test_benchmark_without_tokens_uses_built_in_reviews(project, tmp_path):
    import shutil

    copy = tmp_path / "proj"
    shutil.copytree(project, copy)
    (copy / TOKENS).unlink()
    texts, source = benchmark_texts(copy)
    assert source == "built-in short reviews" and texts == SHORT_REVIEWS
    result = benchmark_classify(project_dir=copy, reviews=len(SHORT_REVIEWS) * 2, batch_size=4)
    assert result["source"] == source and result["reviews"] == result["classified"] == 16
