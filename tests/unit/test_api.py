"""The public Python API (``from pipeline import Classifier, Generator``) on tiny trained model directories.

A model directory is copied out of its project and loaded from another working
directory: it must give what ``jpipe classify`` / ``jpipe generate`` give in the project.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sudachipy")

from typer.testing import CliRunner  # noqa: E402

from pipeline import Classifier, Generator  # noqa: E402
from pipeline.cli import app  # noqa: E402
from pipeline.errors import ConfigError, InputError, ModelError  # noqa: E402
from pipeline.models.model_dir import FORMAT_VERSION  # noqa: E402
from pipeline.paths import GENERATOR_DIR, TOKENS_META, classifier_dir  # noqa: E402
from tests.conftest import REPO, TINY_GENERATOR_SETTINGS, fast_overrides, run_stage, write_tiny_project  # noqa: E402

TEXTS = ["ラーメンが美味しい", "携帯の画面が最悪", "京都の紅葉は最高", "野球の試合に行く", "サッカー選手が好き。" * 3]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project with a topic classifier (max_tokens 8: long texts span windows) and a generator."""
    import torch

    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("api") / "proj")
    run_stage(project, "train_topic", fast_overrides("topic", "max_tokens=8"))
    run_stage(project, "train_generator", TINY_GENERATOR_SETTINGS)
    return project


