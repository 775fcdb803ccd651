"""``Classifier``: one trained classifier loaded from its model directory, usable anywhere.

    >>> clf = Classifier.from_dir("models/classifier/topic")     # any path, any working directory
    >>> clf.predict(["この店のラーメンは最高"])[0].label
    'Gourmet'

Everything the model needs comes from its directory: weights, vocabulary, labels and
the tokenizer settings recorded in ``config.json`` (Sudachi split mode, token field);
a legacy directory without them is read with split mode C. No project directory is
involved, so a model directory copied to another machine works alone, on CPU or GPU.

A review (one text) is one *document*: it is tokenized whole and classified by the
BiLSTM + attention model. A model reads at most ``max_tokens`` tokens at once
(``train_<task>.max_tokens``, 200 by default). A longer review is, by default,
*aggregated*: cut into consecutive windows of ``max_tokens`` tokens, each window
classified, and the class probabilities averaged with weights proportional to the
window lengths (attention weights are scaled the same way, so they still sum to 1
over the whole review). ``long_policy="truncate"`` keeps only the first window.

Probabilities are **calibrated** by default: a model directory with a ``calibration.json``
(``train_<task>`` fits a temperature ``T`` on dev) gives ``softmax(logits / T)``; ``calibrated=False``
gives the raw softmax, and a directory without the file behaves as before (``T = 1``). A directory
with an ``ensemble.json`` (``[classifier] ensemble = true``) is a **seed ensemble**: every member
(``seeds/<seed>/``) is loaded, their calibrated probabilities are averaged, the ensemble's own
temperature is applied to the average, and the attention weights are the mean of the members'
(they still sum to 1). ``ensemble=False`` loads the directory's own (median-dev) model alone.
See ``pipeline.models.calibration``.

Importing this module is cheap: torch, numpy and the tokenizer load in ``from_dir``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

LONG_POLICIES = ("aggregate", "truncate")
BACKENDS = ("torch", "onnx")  # onnx: the model's model.onnx (``jpipe export onnx``) run by onnxruntime, CPU only
DEFAULT_BATCH_SIZE = 256
ARCHITECTURE = "AttentionClassifier"


@dataclass
class Prediction:
    """One text's result for one model.

    ``probabilities`` are full precision (not rounded). ``tokens`` (surface forms) and
    ``weights`` (attention, summing to 1 over the review) are set when attention was asked for.
    """

    label: str
    probabilities: dict[str, float]
    tokens: list[str] | None = None
    weights: list[float] | None = None
    windows: int = 1

    def top_tokens(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` most attended tokens; a repeated token counts once, with its highest weight."""
        best: dict[str, float] = {}
        for token, weight in zip(self.tokens or [], self.weights or [], strict=True):
            if weight > best.get(token, -1.0):
                best[token] = weight
        return sorted(best.items(), key=lambda kv: -kv[1])[:k]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.label, "probabilities": self.probabilities}
        if self.tokens is not None:
            data.update(tokens=self.tokens, weights=self.weights, windows=self.windows)
        return data


@dataclass
class Member:
    """One model of a seed ensemble: its weights, optional ONNX session and its own temperature."""

    loaded: Any  # pipeline.models.classifier.LoadedClassifier
    onnx: Any = None
    temperature: float = 1.0


