"""What the server loads from a project: the classifiers, the generator and the vector sources that exist.

Only the model directories present are loaded (a project without a generator still
serves classify and similar); a project with none of them is an error (E301) before
the server starts. ``GET /v1/models`` describes what was loaded, with the test
metrics of ``models/report/metrics.json`` when the report stage ran.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ModelError

logger = logging.getLogger(__name__)

WARM_UP_TEXT = "京都のお寺でラーメンを食べた。"
# The report's spread over seeds (``<key>_mean``, ``<key>_std``, ``seeds``): the figures the demo page shows.
# The bare ``macro_f1`` / ``perplexity`` are the saved seed's.
CLASSIFIER_SPREAD = ("seeds", "macro_f1_mean", "macro_f1_std", "accuracy_mean", "accuracy_std")
GENERATOR_SPREAD = ("seeds", "saved_seed", "perplexity_mean", "perplexity_std")


@dataclass
class Found:
    """Model directories present in a project (nothing loaded yet)."""

    classifiers: dict[str, Path]
    generator: Path | None
    vectors: dict[str, Path]
    extractor: Path | None = None

    @property
    def empty(self) -> bool:
        return not (self.classifiers or self.generator or self.vectors or self.extractor)

    def names(self) -> list[str]:
        return [*self.classifiers, *(["generator"] if self.generator else []), *self.vectors, *(["extractor"] if self.extractor else [])]


def discover(project_dir: str | os.PathLike) -> Found:
    """The model directories of ``project_dir`` that hold a model (cheap: file checks only)."""
    from pipeline.models.model_dir import CONFIG_NAME, LEGACY_ARGS_NAME
    from pipeline.paths import CLASSIFIERS_DIR, EXTRACTOR_DIR, GENERATOR_DIR, VECTOR_SOURCES

    project = Path(project_dir)

    def has_model(directory: Path) -> bool:
        return (directory / CONFIG_NAME).is_file() or (directory / LEGACY_ARGS_NAME).is_file()

    # Every task's model directory (KNBC's topic and sentiment, and users' own tasks), in name order.
    task_dirs = sorted(p for p in (project / CLASSIFIERS_DIR).glob("*") if p.is_dir()) if (project / CLASSIFIERS_DIR).is_dir() else []
    classifiers = {d.name: d for d in task_dirs if has_model(d)}
    generator = project / GENERATOR_DIR if has_model(project / GENERATOR_DIR) else None
    vectors = {name: project / d for name, d in VECTOR_SOURCES.items() if (project / d / "meta.json").is_file()}
    extractor = project / EXTRACTOR_DIR if has_model(project / EXTRACTOR_DIR) else None
    return Found(classifiers=classifiers, generator=generator, vectors=vectors, extractor=extractor)


def require_models(project_dir: str | os.PathLike) -> Found:
    """``discover``, or ModelError E301 when the project has no model at all."""
    found = discover(project_dir)
    if found.empty:
        raise ModelError(
            "E301",
            f"No trained model in {project_dir} (no classifier, generator or word vectors under models/).",
            hint="Train the models with `jpipe run`, or serve another project directory.",
        )
    return found


@dataclass
class ServedModels:
    """The loaded models and their descriptions."""

    project_dir: Path
    classifiers: Any = None  # pipeline.inference.batch.TaskClassifiers, or None
    generator: Any = None  # pipeline.inference.generator.Generator, or None
    vectors: dict[str, Any] = field(default_factory=dict)  # source -> pipeline.vectors.Vectors
    extractor: Any = None  # pipeline.inference.extractor.Extractor, or None
    entries: list[dict[str, Any]] = field(default_factory=list)
    load_seconds: float = 0.0

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.classifiers.classifiers) if self.classifiers is not None else ()


def set_torch_threads(threads: int) -> int:
    """Torch intra-op threads: ``threads``, or all cores but one for 0 (the other parses requests and tokenizes)."""
    import torch

    chosen = threads if threads > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(chosen)
    return chosen


def load_models(project_dir: str | os.PathLike, *, device: str = "cpu", backend: str = "torch") -> ServedModels:
    """Load every model present in ``project_dir`` and warm it up (tokenizer dictionary, first forward pass).

    ``backend`` is the classifiers' (``torch`` or ``onnx``: their ``model.onnx`` run by ONNX Runtime)."""
    from pipeline.inference.batch import TaskClassifiers
    from pipeline.inference.classifier import Classifier
    from pipeline.inference.generator import Generator
    from pipeline.vectors import Vectors

    started = time.perf_counter()
    found = require_models(project_dir)
    served = ServedModels(project_dir=Path(project_dir))
    if found.classifiers:
        classifiers = {task: Classifier.from_dir(path, device=device, backend=backend) for task, path in found.classifiers.items()}
        served.classifiers = TaskClassifiers(classifiers=classifiers)
    if found.generator is not None:
        served.generator = Generator.from_dir(found.generator, device=device)
    served.vectors = {source: Vectors.from_project(project_dir=project_dir, source=source) for source in found.vectors}
    if found.extractor is not None:
        from pipeline.inference.extractor import Extractor

        served.extractor = Extractor.from_dir(found.extractor, device=device)
    _warm_up(served)
    served.entries = describe(served, found)
    served.load_seconds = time.perf_counter() - started
    logger.info("Loaded %s in %.1f s.", ", ".join(found.names()), served.load_seconds)
    return served


