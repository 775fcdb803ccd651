"""jpipe: a staged Japanese NLP pipeline on the KNB blog corpus (KNBC).

corpus -> prepare -> tokenize -> vectors -> models -> report and queries.

The public Python API works on model directories, from any working directory,
without a project::

    from pipeline import Classifier, Generator, Vectors

    clf = Classifier.from_dir("models/classifier/topic")
    clf.predict(["この店のラーメンは最高"])            # labels + probabilities (attention=True adds weights)
    Vectors.load("models/vectors/word2vec").most_similar("京都", topn=5)
    Generator.from_dir("models/generator").generate("京都の", seed=7)
    Extractor.from_dir("models/extractor").extract(["店は狭いが美味しい。"], beam=5)   # 評判 records per text

The public names are imported on first use (module ``__getattr__``), so ``import pipeline``
and the CLI stay light: heavy libraries (torch, spaCy, gensim) load inside the functions
that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Classifier": "pipeline.inference.classifier",
    "Extractor": "pipeline.inference.extractor",
    "Generator": "pipeline.inference.generator",
    "Vectors": "pipeline.vectors",
}
__all__ = ["Classifier", "Extractor", "Generator", "Vectors", "__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from typing import Any

    from pipeline.inference.classifier import Classifier
    from pipeline.inference.extractor import Extractor
    from pipeline.inference.generator import Generator
    from pipeline.vectors import Vectors


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # cache: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
