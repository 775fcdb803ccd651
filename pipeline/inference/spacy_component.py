"""The classifier as a spaCy component: ``nlp.add_pipe("jpipe_classifier", config={"model": PATH})``.

Registered through the ``spacy_factories`` entry point (pyproject), so ``spacy.load`` finds it
without importing this module first. ``PATH`` is one model directory
(``models/classifier/<task>``) or a directory of them (``models/classifier``). For every Doc
the component sets ``doc.cats["<task>/<label>"]`` to the probability of each label of each task,
e.g. ``doc.cats["sentiment/positive"]``.

No second tokenization: the model's token field is read off the Doc's GiNZA tokens
(``norm`` -> ``token.norm_`` (Sudachi's normalized form), ``lemma`` -> ``token.lemma_``,
``surface`` -> ``token.text``), leaving out whitespace tokens as the pipeline's tokenizer
does. With ja_ginza's tokenizer in the model's split mode these are the tokens ``jpipe classify``
sees, so ``doc.cats`` equals its probabilities.

Serialization: ``nlp.to_disk`` copies every model directory into the pipeline directory
(``<pipeline>/jpipe_classifier/<task>/``), and ``from_disk`` loads them from there, so a saved
pipeline never points back into the project (``jpipe export spacy``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

logger = logging.getLogger(__name__)

FACTORY = "jpipe_classifier"
# The Doc token attribute that holds each model token field.
TOKEN_ATTRIBUTES = {"norm": "norm_", "lemma": "lemma_", "surface": "text"}


def model_dirs(path: str | Path) -> dict[str, Path]:
    """task -> model directory: ``path`` itself when it holds a model, else its sub-directories that do."""
    from pipeline.errors import ModelError

    path = Path(path)
    if (path / "config.json").exists():
        return {path.name: path}
    found = {child.name: child for child in sorted(path.iterdir()) if (child / "config.json").exists()} if path.is_dir() else {}
    if not found:
        raise ModelError(
            "E301",
            f"{path} holds no classifier model directory.",
            hint="Give models/classifier/<task> or models/classifier of a trained project (`jpipe run` trains them).",
        )
    return found


class JpipeClassifier:
    """Sets ``doc.cats`` from the jpipe classifiers of every task it holds."""

    def __init__(self, nlp: Language, name: str, *, model: str = "", batch_size: int = 256, device: str = "cpu") -> None:
        self.name = name
        self.batch_size = batch_size
        self.device = device
        self.split_mode = getattr(nlp.tokenizer, "split_mode", None)
        self.classifiers: dict[str, Any] = {}
        if model:
            self.load(model)

    def load(self, path: str | Path) -> None:
        """Load every model directory under ``path`` (see :func:`model_dirs`)."""
        self.load_dirs(model_dirs(path))

    def load_dirs(self, directories: dict[str, Path]) -> None:
        """Load task -> model directory; these become the component's tasks."""
        from pipeline.inference.classifier import Classifier

        self.classifiers = {}
        for task, directory in directories.items():
            classifier = Classifier.from_dir(directory, device=self.device, batch_size=self.batch_size)
            if self.split_mode and str(self.split_mode) != classifier.split_mode:
                logger.warning(
                    "%s: the model was trained on split mode %s tokens, the spaCy tokenizer uses %s",
                    task,
                    classifier.split_mode,
                    self.split_mode,
                )
            if classifier.token_field not in TOKEN_ATTRIBUTES:
                raise ValueError(f"{directory}: token field {classifier.token_field!r} has no Doc attribute")
            self.classifiers[task] = classifier

    @property
    def labels(self) -> list[str]:
        """Every ``doc.cats`` key, ``<task>/<label>``."""
        return [f"{task}/{label}" for task, c in self.classifiers.items() for label in c.labels]

    def _tokens(self, doc: Doc) -> dict[str, list[str]]:
        """The token fields the models read (and ``surface``), whitespace tokens left out."""
        words = [token for token in doc if not token.is_space and not token.text.isspace()]
        fields = {"surface", *(c.token_field for c in self.classifiers.values())}
        return {field: [getattr(token, TOKEN_ATTRIBUTES[field]) for token in words] for field in fields}

    def _set_cats(self, docs: list[Doc]) -> None:
        tokenized = [self._tokens(doc) for doc in docs]
        present = [i for i, tokens in enumerate(tokenized) if tokens["surface"]]  # a Doc without words gets no cats
        for task, classifier in self.classifiers.items():
            predictions = classifier.predict_tokens([tokenized[i] for i in present]) if present else []
            for index, prediction in zip(present, predictions, strict=True):
                for label, probability in prediction.probabilities.items():
                    docs[index].cats[f"{task}/{label}"] = probability

    def __call__(self, doc: Doc) -> Doc:
        self._set_cats([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int | None = None) -> Iterator[Doc]:
        """Batches of ``batch_size`` Docs through each model at once (padding by length, as ``jpipe classify``).

        As in ``jpipe classify``, a worker thread pulls the next batch from ``stream`` (which runs
        the tokenizer and any earlier component) while this thread runs the models on the current
        one (torch releases the GIL in its kernels). At most two batches are in memory.
        """
        from concurrent.futures import ThreadPoolExecutor
        from itertools import islice

        size = batch_size or self.batch_size
        docs = iter(stream)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="jpipe-spacy") as pool:
            pending = pool.submit(lambda: list(islice(docs, size)))
            while batch := pending.result():
                pending = pool.submit(lambda: list(islice(docs, size)))  # only the worker touches ``docs``
                self._set_cats(batch)
                yield from batch

    # ------------------------------------------------------------------ serialization
    def to_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> None:
        """A copy of every model directory, ``<path>/<task>/``: the saved pipeline is self-contained."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for task, classifier in self.classifiers.items():
            target = path / task
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(classifier.directory, target)

    def from_disk(self, path: str | Path, *, exclude: Iterable[str] = ()) -> JpipeClassifier:
        self.load(path)
        return self


@Language.factory(FACTORY, default_config={"model": "", "batch_size": 256, "device": "cpu"})
def make_jpipe_classifier(nlp: Language, name: str, model: str, batch_size: int, device: str) -> JpipeClassifier:
    """The ``jpipe_classifier`` factory (``model``: a model directory or a directory of them)."""
    return JpipeClassifier(nlp, name, model=model, batch_size=batch_size, device=device)


def export_pipeline(*, model_path: str | Path, out_dir: str | Path, base: str = "ja_ginza", tasks: Iterable[str] | None = None) -> dict:
    """Write ``base`` + the ``jpipe_classifier`` component (its models copied inside) to ``out_dir``.

    ``spacy.load(out_dir)`` opens it anywhere jpipe is installed. The component's ``model``
    setting stays empty in ``config.cfg``: the models load from ``out_dir/jpipe_classifier/``.
    The directory is written next to ``out_dir`` and renamed into place (never half-written).
    """
    import spacy

    from pipeline.errors import ModelError
    from pipeline.io import replace_dir

    out_dir = Path(out_dir)
    found = model_dirs(model_path)
    wanted = list(tasks) if tasks else list(found)
    missing = [task for task in wanted if task not in found]
    if missing:
        raise ModelError(
            "E301", f"No trained model for task(s) {', '.join(missing)} under {model_path}.", hint="Train them with `jpipe run`."
        )
    nlp = spacy.load(base)
    component = nlp.add_pipe(FACTORY, config={"model": ""})
    component.load_dirs({task: found[task] for task in wanted})
    staging = out_dir.with_name(f".{out_dir.name}.tmp")
    if staging.exists():
        shutil.rmtree(staging)
    nlp.to_disk(staging)
    replace_dir(staging, out_dir)
    return {"path": str(out_dir), "base": base, "pipe_names": nlp.pipe_names, "tasks": wanted, "labels": component.labels}