def _warm_up(served: ServedModels) -> None:
    """One call per model, so the first request does not pay for dictionary loading and lazy initialisation."""
    if served.classifiers is not None:
        served.classifiers.classify([WARM_UP_TEXT])
    for vectors in served.vectors.values():
        vectors.index.norms  # noqa: B018 - computes and caches the row norms
        if len(vectors):
            vectors.most_similar(vectors.index.words[0], topn=1)
    if served.generator is not None:
        served.generator.generate("京都", max_tokens=2, seed=0)
    if served.extractor is not None:
        served.extractor.extract([WARM_UP_TEXT])


def _report_metrics(project_dir: Path) -> dict[str, Any]:
    from pipeline.io import read_json
    from pipeline.paths import METRICS

    path = project_dir / METRICS
    try:
        return read_json(path) if path.is_file() else {}
    except (OSError, ValueError):
        logger.warning("Cannot read %s: /v1/models shows no test metrics.", path)
        return {}


def _pick(data: Any, *keys: str) -> dict[str, Any]:
    return {key: data[key] for key in keys if isinstance(data, dict) and key in data}


def describe(served: ServedModels, found: Found) -> list[dict[str, Any]]:
    """One entry per loaded model: name, kind, labels or themes, format version, test metrics."""
    from pipeline.models.model_dir import read_model_config

    report = _report_metrics(served.project_dir)
    entries = []
    for task, classifier in served.classifiers.classifiers.items() if served.classifiers is not None else []:
        version = read_model_config(found.classifiers[task]).get("format_version")
        metrics = _pick((report.get(task) or {}).get("bilstm_attention"), "accuracy", "macro_f1", "test_sentences", *CLASSIFIER_SPREAD)
        entries.append(
            {"name": task, "kind": "classifier", "task": task, "labels": classifier.labels, "format_version": version}
            | {"max_tokens": classifier.max_tokens, "split_mode": classifier.split_mode, "test_metrics": metrics}
            # calibrated probabilities (1.0: none, or an old model directory); a seed ensemble's member count (1: one model)
            | {"temperature": classifier.temperature, "ensemble_members": max(1, len(classifier.members))}
        )
    if served.generator is not None:
        generator = served.generator
        version = read_model_config(found.generator).get("format_version")
        lstm = (report.get("generator") or {}).get("lstm")
        ngram = (report.get("generator") or {}).get("ngram")
        metrics = _pick(lstm, "perplexity", *GENERATOR_SPREAD) | {f"ngram_{k}": v for k, v in _pick(ngram, "perplexity").items()}
        entries.append(
            {"name": "generator", "kind": "generator", "themes": generator.themes, "format_version": version}
            | {"level": generator.loaded.level, "unit": generator.loaded.unit, "test_metrics": metrics}
        )
    if served.extractor is not None:
        version = read_model_config(found.extractor).get("format_version")
        entries.append({"name": "extractor", "kind": "extractor", "format_version": version, "test_metrics": report.get("extractor") or {}})
    sources = ((report.get("vectors") or {}).get("sources")) or {}
    halves = (((report.get("vectors") or {}).get("synonym_splits") or {}).get("sources")) or {}
    for source, vectors in served.vectors.items():
        # The legacy pair ROC-AUC where there is one; the test half's coverage and ROC-AUC for every source.
        synonyms = _pick((sources.get(source) or {}).get("synonyms"), "roc_auc")
        test_half = _pick((halves.get(source) or {}).get("test"), "coverage", "roc_auc")
        if test_half:
            synonyms["synonym_test_half"] = test_half
        entries.append(
            {"name": source, "kind": "vectors", "source": source, "vocab_size": len(vectors), "dim": vectors.dim}
            | {"token_field": vectors.token_field, "format_version": vectors.index.meta.get("format_version"), "test_metrics": synonyms}
        )
    return entries