@pytest.fixture()
def elsewhere(tmp_path, monkeypatch) -> Path:
    """A working directory that is no project at all."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    monkeypatch.chdir(directory)
    return directory


def copy_model(project: Path, relative: str, tmp_path: Path) -> Path:
    target = tmp_path / "copied" / Path(relative).name
    shutil.copytree(project / relative, target)
    return target


def cli(project: Path, *args: str, stdin: str | None = None):
    result = CliRunner().invoke(app, ["--dir", str(project), *args], input=stdin)
    assert result.exit_code == 0, result.output
    return result


# ------------------------------------------------------------------ Classifier
def test_classifier_from_a_copied_dir_equals_jpipe_classify(project, tmp_path, elsewhere):
    copy = copy_model(project, classifier_dir("topic"), tmp_path)
    # The project's own tokenizer settings must play no part: the model directory decides.
    (project / TOKENS_META).write_text(json.dumps({"split_mode": "A"}), encoding="utf-8")
    try:
        rows = [
            json.loads(line) for line in cli(project, "classify", "-", "--task", "topic", stdin="\n".join(TEXTS) + "\n").stdout.splitlines()
        ]
    finally:
        (project / TOKENS_META).write_text(json.dumps({"split_mode": "C"}), encoding="utf-8")
    clf = Classifier.from_dir(copy)
    predictions = clf.predict(TEXTS)
    assert clf.split_mode == json.loads((copy / "config.json").read_text(encoding="utf-8")).get("tokenizer", {}).get("split_mode", "C")
    assert len(predictions) == len(rows) == len(TEXTS)
    for row, prediction in zip(rows, predictions, strict=True):
        assert row["error"] is None and row["topic"]["label"] == prediction.label
        assert set(prediction.probabilities) == {"Gourmet", "Keitai", "Kyoto", "Sports"}
        for label, p in prediction.probabilities.items():
            assert abs(row["topic"]["probabilities"][label] - p) <= 1e-6
        assert prediction.tokens is None and prediction.weights is None  # attention only on request
    assert predictions[-1].windows == 2  # 15 tokens, 8 per window: the long text was aggregated


def test_predict_with_attention(project, elsewhere):
    clf = Classifier.from_dir(project / classifier_dir("topic"))
    plain = clf.predict(["京都の寺は最高"])[0]
    explained = clf.predict(["京都の寺は最高"], attention=True)[0]
    assert explained.tokens == ["京都", "の", "寺", "は", "最高"]
    assert len(explained.weights) == 5 and sum(explained.weights) == pytest.approx(1.0, abs=1e-5)
    assert explained.probabilities == plain.probabilities and explained.label == plain.label
    assert explained.to_json()["tokens"] == explained.tokens
    assert clf.labels == ["Gourmet", "Keitai", "Kyoto", "Sports"] and clf.task == "topic" and clf.max_tokens == 8


def test_predict_rejects_text_without_tokens(project, elsewhere):
    clf = Classifier.from_dir(project / classifier_dir("topic"))
    with pytest.raises(InputError, match="E236") as error:
        clf.predict(["ラーメン", "   "])
    assert "--" not in error.value.hint


def test_legacy_dir_without_config_json_reads_with_split_mode_c(project, tmp_path, elsewhere):
    copy = copy_model(project, classifier_dir("topic"), tmp_path)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    (copy / "model_args.json").write_text(json.dumps(config["model_args"]), encoding="utf-8")
    (copy / "config.json").unlink()
    legacy = Classifier.from_dir(copy)
    assert legacy.split_mode == "C"
    current = Classifier.from_dir(project / classifier_dir("topic"))
    assert [p.probabilities for p in legacy.predict(TEXTS)] == [p.probabilities for p in current.predict(TEXTS)]


def test_newer_format_version_names_both_versions(project, tmp_path, elsewhere):
    copy = copy_model(project, classifier_dir("topic"), tmp_path)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    (copy / "config.json").write_text(json.dumps({**config, "format_version": 99}), encoding="utf-8")
    with pytest.raises(ModelError, match="E302") as error:
        Classifier.from_dir(copy)
    assert error.value.code == "E302"
    assert "99" in error.value.message and f"0 to {FORMAT_VERSION}" in error.value.message
    assert "--" not in error.value.hint


def test_wrong_kind_of_model_directory(project, elsewhere):
    with pytest.raises(ModelError, match="E303") as error:
        Classifier.from_dir(project / GENERATOR_DIR)
    assert "LSTMLanguageModel" in error.value.message and "AttentionClassifier" in error.value.message
    with pytest.raises(ModelError, match="E303"):
        Generator.from_dir(project / classifier_dir("topic"))


def test_missing_or_damaged_model_directory(project, tmp_path, elsewhere):
    with pytest.raises(ModelError, match="E301"):
        Classifier.from_dir(tmp_path / "nothing-here")
    copy = copy_model(project, classifier_dir("topic"), tmp_path)
    (copy / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="E304"):
        Classifier.from_dir(copy)
    (copy / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="E304"):
        Classifier.from_dir(copy)


@pytest.mark.parametrize("damage", ["truncate", "garble_header"])
@pytest.mark.parametrize(("model", "loader"), [("classifier", Classifier), ("generator", Generator)])
def test_truncated_or_corrupt_weights_name_the_file(project, tmp_path, elsewhere, damage, model, loader):
    """A half-copied or garbled model.safetensors is E304 naming the file and saying what to do, not SafetensorError."""
    copy = copy_model(project, classifier_dir("topic") if model == "classifier" else GENERATOR_DIR, tmp_path)
    weights = copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\xff" * 16 + data[16:])
    with pytest.raises(ModelError, match="E304") as error:
        loader.from_dir(copy)
    assert str(weights) in error.value.message and "damaged or truncated" in error.value.message
    assert "Retrain" in error.value.hint


def test_tokenizer_settings_come_from_the_model_dir(project, tmp_path, elsewhere):
    copy = copy_model(project, classifier_dir("topic"), tmp_path)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    assert config["tokenizer"]["split_mode"] == "C"  # the tiny project's data/tokens/meta.json
    config["tokenizer"] = {**config["tokenizer"], "split_mode": "A"}
    (copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    clf = Classifier.from_dir(copy)
    assert clf.split_mode == "A" and clf.tokenizer.split_mode == "A" and clf.token_field == "norm"
    # Mode A cuts compounds that mode C keeps whole.
    assert clf.tokenize("国家公務員")["surface"] == ["国家", "公務", "員"]


def test_unsupported_tokenizer_settings(project, tmp_path, elsewhere):
    copy = copy_model(project, classifier_dir("topic"), tmp_path)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    config["tokenizer"] = {"split_mode": "C", "token_field": "norm", "normalization": "mecab"}
    (copy / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelError, match="E315"):
        Classifier.from_dir(copy)


def test_bad_options_are_config_errors(project, elsewhere):
    with pytest.raises(ConfigError, match="E109") as error:
        Classifier.from_dir(project / classifier_dir("topic"), long_policy="middle")
    assert "aggregate" in error.value.hint and "--" not in error.value.hint


# ------------------------------------------------------------------ Generator
def test_generator_from_a_copied_dir_equals_jpipe_generate(project, tmp_path, elsewhere):
    copy = copy_model(project, GENERATOR_DIR, tmp_path)
    args = ["generate", "--prompt", "京都の", "--num", "2", "--max-tokens", "10", "--seed", "7", "--json"]
    from_cli = json.loads(cli(project, *args).stdout)
    # jpipe generate's defaults: temperature 0.8, top-k 40, top-p 0.9
    result = Generator.from_dir(copy).generate("京都の", num=2, max_tokens=10, seed=7, temperature=0.8, top_k=40, top_p=0.9)
    assert result.to_json() == from_cli
    assert result.prompt_tokens == ["京都", "の"] and all(text.startswith("京都の") for text in result.samples)


def test_temperature_zero_is_greedy_in_library_and_cli(project, elsewhere):
    generator = Generator.from_dir(project / GENERATOR_DIR)
    first = generator.generate("京都の", temperature=0, max_tokens=8, seed=1)
    assert generator.generate("京都の", temperature=0, max_tokens=8, seed=2).samples == first.samples  # no randomness left
    from_cli = json.loads(
        cli(project, "generate", "--prompt", "京都の", "--num", "1", "--max-tokens", "8", "--temperature", "0", "--json").stdout
    )
    assert from_cli["samples"] == first.samples


@pytest.mark.parametrize(
    "options, text",
    [
        ({"temperature": -1.0}, "temperature must be 0 or more"),
        ({"temperature": float("nan")}, "temperature must be 0 or more"),
        ({"top_p": 0.0}, "top_p must be in (0, 1]"),
        ({"top_k": -1}, "top_k must be 0 or more"),
        ({"num": 0}, "at least 1"),
    ],
)
def test_generator_option_errors_name_no_flags(project, elsewhere, options, text):
    with pytest.raises(ConfigError, match="E109") as error:
        Generator.from_dir(project / GENERATOR_DIR).generate("京都の", **options)
    assert text in error.value.message
    assert "--" not in error.value.message and "--" not in error.value.hint


def test_cli_negative_temperature_is_an_error(project):
    result = CliRunner().invoke(app, ["--dir", str(project), "generate", "--temperature", "-0.5"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError) and result.exception.code == "E109"


# ------------------------------------------------------------------ import cost
def test_import_pipeline_and_cli_load_no_torch():
    code = (
        "import sys, pipeline; from pipeline.cli import app; "
        "assert callable(pipeline.__getattr__); "
        "print(sorted(m for m in ('torch', 'spacy', 'gensim', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_unknown_public_name():
    import pipeline

    with pytest.raises(AttributeError):
        pipeline.NoSuchThing  # noqa: B018
    assert {"Classifier", "Generator", "Vectors"} <= set(dir(pipeline))
