"""Training stages on a tiny hand-made tokens file: artifacts, vectors init, resume, evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pipeline.config import load_config  # noqa: E402
from pipeline.workflow.runner import Runner  # noqa: E402
from pipeline.workflow.stages import build_stages  # noqa: E402
from tests.conftest import fast_overrides, png_size, write_tiny_project  # noqa: E402

CLASSIFIER_STAGES = ("train_topic", "train_sentiment", "evaluate_topic", "evaluate_sentiment")


def runner_for(project: Path, overrides: list[str]) -> Runner:
    """A runner over the classifier stages only (the fixture project has no corpus stages)."""
    config = load_config(project, overrides)
    return Runner(project, config, stages=[s for s in build_stages(config) if s.name in CLASSIFIER_STAGES])


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_train_topic_writes_a_complete_model_dir(clf_project):
    runner = runner_for(clf_project, fast_overrides("topic"))
    runner.run("train_topic")
    model_dir = clf_project / "models/classifier/topic"
    for name in ("config.json", "vocab.json", "labels.json", "model.safetensors", "metrics.json", "train_log.jsonl"):
        assert (model_dir / name).exists(), name
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert json.loads((model_dir / "labels.json").read_text()) == ["Gourmet", "Keitai", "Kyoto", "Sports"]
    vocab = json.loads((model_dir / "vocab.json").read_text())
    assert vocab["itos"][:2] == ["<pad>", "<unk>"] and vocab["token_field"] == "norm" and vocab["max_tokens"] == 200
    # The fixture's theme words make the task easy: a working loop must learn it.
    assert metrics["dev_macro_f1"] >= 0.9
    assert metrics["embedding_init"] == "word2vec" and metrics["embedding_coverage"] == 1.0
    log = read_log(model_dir / "train_log.jsonl")
    assert [r["epoch"] for r in log] == list(range(1, metrics["epochs_run"] + 1))
    assert {"train_loss", "dev_loss", "dev_accuracy", "dev_macro_f1", "seconds"} <= set(log[0])
    assert runner.status()[0].fresh  # the lock records the stage


def test_pretrained_vectors_initialise_frozen_embeddings(clf_project):
    from pipeline.models.classifier import load_classifier
    from pipeline.models.vocab import read_word2vec_text

    runner_for(clf_project, fast_overrides("topic", "freeze_embeddings=true", "epochs=2")).run("train_topic")
    loaded = load_classifier(clf_project / "models/classifier/topic")
    words, vectors = read_word2vec_text(clf_project / "models/vectors/word2vec/vectors.txt")
    table = loaded.model.embedding.weight.detach().numpy()
    for word, vector in zip(words[:10], vectors[:10], strict=True):
        assert table[loaded.vocab.stoi[word]] == pytest.approx(vector, abs=1e-6)


def test_random_init_needs_no_vectors(tmp_path):
    project = write_tiny_project(tmp_path / "p", vectors=False)
    runner = runner_for(project, fast_overrides("sentiment", "embedding_init=random", "embedding_dim=12", "epochs=2"))
    runner.run("train_sentiment")
    args = json.loads((project / "models/classifier/sentiment/config.json").read_text())["model_args"]
    assert args["embedding_dim"] == 12 and args["num_classes"] == 3


def test_missing_vectors_is_a_clear_error(tmp_path):
    from pipeline.errors import PipelineError

    project = write_tiny_project(tmp_path / "p", vectors=False)
    with pytest.raises(PipelineError, match="word2vec") as caught:
        runner_for(project, fast_overrides("topic")).run("train_topic")
    assert caught.value.code == "E404"  # the vector stage's directory is a missing stage input
    (project / "models/vectors/word2vec").mkdir(parents=True)
    with pytest.raises(PipelineError, match="vectors.txt is missing") as caught:
        runner_for(project, fast_overrides("topic")).run("train_topic")
    assert caught.value.code == "E305" and "jpipe run word2vec" in caught.value.hint and "--" not in caught.value.hint


def _weights(project: Path, task: str = "topic") -> dict:
    from pipeline.models.model_dir import load_state_dict

    return load_state_dict(project / f"models/classifier/{task}/model.safetensors")


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    import pipeline.training.loop as train_module

    overrides = fast_overrides("topic", "epochs=5", "patience=5", "dropout=0.3")
    straight = write_tiny_project(tmp_path / "straight")
    runner_for(straight, overrides).run("train_topic")

    interrupted = write_tiny_project(tmp_path / "interrupted")
    real_save = train_module.save_checkpoint
    saved_epochs = []

    def crash_after_epoch_2(path, payload):
        real_save(path, payload)
        saved_epochs.append(payload["state"]["epoch"])
        if payload["state"]["epoch"] == 2:
            raise KeyboardInterrupt("simulated interruption after epoch 2")

    monkeypatch.setattr(train_module, "save_checkpoint", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt, match="simulated interruption after epoch 2"):
        runner_for(interrupted, overrides).run("train_topic")
    assert saved_epochs == [1, 2]
    assert not (interrupted / "models/classifier/topic").exists(), "a crashed stage must not publish outputs"
    monkeypatch.setattr(train_module, "save_checkpoint", real_save)

    runner_for(interrupted, overrides).run("train_topic", resume=True)
    metrics = json.loads((interrupted / "models/classifier/topic/metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == 2
    resumed_log = read_log(interrupted / "models/classifier/topic/train_log.jsonl")
    straight_log = read_log(straight / "models/classifier/topic/train_log.jsonl")
    assert [r["epoch"] for r in resumed_log] == [1, 2, 3, 4, 5]
    for a, b in zip(resumed_log, straight_log, strict=True):
        assert a["dev_macro_f1"] == b["dev_macro_f1"] and a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-4)
    for name, tensor in _weights(straight).items():
        torch.testing.assert_close(_weights(interrupted)[name], tensor, atol=1e-5, rtol=1e-4)


def test_resume_ignores_a_checkpoint_of_other_settings(clf_project, caplog):
    runner_for(clf_project, fast_overrides("topic", "epochs=2")).run("train_topic")
    caplog.set_level("WARNING")
    runner_for(clf_project, fast_overrides("topic", "epochs=2", "hidden_size=12")).run("train_topic", resume=True)
    assert "other settings" in caplog.text
    assert json.loads((clf_project / "models/classifier/topic/metrics.json").read_text())["resumed_from_epoch"] is None
    assert json.loads((clf_project / "models/classifier/topic/config.json").read_text())["model_args"]["hidden_size"] == 12


def test_without_resume_training_starts_over(clf_project):
    runner = runner_for(clf_project, fast_overrides("topic", "epochs=2"))
    runner.run("train_topic")
    runner.run("train_topic", force=True)
    assert json.loads((clf_project / "models/classifier/topic/metrics.json").read_text())["resumed_from_epoch"] is None
    assert len(read_log(clf_project / "models/classifier/topic/train_log.jsonl")) == 2


def test_evaluate_stage_report_shape_and_figures(clf_project):
    overrides = fast_overrides("topic") + fast_overrides("sentiment")
    runner = runner_for(clf_project, overrides)
    runner.run("evaluate_topic")
    runner.run("evaluate_sentiment")
    report = {task: json.loads((clf_project / f"models/report/tasks/{task}/report.json").read_text()) for task in ("topic", "sentiment")}
    for task, labels in (("topic", ["Gourmet", "Keitai", "Kyoto", "Sports"]), ("sentiment", ["negative", "neutral", "positive"])):
        assert set(report[task]) == {"bilstm_attention", "tfidf_linear", "majority", "label_distribution", "comparisons"}
        assert len(report[task].pop("comparisons")) == 3
        distribution = report[task].pop("label_distribution")
        assert list(distribution) == ["train", "dev", "test"] and all(list(d) == labels for d in distribution.values())
        assert sum(distribution["test"].values()) == report[task]["majority"]["per_class"][labels[0]]["support"] + sum(
            report[task]["majority"]["per_class"][label]["support"] for label in labels[1:]
        )
        for entry in report[task].values():
            assert 0.0 <= entry["accuracy"] <= 1.0 and 0.0 <= entry["macro_f1"] <= 1.0
            assert list(entry["per_class"]) == labels
            assert set(entry["per_class"][labels[0]]) == {"precision", "recall", "f1", "support"}
        # majority predicts one class: its macro-F1 is at most 1 / number of classes
        assert report[task]["majority"]["macro_f1"] <= 1 / len(labels) + 1e-9
        assert report[task]["bilstm_attention"]["macro_f1"] >= 0.8
    for task in ("topic", "sentiment"):
        figures = clf_project / "models/report/tasks" / task
        assert sorted(p.name for p in figures.iterdir()) == ["calibration.png", "confusion.png", "report.json", "training.png"]
        assert [png_size(figures / name) for name in ("confusion.png", "training.png")] == [(1210, 528), (1100, 440)]  # figsize x 110 dpi


def test_training_stage_imports_only_torch_and_numpy(clf_project):
    """The training stages must run on a machine without spaCy, gensim or scikit-learn."""
    code = (
        "import sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from pipeline.config import load_config\n"
        "from pipeline.workflow.runner import Runner\n"
        "from pipeline.workflow.stages import build_stages\n"
        f"project = {str(clf_project)!r}\n"
        f"config = load_config(project, {fast_overrides('sentiment', 'epochs=1')!r})\n"
        "Runner(project, config, stages=[s for s in build_stages(config) if s.name == 'train_sentiment']).run('train_sentiment')\n"
        "print(','.join(m for m in ('spacy', 'gensim', 'sklearn', 'sudachipy', 'matplotlib') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1:] in ([], [""]), result.stdout


def test_bench_train_reports_both_figures(clf_project):
    from pipeline.bench.train import benchmark_training

    config = load_config(clf_project, fast_overrides("topic"))
    result = benchmark_training(project_dir=clf_project, section=config.classifier_for("topic"), steps=3, batch_size=8)
    assert result["data"] == "knbc" and result["steps"] == 3
    assert result["train_step"]["sentences_per_second"] > 0 and result["bare_rnn_forward_backward"]["sentences_per_second"] > 0
    model_rate, bare_rate = result["train_step"]["sentences_per_second"], result["bare_rnn_forward_backward"]["sentences_per_second"]
    # the rates are rounded to 0.1, the ratio to 0.001 (from the unrounded rates): allow exactly that rounding
    rounding = model_rate / bare_rate * (0.05 / model_rate + 0.05 / bare_rate) + 0.0005
    assert result["ratio"] == pytest.approx(model_rate / bare_rate, abs=rounding)
