"""Stage ``combined_vectors``: several vector sources concatenated over the union of their keys.

Each key gets, per source, that source's unit vector (zeros when the source lacks the key);
the parts are concatenated and the result scaled to unit length. For two keys that every source
has, the cosine is then the mean of the sources' cosines; a key that only one source has is
compared on that source's part alone. Keys with the same row in every source share a row here
too, so ja_ginza's 480k keys stay on few rows and the store stays compact.

Whether the combination is worth querying is decided by ``evaluate_vectors`` on the dev half
of the synonym groups (``synonym_splits.choice``), never on test.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def key_rows_of(index) -> tuple[list[str], np.ndarray]:
    """Every key of a source and its row, the row's own words first (so they stay the shown word of a combined row)."""
    if index.keys is None:
        return list(index.words), np.arange(len(index.words), dtype=np.int64)
    keys = index.keys
    ordered = keys.row_keys  # sorted key ids grouped by row, each row's own word first
    rows = np.repeat(np.arange(len(keys.row_offsets) - 1, dtype=np.int64), np.diff(keys.row_offsets))
    return [keys.key(int(i)) for i in ordered], rows


def _lookup(index) -> dict[str, int]:
    """key -> row as a dict (one pass: a binary search per key would cost seconds over 480k keys)."""
    if index.keys is None:
        return index.key_to_index
    return dict(zip(index.keys, index.keys.key_rows.tolist(), strict=True))


def combine_indexes(indexes: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(keys, key_rows, rows)`` of the combination: ``rows`` is ``(n_rows, sum of dims)`` float32, unit length."""
    lookups = [_lookup(index) for index in indexes]
    keys: list[str] = []
    combos: dict[tuple[int, ...], int] = {}
    key_rows: list[int] = []
    seen: set[str] = set()
    for index in indexes:
        for key, _ in zip(*key_rows_of(index), strict=True):
            if key in seen:
                continue
            seen.add(key)
            combo = tuple(lookup.get(key, -1) for lookup in lookups)
            key_rows.append(combos.setdefault(combo, len(combos)))
            keys.append(key)
    dims = [index.dim for index in indexes]
    rows = np.zeros((len(combos), sum(dims)), dtype=np.float32)
    starts = np.concatenate([[0], np.cumsum(dims)])
    parts = np.asarray(list(combos), dtype=np.int64)  # (n_rows, n_sources) source row or -1
    for number, index in enumerate(indexes):
        have = parts[:, number] >= 0
        source_rows = parts[have, number]
        block = np.asarray(index.vectors[source_rows], dtype=np.float32) / index.norms[source_rows][:, None]
        rows[have, starts[number] : starts[number + 1]] = block
    return keys, np.asarray(key_rows, dtype=np.int64), rows


def combined_vectors_stage(ctx) -> dict[str, Any]:
    """Concatenate ``combined_vectors.sources`` over the union of their keys into the compact store."""
    from pipeline.paths import COMBINED_VECTORS_DIR, VECTOR_SOURCES
    from pipeline.vectors.query import VectorIndex
    from pipeline.vectors.store import write_compact_dir

    section = ctx.section
    started = time.perf_counter()
    names = list(dict.fromkeys(section["sources"]))
    indexes = [VectorIndex.load_dir(ctx.input(VECTOR_SOURCES[name]), source=name) for name in names]
    keys, key_rows, rows = combine_indexes(indexes)
    meta = {
        "source": "combined",
        "parts": [{"source": name, "keys": index.key_count, "dim": index.dim} for name, index in zip(names, indexes, strict=True)],
        # Keys of every kind (ginza: surface and normalized forms): looked up as typed, then normalized form, then lemma.
        "token_field": "surface",
        "split_mode": indexes[0].meta.get("split_mode") or "C",
    }
    meta = write_compact_dir(ctx.output(COMBINED_VECTORS_DIR), keys=keys, key_rows=key_rows, rows=rows, meta=meta, dtype=section["dtype"])
    logger.info("combined_vectors: %s -> %d keys on %d rows of %d dims", "+".join(names), meta["keys"], meta["rows"], meta["dim"])
    return {"keys": meta["keys"], "rows": meta["rows"], "dim": meta["dim"], "seconds": round(time.perf_counter() - started, 2)}
