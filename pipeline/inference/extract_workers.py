"""``jpipe extract FILE --workers N``: opinion extraction in worker processes.

The same pool as ``jpipe classify --workers`` (:class:`pipeline.inference.workers.WorkerPool`): each
worker loads the extractor once and turns chunks of ``CHUNK_ROWS`` rows into their JSONL lines
(``extract_records``, the in-process code); the parent writes the chunks in input order. The decoder
reads one text at a time, so the chunks are small: the workers stay busy to the end of the input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from pipeline.data.readers import InputRecord
from pipeline.inference.batch import chunked
from pipeline.inference.workers import WorkerPool, prepend

CHUNK_ROWS = 32
_WORKER: dict[str, Any] = {}


@dataclass(frozen=True)
class ExtractorSpec:
    """What a worker loads and how it decodes (picklable)."""

    model_dir: str
    device: str = "cpu"
    beam: int = 1
    threads: int = 1  # torch threads per worker


def _extractor(spec: ExtractorSpec):
    if "extractor" not in _WORKER:
        import torch

        from pipeline.inference.extractor import Extractor

        torch.set_num_threads(max(1, spec.threads))
        _WORKER["extractor"] = Extractor.from_dir(spec.model_dir, device=spec.device)
    return _WORKER["extractor"]


def _lines(records: Iterable[InputRecord], *, extractor, beam: int) -> tuple[str, list[bool]]:
    """The JSONL lines ``{id, text, records, error}`` of some rows, and whether each has an error."""
    from pipeline.inference.extractor import extract_records

    rows = list(extract_records(records, extractor=extractor, beam=beam))
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), [row["error"] is not None for row in rows]


def extract_chunk(records: list[InputRecord], spec: ExtractorSpec) -> tuple[tuple[str, list[bool]], int]:
    """One chunk -> (its JSONL lines, error flags), this pid."""
    return _lines(records, extractor=_extractor(spec), beam=spec.beam), os.getpid()


def run_parallel_extraction(
    *, records: Iterable[InputRecord], spec: ExtractorSpec, handle: IO[str], workers: int, load_local: Callable[[], Any] | None = None
) -> tuple[int, int]:
    """Write the rows of ``records`` to ``handle`` in input order; returns (rows, rows with errors).

    An input of one chunk runs in this process when ``load_local`` (returns an ``Extractor``) is given."""
    chunks = chunked(records, CHUNK_ROWS)
    first, second = next(chunks, []), next(chunks, None)
    if second is None and load_local is not None:
        text, errors = _lines(first, extractor=load_local(), beam=spec.beam)
        handle.write(text)
        return len(errors), sum(errors)
    rows = bad = 0
    with WorkerPool(workers) as pool:
        for text, errors in pool.ordered(extract_chunk, prepend([first] + ([second] if second else []), chunks), spec):
            handle.write(text)
            rows, bad = rows + len(errors), bad + sum(errors)
    return rows, bad
