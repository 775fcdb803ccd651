"""The ONNX Runtime backend (``jpipe export onnx``, ``--backend onnx``) against the torch model.

- every architecture variant (LSTM/GRU, merge modes, both attentions, two layers) gives the
  torch probabilities and attention weights on padded batches of mixed lengths;
- on a tiny trained topic model: labels equal to torch and probabilities within 1e-4 on
  every test sentence of the fixture corpus (and on a long text that spans windows);
- a missing or stale ``model.onnx`` is ModelError E319; the CLI exports and classifies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("sudachipy")

import torch  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pipeline.cli import app  # noqa: E402
from pipeline.errors import ConfigError, ModelError  # noqa: E402
from pipeline.inference.classifier import Classifier  # noqa: E402
from pipeline.inference.onnx_backend import ONNX_NAME, build_model_proto, export_onnx  # noqa: E402
from pipeline.models.classifier import AttentionClassifier  # noqa: E402
from pipeline.paths import classifier_dir  # noqa: E402
from tests.conftest import fast_overrides, run_stage, write_tiny_project  # noqa: E402

TOLERANCE = 1e-4
VARIANTS = [
    {},
    {"cell": "gru"},
    {"bidirectional_merge": "sum"},
    {"bidirectional_merge": "ave", "attention": "scaled_dot"},
    {"bidirectional_merge": "mul", "num_layers": 2},
]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny project with a trained topic classifier (max_tokens 8: long texts span windows)."""
    torch.set_num_threads(1)
    project = write_tiny_project(tmp_path_factory.mktemp("onnx") / "proj")
    run_stage(project, "train_topic", fast_overrides("topic", "max_tokens=8"))
    return project


@pytest.fixture()
def model_dir(project: Path, tmp_path: Path) -> Path:
    """A copy of the tiny topic model directory, without model.onnx."""
    target = tmp_path / "topic"
    shutil.copytree(project / classifier_dir("topic"), target)
    (target / ONNX_NAME).unlink(missing_ok=True)
    return target


def _session(model: AttentionClassifier, args: dict):
    import onnxruntime as ort

    state = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items()}
    proto = build_model_proto(state, args, labels=[f"c{i}" for i in range(args["num_classes"])], digest="x")
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={w}" for k, w in v.items()) or "default")
def test_graph_equals_torch_forward_on_padded_batches(variant: dict) -> None:
    torch.manual_seed(0)
    args = {"vocab_size": 50, "embedding_dim": 12, "num_classes": 3, "hidden_size": 10, "attention_size": 6, **variant}
    model = AttentionClassifier(**args).eval()
    session = _session(model, args)
    rng = np.random.default_rng(1)
    for size, width in ((1, 1), (3, 7), (9, 15)):
        lengths = rng.integers(1, width + 1, size=size).astype(np.int64)
        lengths[-1] = width
        ids = rng.integers(2, 50, size=(size, width)).astype(np.int64)
        ids[np.arange(width)[None, :] >= lengths[:, None]] = 0
        probabilities, weights = session.run(None, {"token_ids": ids, "lengths": lengths})
        with torch.inference_mode():
            logits, expected_weights = model(torch.from_numpy(ids), torch.from_numpy(lengths))
        np.testing.assert_allclose(probabilities, torch.softmax(logits, -1).numpy(), atol=TOLERANCE, rtol=0)
        np.testing.assert_allclose(weights, expected_weights.numpy(), atol=TOLERANCE, rtol=0)
        assert (weights[np.arange(width)[None, :] >= lengths[:, None]] == 0).all()  # padding gets no attention


