"""Tokenize big corpora into a token store: streamed, in parallel, resumable.

How a run goes:

1. Each corpus is read line by line (:mod:`pipeline.text.corpus`) and cut into *chunks* of
   ``shard_lines`` physical lines. Chunk boundaries depend only on the input, never on the
   number of workers, so the output is the same for 1 or N workers.
2. Workers (processes, or Ray tasks with ``engine="ray"``) tokenize a chunk and write it as one
   ``.npz`` shard (local vocabulary + ids) into a *work directory* keyed by the corpus's identity
   (path, size, mtime) and the tokenizer settings. A shard is written to a temporary name and
   renamed: it is there whole, or not at all.
3. A rerun after a crash or a kill skips the chunks whose shard is already there.
4. When every chunk is done, the shards are merged into the store (:mod:`pipeline.text.token_store`):
   one vocabulary per field, most frequent first, and the ids remapped to it.

Memory stays flat: at most two chunks per worker are in flight, and the merge holds one shard
and the vocabulary counts at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.io import write_json
from pipeline.text.corpus import check_corpus, corpus_format, iter_records
from pipeline.text.token_store import (
    ID_DTYPE,
    META_NAME,
    SHARDS_DIRNAME,
    STORE_FORMAT,
    STORE_KIND,
    VOCAB_NAME,
    decode_strings,
    encode_strings,
    load_npz,
    save_npz,
)

logger = logging.getLogger(__name__)

# Chunk statistics, in the order of the "stats" array of a work shard.
STAT_NAMES = ("lines", "text_bytes", "skipped_bad_utf8_lines", "skipped_bad_rows", "split_long_lines")
_PARENT_PID: int | None = None


@dataclass(frozen=True)
class ShardSettings:
    """What decides the tokens of a chunk (part of the work directory's key)."""

    split_mode: str = "C"
    fields: tuple[str, ...] = ("surface", "norm")
    shard_lines: int = 20000
    text_field: str = "text"


def source_key(path: Path, settings: ShardSettings) -> str:
    """The work directory name of one corpus: its identity (path, size, mtime) and the settings."""
    from pipeline.text.tokenize import _versions

    info = path.stat()
    identity = {
        "path": str(path.resolve()),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "settings": asdict(settings),
        "format": STORE_FORMAT,
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


# ------------------------------------------------------------------ chunks
def iter_jobs(path: Path, *, source: int, work: Path, settings: ShardSettings) -> Iterator[dict[str, Any]]:
    """One job per chunk of ``settings.shard_lines`` lines: its sentences, document starts and statistics."""
    job = _new_job(source, 0, 1, work, settings)
    for record in iter_records(path, text_field=settings.text_field):
        stats = job["stats"]
        stats["lines"] += 1
        stats["skipped_bad_utf8_lines"] += record.bad_utf8
        stats["skipped_bad_rows"] += record.bad_row
        if record.bad_utf8 or record.bad_row:
            job["skipped_lines"].append(record.line)
        for position, sentence in enumerate(record.sentences):
            job["sentences"].append(sentence)
            job["new_doc"].append(record.new_doc and position == 0)
            stats["text_bytes"] += len(sentence.encode("utf-8"))
        if stats["lines"] == settings.shard_lines:
            yield job
            job = _new_job(source, job["chunk"] + 1, record.line + 1, work, settings)
    if job["stats"]["lines"]:
        yield job


def _new_job(source: int, chunk: int, first_line: int, work: Path, settings: ShardSettings) -> dict[str, Any]:
    return {
        "source": source,
        "chunk": chunk,
        "first_line": first_line,
        "path": str(work / f"chunk-{chunk:06d}.npz"),
        "split_mode": settings.split_mode,
        "fields": list(settings.fields),
        "sentences": [],
        "new_doc": [],
        "skipped_lines": [],
        "stats": dict.fromkeys(STAT_NAMES, 0),
    }


def _init_worker(parent_pid: int) -> None:
    """Worker process setup: exit as soon as the run that started it is gone (killed with SIGKILL, say).

    A worker waiting for its next chunk would otherwise live on as an orphan.
    """
    global _PARENT_PID
    _PARENT_PID = parent_pid
    exit_when_parent_dies(parent_pid)


def exit_when_parent_dies(parent_pid: int) -> None:
    """End this (child) process within half a second of ``parent_pid`` going away (a thread polls getppid)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="jpipe-parent-watch", daemon=True).start()


def tokenize_chunk(job: dict[str, Any]) -> dict[str, Any]:
    """Tokenize one chunk and write its work shard (atomically). Runs in a worker process or a Ray task."""
    from pipeline.text.tokenize import CHUNK_MAX_BYTES, load_tokenizer

    fields = job["fields"]
    tokenizer = load_tokenizer(job["split_mode"], with_pos="pos" in fields)
    # surface and norm alone (the usual store) need neither the lemma nor the POS of each morpheme
    read = tokenizer.surfaces_and_norms if set(fields) <= {"surface", "norm"} else tokenizer.tokenize
    index: dict[str, dict[str, int]] = {field: {} for field in fields}
    ids: dict[str, array] = {field: array("I") for field in fields}  # 4 bytes an id, not a Python int object
    offsets = [0]
    long_lines = 0
    for number, sentence in enumerate(job["sentences"]):
        if _PARENT_PID is not None and number % 1000 == 0 and os.getppid() != _PARENT_PID:
            os._exit(1)  # the run was killed: an orphaned worker stops instead of finishing its chunk
        # Split by Tokenizer.tokenize, never dropped. Most lines are too short to be long whatever their bytes (a
        # character is at most 4): only the others are encoded to count their bytes.
        long_lines += len(sentence) > CHUNK_MAX_BYTES // 4 and len(sentence.encode("utf-8")) > CHUNK_MAX_BYTES
        tokens = read(sentence)
        for field in fields:
            vocab, out = index[field], ids[field]
            out.extend([vocab.setdefault(token, len(vocab)) for token in tokens[field]])
        offsets.append(len(ids[fields[0]]))
    stats = {**job["stats"], "split_long_lines": long_lines}
    arrays: dict[str, np.ndarray] = {
        "offsets": np.asarray(offsets, dtype=np.int64),
        "new_doc": np.asarray(job["new_doc"], dtype=np.uint8),
        "stats": np.asarray([stats[name] for name in STAT_NAMES], dtype=np.int64),
        "skipped_lines": np.asarray(job["skipped_lines"], dtype=np.int64),
    }
    for field in fields:
        arrays[field] = np.asarray(ids[field], dtype=ID_DTYPE)
        arrays[f"{field}_bytes"], arrays[f"{field}_offsets"] = encode_strings(list(index[field]))
    save_npz(job["path"], arrays)
    import resource

    return {
        "path": job["path"],
        "sentences": len(offsets) - 1,
        "tokens": offsets[-1],
        "lines": stats["lines"],
        # the peak RSS of the process that ran the chunk so far (MB), for the benchmark
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pid": os.getpid(),
    }


# ------------------------------------------------------------------ engines
def run_local(jobs: Iterator[dict[str, Any]], *, workers: int) -> Iterator[dict[str, Any]]:
    """Run ``tokenize_chunk`` on every job: inline for one worker (or one job), else in ``workers`` processes.

    At most two jobs per worker are in flight, so memory does not grow with the corpus.
    Processes are spawned, not forked: they inherit neither the project lock nor the parent's threads.
    """
    first = next(jobs, None)
    second = next(jobs, None) if first is not None else None
    if first is None:
        return
    if workers <= 1 or second is None:
        for job in _chain(first, second, jobs):
            yield tokenize_chunk(job)
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
    try:
        pending: set = set()
        for job in _chain(first, second, jobs):
            pending.add(pool.submit(tokenize_chunk, job))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (future.result() for future in done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chain(first: dict, second: dict | None, rest: Iterator[dict]) -> Iterator[dict]:
    yield first
    if second is not None:
        yield second
        yield from rest


# ------------------------------------------------------------------ build
def build_store(
    sources: list[tuple[str, Path]],
    *,
    out_dir: Path,
    work_dir: Path,
    settings: ShardSettings,
    workers: int = 1,
    engine: str = "local",
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Tokenize ``sources`` (``(name as configured, path)``) into a token store at ``out_dir``; returns its meta.

    Work shards already in ``work_dir`` from an interrupted run are reused. ``on_shard`` is called after
    each newly written shard (progress; tests inject a failure there). The work shards are removed once
    the store is written.
    """
    for _, path in sources:
        check_corpus(path, text_field=settings.text_field)
    keys = [source_key(path, settings) for _, path in sources]
    _remove_stale_work(work_dir, keep=set(keys))
    done_before = sum(1 for key in keys for _ in (work_dir / key).glob("chunk-*.npz"))
    if done_before:
        logger.info("tokenize: resuming, %d shard(s) of an interrupted run are done", done_before)
    jobs = _pending_jobs(sources, keys, work_dir=work_dir, settings=settings)
    results = run_local(jobs, workers=workers) if engine == "local" else _run_ray(jobs, workers=workers)
    for result in _progress(results, sources):
        if on_shard:
            on_shard(result)
    chunk_files = [sorted((work_dir / key).glob("chunk-*.npz")) for key in keys]
    meta = finalize_store(chunk_files, out_dir=out_dir, sources=[name for name, _ in sources], settings=settings)
    for key in keys:
        shutil.rmtree(work_dir / key, ignore_errors=True)
    return meta


def _run_ray(jobs: Iterator[dict[str, Any]], *, workers: int) -> Iterator[dict[str, Any]]:
    from pipeline.text.ray_tokenize import run_ray

    return run_ray(jobs, workers=workers)


def _pending_jobs(sources, keys, *, work_dir: Path, settings: ShardSettings) -> Iterator[dict[str, Any]]:
    for source, ((_, path), key) in enumerate(zip(sources, keys, strict=True)):
        work = work_dir / key
        work.mkdir(parents=True, exist_ok=True)
        for job in iter_jobs(path, source=source, work=work, settings=settings):
            if not Path(job["path"]).exists():
                yield job


def _progress(results: Iterator[dict[str, Any]], sources) -> Iterator[dict[str, Any]]:
    from tqdm import tqdm

    names = ", ".join(Path(name).name for name, _ in sources)
    with tqdm(desc=f"tokenize {names}", unit=" lines", mininterval=1.0, disable=None) as bar:
        for result in results:
            bar.update(result["lines"])
            yield result


def _remove_stale_work(work_dir: Path, *, keep: set[str]) -> None:
    """Drop work directories of corpora or settings that are no longer configured."""
    if not work_dir.is_dir():
        return
    for child in work_dir.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


# ------------------------------------------------------------------ merge
def _chunk_vocab(data: dict[str, np.ndarray], field: str) -> list[str]:
    return decode_strings(data[f"{field}_bytes"], data[f"{field}_offsets"])


def _global_vocab(chunk_files: list[list[Path]], fields: tuple[str, ...]) -> dict[str, list[tuple[str, int]]]:
    """Per field, ``(token, count)`` sorted most frequent first (ties by token): independent of chunking."""
    counters: dict[str, Counter] = {field: Counter() for field in fields}
    for files in chunk_files:
        for path in files:
            data = load_npz(path)
            for field in fields:
                vocab = _chunk_vocab(data, field)
                counts = np.bincount(data[field], minlength=len(vocab))
                counters[field].update(dict(zip(vocab, counts.tolist(), strict=True)))
    return {field: sorted(counter.items(), key=lambda item: (-item[1], item[0])) for field, counter in counters.items()}


def finalize_store(chunk_files: list[list[Path]], *, out_dir: Path, sources: list[str], settings: ShardSettings) -> dict[str, Any]:
    """Merge the work shards (one list per source, in chunk order) into a token store at ``out_dir``."""
    fields = settings.fields
    vocab = _global_vocab(chunk_files, fields)
    vocab_arrays: dict[str, np.ndarray] = {}
    for field in fields:
        vocab_arrays[f"{field}_bytes"], vocab_arrays[f"{field}_offsets"] = encode_strings([token for token, _ in vocab[field]])
        vocab_arrays[f"{field}_counts"] = np.asarray([count for _, count in vocab[field]], dtype=np.int64)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_npz(out_dir / VOCAB_NAME, vocab_arrays)
    ids = {field: {token: index for index, (token, _) in enumerate(vocab[field])} for field in fields}
    shards: list[dict[str, Any]] = []
    source_meta = [
        _write_source(index, name, files, out_dir=out_dir, ids=ids, shards=shards)
        for index, (name, files) in enumerate(zip(sources, chunk_files, strict=True))
    ]
    meta = {
        "format": STORE_FORMAT,
        "kind": STORE_KIND,
        "split_mode": settings.split_mode,
        "fields": list(fields),
        "id_dtype": np.dtype(ID_DTYPE).name,
        "shard_lines": settings.shard_lines,
        "text_field": settings.text_field,
        "sentences": sum(s["sentences"] for s in source_meta),
        "tokens": sum(s["tokens"] for s in source_meta),
        "documents": sum(s["documents"] for s in source_meta),
        "text_bytes": sum(s["text_bytes"] for s in source_meta),
        "vocab_size": {field: len(vocab[field]) for field in fields},
        "sources": source_meta,
        "shards": shards,
        "tokenizer": "SudachiPy + spacy.lang.ja.resolve_pos (the ja_ginza tokenizer's fields)",
    }
    write_json(out_dir / META_NAME, meta)
    return meta


def _write_source(
    source: int, name: str, files: list[Path], *, out_dir: Path, ids: dict[str, dict[str, int]], shards: list
) -> dict[str, Any]:
    """Remap one source's work shards to the global ids and write them (appended to ``shards``); its totals."""
    totals = {**dict.fromkeys(STAT_NAMES, 0), "sentences": 0, "tokens": 0, "documents": 0}
    skipped: list[int] = []
    first_line = 1
    for path in files:
        data = load_npz(path)
        arrays = {"offsets": data["offsets"], "new_doc": data["new_doc"]}
        for field, index in ids.items():
            mapping = np.asarray([index[token] for token in _chunk_vocab(data, field)], dtype=ID_DTYPE)
            arrays[field] = mapping[data[field]] if len(mapping) else data[field]
        relative = f"{SHARDS_DIRNAME}/{len(shards):06d}.npz"
        save_npz(out_dir / relative, arrays)
        stats = dict(zip(STAT_NAMES, data["stats"].tolist(), strict=True))
        sentences, tokens = len(data["offsets"]) - 1, int(data["offsets"][-1])
        shards.append(
            {
                "file": relative,
                "source": source,
                "first_line": first_line,
                "lines": stats["lines"],
                "sentences": sentences,
                "tokens": tokens,
            }
        )
        first_line += stats["lines"]
        for key, value in stats.items():
            totals[key] += value
        totals["sentences"] += sentences
        totals["tokens"] += tokens
        totals["documents"] += int(data["new_doc"].sum())
        skipped.extend(data["skipped_lines"].tolist())
    _log_skipped(name, totals, skipped)
    return {"path": name, "format": corpus_format(name), **totals, "first_skipped_lines": skipped[:20]}


def _log_skipped(name: str, totals: dict[str, int], skipped: list[int]) -> None:
    if totals["skipped_bad_utf8_lines"] or totals["skipped_bad_rows"]:
        logger.warning(
            "%s: skipped %d line(s) that are not valid UTF-8 and %d row(s) without a text field (first at line %s)",
            name,
            totals["skipped_bad_utf8_lines"],
            totals["skipped_bad_rows"],
            skipped[0] if skipped else "-",
        )
    if totals["split_long_lines"]:
        logger.info("%s: %d line(s) longer than Sudachi's limit were split into pieces and tokenized", name, totals["split_long_lines"])
