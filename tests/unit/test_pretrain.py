"""The pretrain_lm stage and classifiers initialised from it (init = "pretrained"), on tiny fixtures.

A fixture corpus of 60 hand-made documents goes into a real token store (``write_token_store``);
KNBC is the tiny classifier project of ``tests.conftest``.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import InputError, ModelError
from pipeline.models.classifier import AttentionClassifier
from pipeline.models.language_model import LSTMLanguageModel, load_generator
from pipeline.models.model_dir import load_state_dict
from pipeline.models.vocab import Vocab, read_word2vec_text
from pipeline.paths import EXTRA_TOKENS, PRETRAINED_LM_DIR, classifier_dir
from pipeline.training import pretrain
from pipeline.training.pretrain_data import held_apart_set
from pipeline.training.ulmfit import param_groups_and_plan
from pipeline.workflow.stages import build_stages
from tests.conftest import FILLER, THEME_WORDS, fast_overrides, run_stage, write_tiny_project, write_token_store

# The LMs get the classifier's sizes from [classifier]; the fixture's fake vectors are 8-d.
# pretrain_lm is a stage only when a classifier starts from it.
TINY_PRETRAIN = [
    "tasks.topic.classifier.init=pretrained",
    "classifier.embedding_init=word2vec",
    "classifier.hidden_size=16",
    "pretrain_lm.max_tokens=6000",
    "pretrain_lm.rounds=3",
    "pretrain_lm.patience=3",
    "pretrain_lm.min_count=1",
    "pretrain_lm.batch_size=8",
    "pretrain_lm.bptt=10",
    "pretrain_lm.learning_rate=0.02",
    "pretrain_lm.freeze_vectors=false",  # the fixture's random 8-d vectors would hold the LMs back
    "pretrain_lm.device=cpu",
]


def fixture_documents(count: int = 60, seed: int = 0) -> list[list[list[str]]]:
    """Documents whose sentences repeat a theme's words among filler: something an LM can learn."""
    rng = random.Random(seed)
    themes = list(THEME_WORDS.values())
    extra = [f"語{i}" for i in range(30)]
    documents = []
    for number in range(count):
        words = themes[number % 4] + extra[number % 3 :: 3]
        documents.append([[rng.choice(words if k % 2 else FILLER) for k in range(rng.randint(3, 12))] for _ in range(rng.randint(4, 12))])
    return documents


@pytest.fixture
def lm_project(tmp_path: Path) -> Path:
    project = write_tiny_project(tmp_path / "proj")
    shutil.rmtree(project / EXTRA_TOKENS)
    write_token_store(project / EXTRA_TOKENS, fixture_documents())
    return project


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(directory / "model.safetensors")


# ------------------------------------------------------------------ the weight copy
def _lm(vocab_size: int, seed: int) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    return LSTMLanguageModel(vocab_size=vocab_size, embedding_size=8, hidden_size=6, adaptive_cutoffs=[4])


def test_copy_puts_the_forward_lm_in_the_forward_direction_and_the_backward_lm_in_the_reverse():
    vocab = Vocab(["<pad>", "<unk>", "京都", "寺", "携帯", "未知"])
    lm_vocab = Vocab(["<pad>", "<unk>", "</s>", "携帯", "京都", "寺", "野球"])  # another order; 未知 missing
    forward, backward = _lm(len(lm_vocab), 1), _lm(len(lm_vocab), 2)
    torch.manual_seed(3)
    classifier = AttentionClassifier(vocab_size=len(vocab), embedding_dim=8, num_classes=3, hidden_size=6)
    unknown_row = classifier.embedding.weight[vocab.stoi["未知"]].clone()

    info = pretrain.copy_language_models(classifier, vocab, forward=forward, backward=backward, lm_vocab=lm_vocab)

    for name in pretrain.LSTM_WEIGHTS:
        assert torch.equal(getattr(classifier.rnn, name), getattr(forward.lstm, name)), name
        assert torch.equal(getattr(classifier.rnn, f"{name}_reverse"), getattr(backward.lstm, name)), name
        assert not torch.equal(getattr(forward.lstm, name), getattr(backward.lstm, name))  # the two are told apart
    for word in ("<unk>", "京都", "寺", "携帯"):
        assert torch.equal(classifier.embedding.weight[vocab.stoi[word]], forward.embedding.weight[lm_vocab.stoi[word]]), word
    assert torch.equal(classifier.embedding.weight[vocab.stoi["未知"]], unknown_row)  # not in the LMs: unchanged
    assert not classifier.embedding.weight[vocab.pad_index].any()
    assert info["embedding_rows_copied"] == 4