def test_labels_and_probabilities_equal_torch_on_every_test_sentence(project: Path, model_dir: Path) -> None:
    result = export_onnx(model_dir)
    assert Path(result["path"]) == model_dir / ONNX_NAME and result["max_difference_to_torch"] <= TOLERANCE
    rows = [json.loads(line) for line in (project / "data" / "tokens" / "knbc.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [row["text"] for row in rows if row.get("split") == "test"]
    texts.append("京都のお寺でラーメンを食べた。" * 6)  # longer than max_tokens (8): several windows
    assert len(texts) > 10
    reference = Classifier.from_dir(model_dir, batch_size=4).predict(texts, attention=True)
    got = Classifier.from_dir(model_dir, batch_size=4, backend="onnx").predict(texts, attention=True)
    assert any(p.windows > 1 for p in got)
    for expected, actual in zip(reference, got, strict=True):
        assert actual.label == expected.label
        for label, p in expected.probabilities.items():
            assert abs(actual.probabilities[label] - p) <= TOLERANCE
        np.testing.assert_allclose(actual.weights, expected.weights, atol=TOLERANCE, rtol=0)


def test_sub_batches_of_sorted_rows_give_the_whole_batch_result(model_dir: Path) -> None:
    from pipeline.inference.onnx_backend import load_onnx_model

    export_onnx(model_dir)
    onnx = load_onnx_model(model_dir)
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 12, size=11).astype(np.int64)  # unsorted, mixed lengths
    ids = rng.integers(2, 20, size=(11, int(lengths.max()) + 2)).astype(np.int64)  # extra padding columns
    ids[np.arange(ids.shape[1])[None, :] >= lengths[:, None]] = 0
    onnx.sub_batch = 1000
    whole = onnx.run(ids, lengths)
    onnx.sub_batch = 3
    split = onnx.run(ids, lengths)
    assert whole[1].shape == split[1].shape == ids.shape
    for expected, actual in zip(whole, split, strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-6, rtol=0)
    assert (split[1][np.arange(ids.shape[1])[None, :] >= lengths[:, None]] == 0).all()


def test_missing_or_stale_export_is_a_coded_error(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError) as missing:
        Classifier.from_dir(model_dir, backend="onnx")
    assert missing.value.code == "E319" and "jpipe export onnx" in missing.value.hint
    # model.onnx of other weights: a retrained model must be exported again
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    model = AttentionClassifier.from_dir(other)
    with torch.no_grad():
        model.output.bias.add_(1.0)
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(other / "model.safetensors"))
    export_onnx(other, output=model_dir / ONNX_NAME)
    with pytest.raises(ModelError) as stale:
        Classifier.from_dir(model_dir, backend="onnx")
    assert stale.value.code == "E319" and "other weights" in stale.value.message


def test_backend_options_are_checked(model_dir: Path) -> None:
    with pytest.raises(ConfigError):
        Classifier.from_dir(model_dir, backend="tensorrt")
    with pytest.raises(ConfigError):
        Classifier.from_dir(model_dir, backend="onnx", int8=True)


def test_cli_export_then_classify_with_onnx_equals_torch(project: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    texts = tmp_path / "reviews.txt"
    texts.write_text("ラーメンが美味しい\n携帯の画面が最悪\n京都の紅葉は最高\n", encoding="utf-8")
    exported = runner.invoke(app, ["--dir", str(project), "export", "onnx", "--task", "topic", "--json"])
    assert exported.exit_code == 0, exported.output
    assert (project / classifier_dir("topic") / ONNX_NAME).is_file()
    outputs = {}
    for backend in ("torch", "onnx"):
        result = runner.invoke(
            app, ["--dir", str(project), "classify", str(texts), "--backend", backend, "--workers", "1", "--no-progress"]
        )
        assert result.exit_code == 0, result.output
        outputs[backend] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(outputs["onnx"]) == 3
    for expected, actual in zip(outputs["torch"], outputs["onnx"], strict=True):
        assert actual["topic"]["label"] == expected["topic"]["label"]
        for label, p in expected["topic"]["probabilities"].items():
            assert abs(actual["topic"]["probabilities"][label] - p) <= TOLERANCE


def test_bench_compares_both_backends_on_the_same_texts(project: Path) -> None:
    from pipeline.bench.classify_onnx import benchmark_onnx

    result = benchmark_onnx(project_dir=project, reviews=24, batch_size=8, rounds=1)
    assert result["tasks"] == ["topic"] and result["rounds"] == 1
    for backend in ("torch", "onnx"):
        assert set(result["reviews_per_second"][backend]) == {"model_only", "model_only_sorted", "end_to_end"}
        assert all(rate > 0 for rate in result["reviews_per_second"][backend].values())
    assert result["agreement"]["topic"]["labels_equal"] == 1.0
    assert result["agreement"]["topic"]["max_probability_difference"] <= TOLERANCE
    assert result["load_average_before"]


def test_onnx_backend_applies_the_temperature_outside_the_graph(model_dir: Path) -> None:
    """calibration.json's temperature scales the ONNX probabilities as it scales torch's (softmax(log p / T))."""
    export_onnx(model_dir)
    (model_dir / "calibration.json").write_text(json.dumps({"temperature": 2.5, "fitted_on": "dev"}), encoding="utf-8")
    texts = ["京都のお寺でラーメンを食べた。", "携帯の電池が切れた"]
    torch_backend = Classifier.from_dir(model_dir).predict(texts)
    onnx_backend = Classifier.from_dir(model_dir, backend="onnx").predict(texts)
    raw = Classifier.from_dir(model_dir, backend="onnx", calibrated=False).predict(texts)
    for expected, actual, uncalibrated in zip(torch_backend, onnx_backend, raw, strict=True):
        assert actual.label == expected.label == uncalibrated.label
        for label, p in expected.probabilities.items():
            assert abs(actual.probabilities[label] - p) <= TOLERANCE
        assert max(abs(actual.probabilities[k] - uncalibrated.probabilities[k]) for k in actual.probabilities) > 1e-3
