"""Word vectors: the ``word2vec`` and ``spacy_vectors`` stages, imported vectors, queries.

Every vector source is a directory ``models/vectors/<name>/`` (``name`` in
``word2vec | spacy | imported | ginza | combined``). ``ginza`` (ja_ginza's whole table, 480k keys
on 20k rows), ``combined`` and large imports use the compact store of
:func:`pipeline.vectors.store.write_compact_dir` (``rows.npy`` unit rows, memory-mapped, plus a
sorted key index, many keys per row). The others have this layout, written by
:func:`pipeline.vectors.store.write_vector_dir`:

    vectors.kv              gensim KeyedVectors, native format (``KeyedVectors.load(path, mmap="r")``)
    vectors.kv.vectors.npy  its vector array, stored apart so that it can be memory-mapped
    vectors.txt             word2vec text format (``N DIM`` header), keys = the token field
    words.txt               the keys in row order (lets queries load with numpy only, no gensim)
    meta.json               source, token field, split mode, vocabulary size, dim, coverage, timings, versions

Queries (:class:`Vectors`, :mod:`pipeline.vectors.query`) never import torch, spaCy or gensim:
``Vectors.load("models/vectors/word2vec").most_similar("京都", topn=5)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.vectors.query import OutOfVocabulary, Vectors

__all__ = ["OutOfVocabulary", "Vectors"]


def __getattr__(name: str) -> Any:
    # Lazy: importing the package (as every vector stage does) does not load numpy or the query code.
    if name in __all__:
        from pipeline.vectors import query

        return getattr(query, name)
    raise AttributeError(f"module 'pipeline.vectors' has no attribute {name!r}")
