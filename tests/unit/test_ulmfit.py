"""ULMFiT's three steps on tiny fixtures: profiles that bring the corpus, target-LM fine-tuning (stage
finetune_lm_<task>), gradual unfreezing with discriminative and slanted triangular rates, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.config import load_config
from pipeline.errors import ConfigError, InputError
from pipeline.models.classifier import AttentionClassifier
from pipeline.paths import PRETRAINED_LM_DIR, classifier_dir, target_lm_dir
from pipeline.training import pretrain, target_lm
from pipeline.training.ulmfit import layer_groups, param_groups_and_plan, slanted_triangular
from pipeline.workflow.stages import build_stages
from tests.conftest import assert_same_weights, fast_overrides, model_weights, run_stage
from tests.unit.test_pretrain import TINY_PRETRAIN, kill_lm_stage_then_resume, lm_project  # noqa: F401  (the fixture)

TARGET = [*TINY_PRETRAIN, "tasks.topic.classifier.target_lm_epochs=3", "tasks.topic.classifier.target_lm_learning_rate=0.01"]
GRADUAL = ["unfreezing=gradual", "lr_decay=2.6", "schedule=slanted_triangular"]


# ------------------------------------------------------------------ profiles
def test_the_modern_profile_brings_the_corpus_to_word2vec_and_the_generator(tmp_path):
    config = load_config(tmp_path, profile="modern")
    assert config["tokenize"]["extra_corpora"] == ["../shared/data/modern/modern_ja.txt.gz"]
    assert config["word2vec"]["use_extra_corpora"] and config["train_generator"]["init"] == "pretrained"
    assert config.profile == "modern"


@pytest.mark.parametrize("spec", [["modern", "aozora"], "modern,aozora"])
def test_profiles_combine_in_order_and_join_their_corpora(tmp_path, spec):
    config = load_config(tmp_path, profile=spec)
    assert config["tokenize"]["extra_corpora"] == ["../shared/data/modern/modern_ja.txt.gz", "../shared/data/aozora/aozora_pd.txt.gz"]
    assert config.profile == "modern+aozora"


def test_a_profile_list_in_jpipe_toml_and_the_file_still_wins(tmp_path):
    (tmp_path / "jpipe.toml").write_text('profile = ["modern", "quick"]\n[classifier]\nseeds = 3\n', encoding="utf-8")
    config = load_config(tmp_path)
    assert config.profiles == ("modern", "quick")
    assert config["classifier"]["seeds"] == 3  # jpipe.toml over the quick profile's 1
    assert config["pretrain_lm"]["max_tokens"] == 100000  # from quick


def test_an_unknown_profile_lists_the_profiles(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path, profile=["modern", "modrn"])
    assert error.value.code == "E140" and "Did you mean 'modern'" in str(error.value)
    assert "aozora, modern, quick" in error.value.hint


def test_the_cli_takes_repeated_profiles(tmp_path):
    import tomllib

    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["--dir", str(tmp_path), "--profile", "modern", "--profile", "aozora", "config"])
    assert result.exit_code == 0, result.output
    corpora = tomllib.loads(result.stdout)["tokenize"]["extra_corpora"]
    assert [Path(path).name for path in corpora] == ["modern_ja.txt.gz", "aozora_pd.txt.gz"]


# ------------------------------------------------------------------ rates and unfreezing
def _classifier(freeze_embeddings: bool) -> AttentionClassifier:
    torch.manual_seed(0)
    return AttentionClassifier(vocab_size=30, embedding_dim=8, num_classes=3, hidden_size=6, freeze_embeddings=freeze_embeddings)


def _section(**values) -> dict:
    section = {"init": "pretrained", "learning_rate": 0.026, "epochs": 4, "unfreezing": "gradual", "lr_decay": 2.6}
    return {**section, "pretrained_freeze_epochs": 1, "pretrained_lr_factor": 0.3, **values}


@pytest.mark.parametrize("freeze_embeddings", [True, False])
def test_gradual_unfreezing_opens_one_group_per_epoch_from_the_top(freeze_embeddings):
    model = _classifier(freeze_embeddings)
    groups, plan = param_groups_and_plan(model, _section())
    optimizer = torch.optim.AdamW(groups, lr=0.026)
    head, rnn, embedding = layer_groups(model)
    assert len(groups) == (2 if freeze_embeddings else 3)  # a frozen embedding is no group: it never trains
    expected = {1: (True, False, False), 2: (True, True, False), 3: (True, True, not freeze_embeddings)}
    for epoch, (head_on, rnn_on, embedding_on) in expected.items():
        plan.start_epoch(optimizer, epoch)
        assert all(p.requires_grad == head_on for p in head), epoch
        assert all(p.requires_grad == rnn_on for p in rnn), epoch
        assert embedding[0].requires_grad == embedding_on, epoch
    rates = [plan.rate(group, epoch=4, step=0, steps_per_epoch=10) for group in range(len(groups))]
    assert rates == pytest.approx([0.026, 0.01, 0.026 / 2.6**2][: len(groups)])  # discriminative: / 2.6 per group down


def test_a_frozen_group_does_not_move_in_a_real_step():
    model = _classifier(freeze_embeddings=False)
    groups, plan = param_groups_and_plan(model, _section())
    optimizer = torch.optim.AdamW(groups, lr=0.026)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    plan.start_epoch(optimizer, 1)
    plan.before_step(optimizer, epoch=1, step=0, steps_per_epoch=1)
    logits, _ = model(torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved and all(name.startswith(("attention.", "output.")) for name in moved), moved
    assert not optimizer.state.get(model.rnn.weight_ih_l0)  # no Adam moments for a frozen group


def test_slanted_triangular_warms_up_then_decays_to_a_32nd():
    total = 100
    shares = [slanted_triangular(step, total) for step in range(total)]
    peak = shares.index(max(shares))
    assert peak == 10 and shares[peak] == pytest.approx(1.0)
    assert shares[0] == pytest.approx(1 / 32) and shares[-1] < 0.05
    assert all(a <= b for a, b in zip(shares[:peak], shares[1 : peak + 1], strict=True))  # rises
    assert all(a >= b for a, b in zip(shares[peak:-1], shares[peak + 1 :], strict=True))  # then falls


def test_scratch_training_keeps_one_group_and_a_constant_rate():
    groups, plan = param_groups_and_plan(_classifier(False), {"init": "scratch", "learning_rate": 0.01, "epochs": 3})
    assert len(groups) == 1 and plan.rate(0, epoch=3, step=7, steps_per_epoch=9) == 0.01


def test_new_keys_at_their_defaults_keep_old_fingerprints(tmp_path):
    config = load_config(tmp_path, ["tasks.topic.classifier.init=pretrained"])
    view = config.fingerprint_view("tasks.topic.classifier")
    assert not {"target_lm_epochs", "unfreezing", "lr_decay", "schedule", "target_lm_learning_rate"} & set(view)
    changed = load_config(tmp_path, ["tasks.topic.classifier.init=pretrained", "tasks.topic.classifier.unfreezing=gradual"])
    assert changed.fingerprint_view("tasks.topic.classifier")["unfreezing"] == "gradual"


# ------------------------------------------------------------------ target-LM fine-tuning
def test_finetune_lm_is_a_stage_only_with_target_lm_epochs(tmp_path):
    stages = {stage.name: stage for stage in build_stages(load_config(tmp_path, TINY_PRETRAIN))}
    assert "finetune_lm_topic" not in stages
    config = load_config(tmp_path, TARGET)
    stages = {stage.name: stage for stage in build_stages(config)}
    order = list(stages)
    assert order.index("pretrain_lm") < order.index("finetune_lm_topic") < order.index("train_topic")
    assert target_lm_dir("topic") in stages["train_topic"].input_paths(config)
    assert PRETRAINED_LM_DIR not in stages["train_topic"].input_paths(config)
    assert "finetune_lm_sentiment" not in stages  # sentiment stays scratch


def test_target_lm_fine_tuning_learns_the_task_text_and_never_reads_dev_or_test(lm_project, monkeypatch):  # noqa: F811
    run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    seen: list[list[str]] = []
    real_encode = target_lm.encode_stream
    monkeypatch.setattr(target_lm, "encode_stream", lambda sentences, vocab: seen.extend(sentences) or real_encode(sentences, vocab))
    summary = run_stage(lm_project, "finetune_lm_topic", TARGET)
    assert summary["held_apart_perplexity_after"] < summary["held_apart_perplexity_before"]
    rows = [json.loads(line) for line in (lm_project / "data/tokens/knbc.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [row["norm"] for row in rows if row["split"] == "train"]
    assert len(seen) == len(train) and all(sentence in train for sentence in seen)
    out = lm_project / target_lm_dir("topic")
    report = json.loads((out / target_lm.FINETUNE_NAME).read_text(encoding="utf-8"))
    assert report["text"]["held_apart_rows"] + report["text"]["train_rows"] == len(train)
    for direction in ("forward", "backward"):
        tuned, general = model_weights(out / direction), model_weights(lm_project / PRETRAINED_LM_DIR / direction)
        assert not torch.equal(tuned["lstm.weight_hh_l0"], general["lstm.weight_hh_l0"])


def test_the_classifier_starts_from_the_fine_tuned_lms(lm_project):  # noqa: F811
    run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    run_stage(lm_project, "finetune_lm_topic", TARGET)
    overrides = [*TARGET, *fast_overrides("topic", "hidden_size=16", "init=pretrained", "epochs=1", "patience=1", *GRADUAL)]
    run_stage(lm_project, "train_topic", overrides)
    trained = model_weights(lm_project / classifier_dir("topic"))
    tuned = model_weights(lm_project / target_lm_dir("topic") / "forward")
    for name in pretrain.LSTM_WEIGHTS:  # epoch 1 of gradual unfreezing trains the top group only
        assert torch.equal(trained[f"rnn.{name}"], tuned[f"lstm.{name}"])


def test_a_killed_fine_tuning_resumes_to_the_same_lms(lm_project, monkeypatch, tmp_path):  # noqa: F811
    run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    twin = tmp_path / "twin"
    shutil.copytree(lm_project, twin)
    run_stage(twin, "finetune_lm_topic", TARGET)
    kill_lm_stage_then_resume(lm_project, "finetune_lm_topic", TARGET, monkeypatch, at_round=2)
    for direction in ("forward", "backward"):
        assert_same_weights(lm_project / target_lm_dir("topic") / direction, twin / target_lm_dir("topic") / direction)


def test_a_killed_gradual_classifier_resumes_to_the_same_model(lm_project, monkeypatch, tmp_path):  # noqa: F811
    """Resume inside the unfreezing schedule (after epoch 2 of 4, slanted triangular rates) = an uninterrupted run."""
    from tests.conftest import interrupt_then_resume

    run_stage(lm_project, "pretrain_lm", TINY_PRETRAIN)
    twin = tmp_path / "twin"
    shutil.copytree(lm_project, twin)
    overrides = [
        *TINY_PRETRAIN,
        *fast_overrides("topic", "hidden_size=16", "init=pretrained", "epochs=4", "patience=4", "seeds=2", *GRADUAL),
    ]
    run_stage(twin, "train_topic", overrides)
    interrupt_then_resume(lambda resume: run_stage(lm_project, "train_topic", overrides, resume=resume), monkeypatch, seed=14, epoch=2)
    assert_same_weights(lm_project / classifier_dir("topic") / "seeds" / "14", twin / classifier_dir("topic") / "seeds" / "14")
    assert_same_weights(lm_project / classifier_dir("topic") / "seeds" / "13", twin / classifier_dir("topic") / "seeds" / "13")


def test_too_little_task_text_for_a_held_apart_perplexity_is_a_coded_error(tmp_path):
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(json.dumps({"split": "train", "norm": ["京都"]}, ensure_ascii=False) + "\n", encoding="utf-8")
    from pipeline.models.vocab import Vocab

    with pytest.raises(InputError) as error:
        target_lm.task_lm_text(tokens, vocab=Vocab(["<pad>", "<unk>", "</s>", "京都"]), token_field="norm")
    assert error.value.code == "E281" and "target_lm_epochs = 0" in error.value.hint