def test_copy_refuses_a_classifier_of_other_sizes():
    lm_vocab = Vocab(["<pad>", "<unk>", "</s>", "京都", "寺", "野球"])
    classifier = AttentionClassifier(vocab_size=3, embedding_dim=8, num_classes=2, hidden_size=7)
    with pytest.raises(ModelError) as error:
        pretrain.copy_language_models(
            classifier, Vocab(["<pad>", "<unk>", "京都"]), forward=_lm(6, 1), backward=_lm(6, 2), lm_vocab=lm_vocab
        )
    assert error.value.code == "E317" and "hidden size 6" in str(error.value)


def test_the_lstm_is_frozen_first_then_trains_at_a_lower_rate():
    """unfreezing = simple: group 1 (the LSTM's layer 0) at rate 0 in epoch 1, then at pretrained_lr_factor."""
    model = AttentionClassifier(vocab_size=20, embedding_dim=8, num_classes=3, hidden_size=6)
    section = {"init": "pretrained", "learning_rate": 0.01, "pretrained_freeze_epochs": 1, "pretrained_lr_factor": 0.3, "epochs": 5}
    _, plan = param_groups_and_plan(model, section)
    assert plan.rate(1, epoch=1, step=0, steps_per_epoch=10) == 0.0
    assert plan.rate(1, epoch=2, step=0, steps_per_epoch=10) == pytest.approx(0.003)
    assert plan.rate(0, epoch=1, step=3, steps_per_epoch=10) == pytest.approx(0.01)


def test_held_apart_documents_are_two_percent_and_fixed():
    chosen = held_apart_set(798)
    assert chosen == held_apart_set(798) and 8 <= len(chosen) <= 24  # about 2% of Aozora's 798 works
    assert held_apart_set(5) and held_apart_set(1) == set()  # a small corpus still holds one apart, never its only one


