"""Integration: `jpipe --profile quick run` builds every stage on the real KNBC, pretraining included
(on KNBC's training articles plus the first Aozora works), as a user would run it from the shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.paths import GENERATOR_REPORT, GENERATOR_TABLE, METRICS, PRETRAINED_GENERATOR_DIR, PRETRAINED_LM_DIR
from tests.integration.test_aozora_integration import aozora_slice

# slow: the whole quick profile, pretraining included; `make test-slow` / `make test-all` run it
pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def jpipe(project: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "--dir", str(project), "--profile", "quick", *args]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=1800)


def test_quick_profile_runs_every_stage_with_pretraining(real_project, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(real_project, project)
    corpus = f'tokenize.extra_corpora=["{aozora_slice(tmp_path, 3000)}"]'
    done = jpipe(project, "run", "--set", corpus)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    status = json.loads(jpipe(project, "status", "--json", "--set", corpus).stdout)
    stages = {row["name"]: row for row in status["stages"]}
    assert {"pretrain_lm", "finetune_lm_topic", "finetune_lm_sentiment", "pretrain_generator", "train_generator", "report"} <= set(stages)
    assert all(row["state"] == "fresh" for row in stages.values()), [name for name, row in stages.items() if row["state"] != "fresh"]

    metrics = json.loads((project / METRICS).read_text(encoding="utf-8"))
    assert {"topic", "sentiment", "generator", "vectors", "extractor", "stage_times"} <= set(metrics)
    assert {"pretrain_lm", "pretrain_generator", "train_topic"} <= set(metrics["stage_times"]["seconds"])
    assert (project / PRETRAINED_LM_DIR / "forward" / "model.safetensors").exists()
    topic = json.loads((project / "models/classifier/topic/metrics.json").read_text(encoding="utf-8"))
    assert topic["init"] == "pretrained" and topic["pretrained"]["embedding_rows_copied"] > 100
    tuned = json.loads((project / "models/target_lm/topic/finetune.json").read_text(encoding="utf-8"))
    assert tuned["forward"]["dev_perplexity"] is not None and tuned["text"]["train_rows"] > 2000

    generator = json.loads((project / GENERATOR_REPORT).read_text(encoding="utf-8"))
    pretraining = generator["pretraining"]
    assert pretraining["text"]["corpus"] and pretraining["ngram_same_text"]["perplexity"] is not None
    assert pretraining["lm_before_fine_tuning"]["targets"] == generator["lstm"]["targets"] == generator["ngram"]["targets"]
    pretrained = json.loads((project / PRETRAINED_GENERATOR_DIR / "metrics.json").read_text(encoding="utf-8"))
    assert pretrained["dev_perplexity"] < pretrained["vocab_size"]  # it learned something on the held-apart works
    assert "pretrained only" in (project / GENERATOR_TABLE).read_text(encoding="utf-8")