@dataclass
class Classifier:
    """A trained classifier (one model, or a seed ensemble) plus its tokenizer. Build it with :meth:`from_dir`."""

    loaded: Any  # pipeline.models.classifier.LoadedClassifier
    tokenizer: Any  # pipeline.text.tokenize.Tokenizer
    split_mode: str
    token_field: str
    directory: Path
    long_policy: str = "aggregate"
    batch_size: int = DEFAULT_BATCH_SIZE
    int8: bool = False
    settings: dict[str, Any] = field(default_factory=dict)  # the "tokenizer" entry of config.json
    onnx: Any = None  # pipeline.inference.onnx_backend.OnnxModel with backend "onnx", else None
    temperature: float = 1.0  # applied to the probabilities (an ensemble: to the members' average); 1 = uncalibrated
    members: list[Member] = field(default_factory=list)  # a seed ensemble's models (``loaded`` is the first's); [] = one model

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @classmethod
    def from_dir(
        cls,
        directory: str | os.PathLike,
        *,
        device: str = "cpu",
        long_policy: str = "aggregate",
        batch_size: int = DEFAULT_BATCH_SIZE,
        int8: bool = False,
        backend: str = "torch",
        calibrated: bool = True,
        ensemble: bool = True,
        members: list[str | os.PathLike] | None = None,
        ensemble_temperature: float = 1.0,
    ) -> Classifier:
        """Load the model directory ``directory`` on ``device`` (``cpu``, ``cuda`` or ``auto``).

        ``int8`` quantizes the LSTM and linear layers (CPU only): about 1.6x faster, labels
        agree with fp32 on >99% of KNBC test sentences (``jpipe bench classify`` measures it).
        ``backend="onnx"`` runs the directory's ``model.onnx`` with onnxruntime on the CPU
        (``pipeline.inference.onnx_backend``), with as many threads as torch has; the
        temperature is applied to its probabilities outside the graph.
        ``calibrated``: apply the directory's dev-fitted temperature (``calibration.json``; none: 1).
        ``ensemble``: load every member of a seed ensemble (``ensemble.json``); False: the directory's own model.
        ``members`` (benchmarks): load these model directories as an ensemble instead, whose average gets
        ``ensemble_temperature`` when ``calibrated``.
        """
        from pipeline.models.calibration import read_ensemble
        from pipeline.models.model_dir import model_split_mode, read_model_dir
        from pipeline.text.tokenize import load_tokenizer

        _check_options(long_policy=long_policy, batch_size=batch_size)
        _check_backend(backend=backend, device=device, int8=int8)
        directory = Path(directory)
        settings = read_model_dir(directory, architecture=ARCHITECTURE)["tokenizer"]
        split_mode = model_split_mode(settings, directory=directory)
        load = dict(device=_torch_device(device=device, backend=backend, int8=int8), int8=int8, backend=backend, calibrated=calibrated)
        if members is not None:
            spec: dict[str, Any] | None = {"member_dirs": [Path(m) for m in members], "temperature": ensemble_temperature}
        else:
            spec = read_ensemble(directory) if ensemble else None
        models, temperature = load_models(directory, spec, settings=settings, **load)
        loaded, onnx = models[0].loaded, models[0].onnx
        return cls(
            temperature=temperature,
            members=models if spec is not None else [],
            loaded=loaded,
            # POS tags are not used by the models: without them the tokenizer never imports spaCy.
            tokenizer=load_tokenizer(split_mode, with_pos=False),
            split_mode=split_mode,
            token_field=settings.get("token_field") or loaded.token_field,
            directory=directory,
            long_policy=long_policy,
            batch_size=batch_size,
            int8=int8,
            settings=dict(settings),
            onnx=onnx,
        )

    # ------------------------------------------------------------ properties
    @property
    def labels(self) -> list[str]:
        return list(self.loaded.labels)

    @property
    def task(self) -> str:
        return self.loaded.task

    @property
    def max_tokens(self) -> int:
        return self.loaded.max_tokens

    @property
    def device(self) -> str:
        return self.loaded.device.type

    # ------------------------------------------------------------ prediction
    def tokenize(self, text: str) -> dict[str, list[str]]:
        """The model's tokenization of ``text`` (fields ``surface``, ``norm``, ``lemma``, ...)."""
        return self.tokenizer.tokenize(text)

    def predict(self, texts: list[str], *, attention: bool = False) -> list[Prediction]:
        """One ``Prediction`` per text: label and class probabilities (+ tokens and attention weights).

        A text without any token (empty, whitespace only) is an ``InputError``:
        ``pipeline.data.readers.check_text`` tells such texts apart beforehand.
        """
        if isinstance(texts, str):
            texts = [texts]
        tokenized = []
        for index, text in enumerate(texts):
            tokens = self.tokenize(text) if isinstance(text, str) else {"surface": []}
            if not tokens["surface"]:
                raise InputError("E236", f"Text {index} has no tokens: {text!r}.", hint="Give non-empty Japanese text.")
            tokenized.append(tokens)
        predictions = self.predict_tokens(tokenized)
        if not attention:
            for prediction in predictions:
                prediction.tokens = prediction.weights = None
        return predictions

    def predict_tokens(self, tokenized: list[dict[str, list[str]]]) -> list[Prediction]:
        """Predictions for already tokenized texts (``self.tokenize`` output), with attention."""
        import numpy as np

        # windows: (document index, start token, ids); a document yields >= 1 window
        windows: list[tuple[int, int, np.ndarray]] = []
        for doc, tokens in enumerate(tokenized):
            ids = np.asarray(self.loaded.encode(tokens[self.token_field]), dtype=np.int64)
            starts = [0] if self.long_policy == "truncate" else range(0, max(1, len(ids)), self.max_tokens)
            windows += [(doc, start, ids[start : start + self.max_tokens]) for start in starts]
        probabilities, attention = self._run_windows([w[2] for w in windows])
        predictions: list[Prediction] = []
        cursor = 0
        for doc, tokens in enumerate(tokenized):
            end = cursor
            while end < len(windows) and windows[end][0] == doc:
                end += 1
            predictions.append(self._aggregate(tokens["surface"], windows[cursor:end], probabilities[cursor:end], attention[cursor:end]))
            cursor = end
        return predictions

    def _run_windows(self, sequences: list) -> tuple[Any, list]:
        """Model outputs per window: probabilities (W, C) float32 and attention (L_w,) per window."""
        import numpy as np
        import torch

        from pipeline.models.batching import pad_batch
        from pipeline.models.calibration import apply_temperature

        loaded = self.loaded
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: little padding
        probabilities = np.zeros((len(sequences), len(loaded.labels)), dtype=np.float32)
        attention: list = [None] * len(sequences)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                indices = order[start : start + self.batch_size]
                ids, batch_lengths = pad_batch(sequences, indices, pad_index=loaded.vocab.pad_index)  # (B, T), (B,)
                batch_probabilities, weights = self._run_batch(ids, batch_lengths)
                probabilities[indices] = apply_temperature(batch_probabilities, self.temperature)
                for row, index in enumerate(indices):
                    attention[index] = weights[row, : batch_lengths[row]]
        return probabilities, attention

    def _run_batch(self, ids, lengths) -> tuple[Any, Any]:
        """Uncalibrated (B, C) probabilities and (B, T) attention of one padded batch: the one model's, or the mean
        of the ensemble members' (each member's probabilities calibrated by its own temperature first)."""
        import numpy as np

        from pipeline.models.calibration import apply_temperature

        if not self.members:
            return run_model(Member(loaded=self.loaded, onnx=self.onnx), ids, lengths)
        outputs = [run_model(member, ids, lengths) for member in self.members]
        probabilities = np.mean(
            [apply_temperature(p, member.temperature) for (p, _), member in zip(outputs, self.members, strict=True)], axis=0
        )
        return probabilities.astype(np.float32), np.mean([w for _, w in outputs], axis=0)

    def _aggregate(self, surfaces: list[str], windows: list, probabilities, attention: list) -> Prediction:
        """One document's windows -> one prediction, each window weighted by its token count."""
        import numpy as np

        doc_probs = np.zeros(len(self.loaded.labels), dtype=np.float64)
        doc_weights = np.zeros(max(1, len(surfaces)), dtype=np.float64)
        total = 0
        for (_, begin, ids), probs, weights in zip(windows, probabilities, attention, strict=True):
            size = len(ids)
            doc_probs += probs * size
            doc_weights[begin : begin + size] = weights[: len(doc_weights) - begin] * size
            total += size
        doc_probs /= max(total, 1)
        doc_weights /= max(total, 1)
        kept = len(surfaces) if self.long_policy == "aggregate" else min(len(surfaces), self.max_tokens)
        return Prediction(
            label=self.loaded.labels[int(doc_probs.argmax())],
            probabilities={label: float(p) for label, p in zip(self.loaded.labels, doc_probs, strict=True)},
            tokens=list(surfaces[:kept]),
            weights=[float(w) for w in doc_weights[:kept]],
            windows=len(windows),
        )


