"""Integration: pretrain_lm on the real KNBC training articles plus the first Aozora works, then a
topic classifier with init = "pretrained" trains from it and is evaluated (small sizes and budget:
it checks the plumbing on real text, not the figures, which the README reports)."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.config import load_config
from pipeline.paths import PRETRAINED_LM_DIR, classifier_dir, task_report_dir
from pipeline.workflow.runner import Runner
from tests.conftest import SMALL_CLASSIFIER_SETTINGS
from tests.integration.test_aozora_integration import aozora_slice

# slow: language-model pretraining on KNBC and an Aozora slice; `make test-slow` / `make test-all` run it
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_pretraining_on_knbc_and_aozora_then_a_pretrained_topic_classifier(real_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(real_project, project)
    corpus = aozora_slice(tmp_path, 3000)
    settings = [
        f'tokenize.extra_corpora=["{corpus}"]',
        "classifier.embedding_init=random",
        "classifier.embedding_dim=32",
        "classifier.hidden_size=32",
        "pretrain_lm.max_tokens=60000",
        "pretrain_lm.rounds=2",
        "pretrain_lm.eval_tokens=5000",
        *(f"tasks.topic.classifier.{setting}" for setting in [*SMALL_CLASSIFIER_SETTINGS, "epochs=2", "init=pretrained"]),
    ]
    Runner(project, load_config(project, settings)).run("evaluate_topic")

    report = json.loads((project / PRETRAINED_LM_DIR / "pretrain.json").read_text(encoding="utf-8"))
    assert report["text"]["corpus"] and report["text"]["held_apart_documents"] >= 1
    assert report["text"]["knbc_train_tokens"] > 50_000  # KNBC's training articles are in the text
    vocab_size = report["text"]["vocab_size"]
    for direction in ("forward", "backward"):
        assert 1 < report[direction]["dev_perplexity"] < vocab_size
        assert 1 < report[direction]["knbc_test_perplexity"] < vocab_size
    metrics = json.loads((project / classifier_dir("topic") / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["init"] == "pretrained" and metrics["pretrained"]["embedding_rows_copied"] > 1000
    topic = json.loads((project / task_report_dir("topic") / "report.json").read_text(encoding="utf-8"))
    assert 0.0 < topic["bilstm_attention"]["macro_f1"] <= 1.0
