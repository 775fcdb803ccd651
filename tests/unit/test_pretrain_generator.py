"""The generator's pretraining: stage pretrain_generator and train_generator init = "pretrained" (tiny fixtures)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import ConfigError, ModelError
from pipeline.models.language_model import load_generator
from pipeline.models.model_dir import load_state_dict
from pipeline.models.vocab import EOS, Vocab
from pipeline.paths import EXTRA_TOKENS, GENERATOR_DIR, GENERATOR_REPORT, PRETRAINED_GENERATOR_DIR, TOKENS
from pipeline.training.pretrain_data import PretrainText
from pipeline.training.pretrain_generator import generator_vocab, text_sentences
from pipeline.workflow.stages import build_stages
from tests.conftest import run_stage, write_tiny_project, write_token_store
from tests.unit.test_pretrain import fixture_documents

TINY_GENERATOR = [
    "train_generator.init=pretrained",
    "train_generator.embedding_size=16",
    "train_generator.hidden_size=16",
    "train_generator.epochs=1",
    "train_generator.device=cpu",
    "train_generator.seeds=1",
    "pretrain_lm.max_tokens=6000",
    "pretrain_lm.rounds=3",
    "pretrain_lm.patience=3",
    "pretrain_lm.batch_size=8",
    "pretrain_lm.bptt=10",
    "pretrain_lm.learning_rate=0.02",
    "pretrain_lm.device=cpu",
]


@pytest.fixture
def gen_project(tmp_path: Path) -> Path:
    project = write_tiny_project(tmp_path / "proj", vectors=False)
    shutil.rmtree(project / EXTRA_TOKENS)
    write_token_store(project / EXTRA_TOKENS, fixture_documents())
    return project


def test_text_sentences_cut_the_stream_at_each_sentence_end():
    vocab = Vocab(["<pad>", "<unk>", "<s>", EOS, "京都", "寺"])
    stream = np.asarray([4, 5, 3, 1, 3, 5, 5, 4, 3])
    text = PretrainText(vocab=vocab, train=stream, dev=stream, knbc_test=stream)
    assert text_sentences(text) == [["京都", "寺"], ["<unk>"], ["寺", "寺", "京都"]]


def test_tiny_generator_pretraining_uses_the_generators_vocabulary_and_learns(gen_project):
    summary = run_stage(gen_project, "pretrain_generator", TINY_GENERATOR)
    out = gen_project / PRETRAINED_GENERATOR_DIR
    pretrained = load_generator(out)
    config = load_config(gen_project, TINY_GENERATOR)
    assert pretrained.vocab.itos == generator_vocab(gen_project / TOKENS, config["train_generator"]).itos
    assert pretrained.theme_conditioned and pretrained.model.tie_weights and pretrained.model.lstm.hidden_size == 16
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 3 and records[-1]["dev_perplexity"] < records[0]["dev_perplexity"]
    assert summary["dev_perplexity"] < len(pretrained.vocab) / 2  # far below a uniform guess
    # the corpus's 語N words are not in KNBC's training text: <unk> in the generator's vocabulary
    assert 0 < summary["train_unk_rate"] < 0.5
    assert pretrained.metrics["text"]["corpus"]


def test_a_pretrained_generator_starts_from_every_weight_of_the_lm(gen_project):
    run_stage(gen_project, "pretrain_generator", TINY_GENERATOR)
    # learning rate 0: the fine-tuned model is the model it started from
    summary = run_stage(gen_project, "train_generator", [*TINY_GENERATOR, "train_generator.learning_rate=0.0"])
    fine_tuned = load_state_dict(gen_project / GENERATOR_DIR / "model.safetensors")
    pretrained = load_state_dict(gen_project / PRETRAINED_GENERATOR_DIR / "model.safetensors")
    assert fine_tuned.keys() == pretrained.keys()
    for name, tensor in pretrained.items():
        assert torch.equal(fine_tuned[name], tensor), name
    metrics = json.loads((gen_project / GENERATOR_DIR / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["init"] == "pretrained" and summary["dev_perplexity"] > 0


def test_a_generator_with_another_vocabulary_than_the_lm_is_refused(gen_project):
    run_stage(gen_project, "pretrain_generator", TINY_GENERATOR)
    with pytest.raises(ModelError) as error:
        run_stage(gen_project, "train_generator", [*TINY_GENERATOR, "train_generator.min_count=40"])
    assert error.value.code == "E318" and "vocabulary" in str(error.value)


def test_evaluation_scores_the_lm_before_fine_tuning_and_an_ngram_on_the_same_text(gen_project):
    run_stage(gen_project, "pretrain_generator", TINY_GENERATOR)
    run_stage(gen_project, "train_generator", TINY_GENERATOR)
    run_stage(gen_project, "evaluate_generator", [*TINY_GENERATOR, "evaluate_generator.num_samples=1"])
    report = json.loads((gen_project / GENERATOR_REPORT).read_text(encoding="utf-8"))
    pretraining = report["pretraining"]
    targets = report["lstm"]["targets"]
    assert pretraining["lm_before_fine_tuning"]["targets"] == targets == pretraining["ngram_same_text"]["targets"]
    # the n-gram model on KNBC + corpus differs from the one on KNBC alone
    assert pretraining["ngram_same_text"]["perplexity"] != report["ngram"]["perplexity"]
    assert pretraining["lstm_to_ngram_same_text_ratio"] == pytest.approx(
        report["lstm"]["perplexity"] / pretraining["ngram_same_text"]["perplexity"], abs=1e-3
    )


def test_pretrain_generator_is_a_stage_only_when_the_generator_starts_from_it(tmp_path):
    default = load_config(tmp_path)
    assert "pretrain_generator" not in {stage.name for stage in build_stages(default)}
    assert "init" not in default.fingerprint_view("train_generator")  # scratch projects stay fresh
    config = load_config(tmp_path, ["train_generator.init=pretrained"])
    stages = {stage.name: stage for stage in build_stages(config)}
    assert PRETRAINED_GENERATOR_DIR in stages["train_generator"].input_paths(config)
    assert PRETRAINED_GENERATOR_DIR in stages["evaluate_generator"].input_paths(config)
    assert list(stages).index("pretrain_generator") < list(stages).index("train_generator")
    assert config.fingerprint_view("train_generator")["init"] == "pretrained"


def test_pretraining_a_character_level_generator_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, ["train_generator.init=pretrained", "train_generator.level=char"])
    assert error.value.code == "E108" and "level" in str(error.value)


def test_score_and_generate_take_another_model_directory(gen_project, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    run_stage(gen_project, "pretrain_generator", TINY_GENERATOR)
    run_stage(gen_project, "train_generator", TINY_GENERATOR)
    texts = tmp_path / "texts.txt"
    texts.write_text("京都の寺です。\n携帯の画面が最悪です。\n", encoding="utf-8")

    def overall(*model_dir: str) -> float:
        result = CliRunner().invoke(app, ["--dir", str(gen_project), "score", str(texts), "--json", *model_dir])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["perplexity"]

    pretrained_dir = str(gen_project / PRETRAINED_GENERATOR_DIR)
    assert overall("--model-dir", pretrained_dir) != overall()  # the LM before fine-tuning scores differently
    sample = CliRunner().invoke(app, ["--dir", str(gen_project), "generate", "--model-dir", pretrained_dir, "--seed", "1", "--num", "1"])
    assert sample.exit_code == 0 and sample.stdout.strip()
    missing = CliRunner().invoke(app, ["--dir", str(gen_project), "score", str(texts), "--model-dir", str(tmp_path / "none")])
    assert missing.exit_code == 1 and isinstance(missing.exception, ModelError) and missing.exception.code == "E301"