def run_model(member: Member, ids, lengths) -> tuple[Any, Any]:
    """One model's raw softmax probabilities (B, C) and attention (B, T), float32 numpy, of a padded batch."""
    import torch

    if member.onnx is not None:
        return member.onnx.run(ids, lengths)
    loaded = member.loaded
    logits, weights = loaded.model(torch.from_numpy(ids).to(loaded.device), torch.from_numpy(lengths))  # (B, C), (B, T)
    return torch.softmax(logits.float(), dim=-1).cpu().numpy(), weights.float().cpu().numpy()


def load_models(
    directory: Path, spec: dict[str, Any] | None, *, settings: dict[str, Any], calibrated: bool, **load
) -> tuple[list[Member], float]:
    """The models of ``directory`` (the ensemble ``spec``'s members, checked, or the directory's own model) and the
    temperature applied to their (averaged) probabilities: the ensemble's, or the one model's; 1 when not ``calibrated``."""
    if spec is None:
        member = load_member(directory, calibrated=calibrated, **load)
        temperature, member.temperature = member.temperature, 1.0  # one model: its temperature is the classifier's
        return [member], temperature
    members = [load_member(member_dir, calibrated=calibrated, **load) for member_dir in spec["member_dirs"]]
    check_members(members, spec["member_dirs"], settings=settings)
    return members, spec["temperature"] if calibrated else 1.0