# ------------------------------------------------------------------ the stage
def test_tiny_pretraining_writes_two_language_models_that_learned(lm_project):
    summary = run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    out = lm_project / PRETRAINED_LM_DIR
    report = json.loads((out / "pretrain.json").read_text(encoding="utf-8"))
    forward, backward = load_generator(out / "forward"), load_generator(out / "backward")
    assert forward.vocab.itos == backward.vocab.itos and forward.model.lstm.hidden_size == 16
    assert forward.model.embedding.weight.shape[1] == 8  # the fixture vectors' size: the classifier's embedding
    assert not torch.equal(forward.model.lstm.weight_hh_l0, backward.model.lstm.weight_hh_l0)
    vocab_size = len(forward.vocab)
    for direction in ("forward", "backward"):
        records = [json.loads(line) for line in (out / direction / "train_log.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(records) == 3 and records[-1]["dev_perplexity"] < records[0]["dev_perplexity"]
        assert report[direction]["dev_perplexity"] < vocab_size / 2  # far below a uniform guess
        assert report[direction]["knbc_test_perplexity"] is not None
    assert report["text"]["corpus"] and report["text"]["held_apart_documents"] >= 1
    assert summary["train_tokens"] >= 5000 and summary["vocab_size"] == vocab_size
    assert report["text"]["train_unk_rate"] == 0.0  # min_count 1: every training word has a row


def test_freeze_vectors_keeps_the_rows_that_have_a_vector_and_trains_the_others(lm_project):
    run_stage(lm_project, "pretrain_lm", [*TINY_PRETRAIN, "pretrain_lm.freeze_vectors=true"])
    forward = load_generator(lm_project / PRETRAINED_LM_DIR / "forward")
    words, vectors = read_word2vec_text(lm_project / "models" / "vectors" / "word2vec" / "vectors.txt")
    table = forward.model.embedding.weight.detach()
    for word, vector in zip(words, vectors, strict=True):  # the classifier's (frozen) input space is kept
        assert torch.equal(table[forward.vocab.stoi[word]], torch.from_numpy(vector)), word
    start = torch.from_numpy(pretrain.embedding_matrix(forward.vocab, words, vectors, seed=13)[0])
    corpus_only = forward.vocab.stoi["語0"]  # a corpus word without a vector: it learned
    assert not torch.equal(table[corpus_only], start[corpus_only])


def kill_lm_stage_then_resume(project: Path, stage: str, overrides: list[str], monkeypatch, *, at_round: int) -> None:
    """Run ``stage`` (a language-model stage) until its ``at_round``-th round starts, kill it there, then resume it."""
    original, calls = pretrain.LMPretraining.train_epoch, []

    def dies(self, epoch, steps):
        calls.append(epoch)
        if len(calls) == at_round:
            raise KeyboardInterrupt
        return original(self, epoch, steps)

    monkeypatch.setattr(pretrain.LMPretraining, "train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        run_stage(project, stage, overrides)
    monkeypatch.setattr(pretrain.LMPretraining, "train_epoch", original)
    run_stage(project, stage, overrides, resume=True)


def test_a_killed_pretraining_resumes_to_the_same_models(lm_project, monkeypatch, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(lm_project, twin)
    run_stage(twin, "pretrain_lm", TINY_PRETRAIN)  # uninterrupted
    kill_lm_stage_then_resume(lm_project, "pretrain_lm", TINY_PRETRAIN, monkeypatch, at_round=3)  # the forward LM's third round

    report = json.loads((lm_project / PRETRAINED_LM_DIR / "pretrain.json").read_text(encoding="utf-8"))
    assert report["forward"]["resumed_from_epoch"] == 2
    for direction in ("forward", "backward"):
        resumed, straight = weights(lm_project / PRETRAINED_LM_DIR / direction), weights(twin / PRETRAINED_LM_DIR / direction)
        assert resumed.keys() == straight.keys()
        for name in resumed:
            assert torch.equal(resumed[name], straight[name]), (direction, name)


def test_a_corpus_too_small_for_the_vocabulary_size_names_both_numbers(lm_project):
    with pytest.raises(InputError) as error:
        run_stage(lm_project, "pretrain_lm", [*TINY_PRETRAIN, "pretrain_lm.vocab_size=5000"])
    assert error.value.code == "E280"
    assert "asks for 5000" in str(error.value) and "distinct words seen at least 1 times" in str(error.value)


def test_without_a_corpus_pretraining_falls_back_to_knbc_with_a_warning(tmp_path, caplog):
    project = write_tiny_project(tmp_path / "proj")  # its token store is empty
    with caplog.at_level(logging.WARNING, logger="pipeline.training.pretrain_data"):
        run_stage(project, "pretrain_lm", TINY_PRETRAIN)
    assert "no unlabelled corpus" in caplog.text
    report = json.loads((project / PRETRAINED_LM_DIR / "pretrain.json").read_text(encoding="utf-8"))
    assert not report["text"]["corpus"] and report["text"]["held_apart_articles"] >= 1
    assert report["forward"]["dev_perplexity"] is not None


# ------------------------------------------------------------------ the classifier
def test_a_pretrained_classifier_starts_from_the_lms_and_keeps_the_lstm_frozen_in_its_first_epoch(lm_project):
    run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    overrides = [*TINY_PRETRAIN, *fast_overrides("topic", "hidden_size=16", "init=pretrained", "epochs=1", "patience=1")]
    summary = run_stage(lm_project, "train_topic", overrides)
    model_dir = lm_project / classifier_dir("topic")
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["init"] == "pretrained" and metrics["pretrained"]["embedding_rows_copied"] > 10
    trained = weights(model_dir)
    forward = weights(lm_project / PRETRAINED_LM_DIR / "forward")
    backward = weights(lm_project / PRETRAINED_LM_DIR / "backward")
    for name in pretrain.LSTM_WEIGHTS:  # epoch 1 trains the layers above the LSTM only
        assert torch.equal(trained[f"rnn.{name}"], forward[f"lstm.{name}"])
        assert torch.equal(trained[f"rnn.{name}_reverse"], backward[f"lstm.{name}"])
    assert summary["dev_macro_f1"] >= 0.0


def test_pretrain_lm_is_a_stage_only_when_a_classifier_needs_it(tmp_path):
    default = {stage.name: stage for stage in build_stages(load_config(tmp_path))}
    assert "pretrain_lm" not in default
    config = load_config(tmp_path, ["tasks.sentiment.classifier.init=pretrained"])
    stages = {stage.name: stage for stage in build_stages(config)}
    assert PRETRAINED_LM_DIR in stages["train_sentiment"].input_paths(config)
    assert PRETRAINED_LM_DIR not in stages["train_topic"].input_paths(config)
    assert list(stages).index("pretrain_lm") < list(stages).index("train_sentiment")


def test_asking_for_pretrain_lm_in_a_project_that_does_not_use_it_says_how_to_turn_it_on(tmp_path):
    from pipeline.errors import WorkflowError
    from pipeline.workflow.runner import Runner

    with pytest.raises(WorkflowError) as error:
        Runner(tmp_path, load_config(tmp_path)).stage("pretrain_lm")
    assert error.value.code == "E401" and "init" in error.value.hint


def test_a_scratch_classifier_keeps_the_fingerprint_it_had_before_pretraining_existed(tmp_path):
    config = load_config(tmp_path)
    view = config.fingerprint_view("tasks.topic.classifier")
    assert "init" not in view and "pretrained_lr_factor" not in view
    assert (
        load_config(tmp_path, ["tasks.topic.classifier.init=pretrained"]).fingerprint_view("tasks.topic.classifier")["init"] == "pretrained"
    )


def test_bench_train_measures_the_lm_with_both_softmaxes(tmp_path):
    from pipeline.bench.train import benchmark_lm_training

    config = load_config(tmp_path, ["pretrain_lm.batch_size=4", "pretrain_lm.bptt=8", "classifier.embedding_init=random"])
    classifier = {**config["classifier"], "embedding_dim": 16, "hidden_size": 64}
    result = benchmark_lm_training(project_dir=tmp_path, section=config["pretrain_lm"], classifier=classifier, steps=2, vocab_size=12_000)
    assert result["vocab_size"] == 12_000 and result["vocab_from"] == "default" and result["embedding_dim"] == 16
    assert result["adaptive_softmax_tokens_per_second"] > 0 and result["full_softmax_tokens_per_second"] > 0
    assert result["speedup"] == pytest.approx(
        result["adaptive_softmax_tokens_per_second"] / result["full_softmax_tokens_per_second"], rel=0.01
    )


def test_a_corpus_of_one_document_has_nothing_held_apart_and_says_so(lm_project):
    """A text corpus without blank lines is one document: nothing can be held apart, so early stopping would
    never see a dev figure and keep the initial weights. The stage stops with a coded error instead."""
    shutil.rmtree(lm_project / EXTRA_TOKENS)
    write_token_store(lm_project / EXTRA_TOKENS, [[sentence for document in fixture_documents() for sentence in document]])
    with pytest.raises(InputError) as error:
        run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    assert error.value.code == "E281" and "0 tokens" in str(error.value) and "1 documents" in str(error.value)


def test_only_the_copied_layer_gets_the_pretrained_rate_in_a_stacked_classifier():
    """With two stacked layers only layer 0 (both directions) came from the LMs: layer 1 starts random and must
    train at the model's rate from the first epoch, not sit frozen with the copied layer."""
    from pipeline.training.classifier import make_steps

    model = AttentionClassifier(vocab_size=20, embedding_dim=8, num_classes=3, hidden_size=6, num_layers=2)
    section = {"init": "pretrained", "learning_rate": 0.01, "weight_decay": 0.0, "amp": False, "grad_clip": 1.0}
    section.update(pretrained_freeze_epochs=1, pretrained_lr_factor=0.3)
    groups = make_steps(model, {**section, "epochs": 3}, device=torch.device("cpu"))[0].optimizer.param_groups
    names = {id(p): name for name, p in model.named_parameters()}
    pretrained = sorted(names[id(p)] for p in groups[1]["params"])
    assert pretrained == sorted(f"rnn.{w}_l0{d}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for d in ("", "_reverse"))
    assert {names[id(p)] for p in groups[0]["params"]} >= {"rnn.weight_ih_l1", "rnn.weight_hh_l1_reverse"}
