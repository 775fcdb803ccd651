"""Word vectors: the ``word2vec`` and ``spacy_vectors`` stages, imported vectors, queries, evaluation.

Every vector source is a directory ``models/vectors/<name>/`` (``name`` in
``word2vec | spacy | imported``) with the same layout, written by
:func:`pipeline.vectors.store.write_vector_dir`:

    vectors.kv              gensim KeyedVectors, native format (``KeyedVectors.load(path, mmap="r")``)
    vectors.kv.vectors.npy  its vector array, stored apart so that it can be memory-mapped
    vectors.txt             word2vec text format (``N DIM`` header), keys = the token field
    words.txt               the keys in row order (lets queries load with numpy only, no gensim)
    meta.json               source, token field, vocabulary size, dim, coverage, timings, versions

Queries (:mod:`pipeline.vectors.query`) never import torch, spaCy or gensim.
"""