def load_member(directory: Path, *, device, int8: bool, backend: str, calibrated: bool) -> Member:
    """One model directory's weights (quantized with ``int8``), ONNX session (backend onnx) and temperature."""
    from pipeline.models.calibration import model_temperature
    from pipeline.models.classifier import load_classifier

    loaded = load_classifier(directory, device=device)
    if int8:
        loaded.model = quantize_int8(loaded.model)
    onnx = None
    if backend == "onnx":
        import torch

        from pipeline.inference.onnx_backend import load_onnx_model

        onnx = load_onnx_model(directory, threads=torch.get_num_threads())
    return Member(loaded=loaded, onnx=onnx, temperature=model_temperature(directory) if calibrated else 1.0)


def check_members(members: list[Member], directories: list[Path], *, settings: dict[str, Any]) -> None:
    """The members of an ensemble read the same tokens the same way and predict the same labels, else E321."""
    from pipeline.errors import ModelError
    from pipeline.models.model_dir import read_model_config

    first = members[0].loaded
    for member, directory in zip(members, directories, strict=True):
        loaded = member.loaded
        tokenizer = read_model_config(directory).get("tokenizer") or {}
        differs = [
            name
            for name, same in (
                ("labels", loaded.labels == first.labels),
                ("vocabulary", loaded.vocab.itos == first.vocab.itos),
                ("token field", loaded.token_field == first.token_field),
                ("max_tokens", loaded.max_tokens == first.max_tokens),
                ("tokenizer settings", tokenizer == settings),
            )
            if not same
        ]
        if differs:
            raise ModelError(
                "E321",
                f"Ensemble member {directory} differs from the ensemble's model directory in its {', '.join(differs)}.",
                hint="Retrain the task (`jpipe run train_<task>`) so that every seed shares its data, or set ensemble = false.",
            )


def _torch_device(*, device: str, backend: str, int8: bool):
    """The torch device models load on (the CPU for the onnx backend); int8 elsewhere than the CPU is E109."""
    from pipeline.models.runtime import pick_device

    torch_device = pick_device("cpu" if backend == "onnx" else device)
    if int8 and torch_device.type != "cpu":
        raise ConfigError(
            "E109", f"int8 quantization runs on the CPU only, not on {torch_device.type}.", hint="Load the model with device cpu for int8."
        )
    return torch_device


def _check_options(*, long_policy: str, batch_size: int) -> None:
    if long_policy not in LONG_POLICIES:
        raise ConfigError("E109", f"Unknown long-review policy '{long_policy}'.", hint=f"Valid policies: {', '.join(LONG_POLICIES)}.")
    if batch_size < 1:
        raise ConfigError("E109", f"batch_size must be at least 1, got {batch_size}.", hint="For example 256.")


def _check_backend(*, backend: str, device: str, int8: bool) -> None:
    if backend not in BACKENDS:
        raise ConfigError("E109", f"Unknown backend '{backend}'.", hint=f"Valid backends: {', '.join(BACKENDS)}.")
    if backend == "onnx" and (device not in ("cpu", "auto") or int8):
        raise ConfigError(
            "E109",
            f"The onnx backend runs fp32 models on the CPU only (asked: device {device}, int8 {int8}).",
            hint="Use device cpu without int8 for the onnx backend, or the torch backend.",
        )


def quantize_int8(model):
    """Dynamic int8 quantization of ``nn.LSTM`` / ``nn.GRU`` / ``nn.Linear`` (weights int8, activations fp32)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torch >= 2.10 points to torchao for new code; the eager API is still the one that covers nn.LSTM.
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8)
