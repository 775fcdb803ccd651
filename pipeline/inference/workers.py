"""The local classify engine with worker processes: ``jpipe classify --workers N``.

One interpreter cannot keep two cores busy with the tokenizer and torch (one torch thread
plus one tokenizer thread share the GIL between them), so with N > 1 the work goes to N
worker processes (``spawn``, safe with torch), each with one torch thread:

* each worker loads the task models once (on its first chunk, from the model directories);
* the parent reads the rows and sends them in chunks of ``batch_size`` rows (the batches of
  the in-process path, so the models see the same batches); a worker tokenizes, classifies
  and checks the language of its chunk (``classify_batch``) and formats the output lines
  itself (``OutputWriter``), so the parent only writes text and counts rows;
* the parent keeps at most ``IN_FLIGHT_PER_WORKER`` chunks per worker in flight and writes the
  results in input order (the oldest chunk first: a reorder buffer of bounded size), with the
  per-row errors, the language counts and the progress bar of the in-process path.

Ctrl-C, an error or a worker that dies ends every worker (the workers ignore SIGINT, and ask
the kernel to end them when the parent dies: no orphan process is left behind). A worker
that dies is E409.

The model weights (safetensors, about 10 MB per task) are loaded into each worker: N workers
hold N copies. Most of a worker's memory is torch itself and the tokenizer; ``worker_memory``
reads each worker's ``/proc/<pid>/status`` at the end of a run (``jpipe bench classify
--workers N`` prints it).
"""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from pipeline.data.readers import InputRecord
from pipeline.errors import WorkflowError
from pipeline.inference.batch import DEFAULT_TOP_TOKENS, ClassifySummary, OutputWriter, chunked
from pipeline.inference.classifier import DEFAULT_BATCH_SIZE

logger = logging.getLogger(__name__)

START_METHOD = "spawn"  # fork would copy a parent that may hold torch threads; spawn starts clean interpreters
IN_FLIGHT_PER_WORKER = 3  # chunks queued per worker: one running, the next ones ready
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerModels:
    """What a worker loads (task -> model directory) and how it runs and writes its rows (picklable)."""

    model_dirs: dict[str, str]
    output_format: str = "jsonl"
    device: str = "cpu"
    long_policy: str = "aggregate"
    batch_size: int = DEFAULT_BATCH_SIZE
    int8: bool = False
    threads: int = 1  # torch threads per worker
    top_tokens: int = DEFAULT_TOP_TOKENS
    calibrated: bool = True  # the models' dev-fitted temperatures (calibration.json)


@dataclass
class ParallelSummary(ClassifySummary):
    """``ClassifySummary`` plus the workers used and their memory at the end of the run."""

    workers: int = 1
    worker_memory: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------- in the worker
_WORKER: dict[str, Any] = {}


def _init_worker(parent_pid: int) -> None:
    """Ignore Ctrl-C (the parent ends the workers) and die with the parent (Linux: PR_SET_PDEATHSIG)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux / no glibc
        logger.debug("PR_SET_PDEATHSIG not available")
    if os.getppid() != parent_pid:  # the parent died before prctl
        os._exit(1)


def _classifiers(models: WorkerModels):
    """The worker's ``TaskClassifiers``, loaded on the first call."""
    if "classifiers" not in _WORKER:
        from pipeline.inference.batch import TaskClassifiers

        _WORKER["classifiers"] = TaskClassifiers.from_engine_models(models)
    return _WORKER["classifiers"]


def describe(models: WorkerModels) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """The tasks and labels of the loaded models (for the parent's CSV header)."""
    classifiers = _classifiers(models)
    return classifiers.tasks, classifiers.labels


def classify_chunk(records: list[InputRecord], models: WorkerModels) -> tuple[tuple[str, list[tuple[str, str | None, str | None]]], int]:
    """One chunk -> (its output text (lines as ``OutputWriter`` writes them), ``(id, error, warning)`` per row), this pid."""
    from pipeline.inference.batch import classify_batch

    classifiers = _classifiers(models)
    rows = classify_batch(records, classifiers, top_tokens=models.top_tokens)
    buffer = io.StringIO(newline="")
    writer = OutputWriter(buffer, output_format=models.output_format, tasks=classifiers.tasks, labels=classifiers.labels, header=False)
    for row in rows:
        writer.write(row)
    return (buffer.getvalue(), [(row["id"], row["error"], row["warning"]) for row in rows]), os.getpid()


# ---------------------------------------------------------------- in the parent
def default_workers(device: str = "cpu") -> int:
    """The cores this process may use, on the CPU; one process on a GPU (N processes would hold N copies there)."""
    from pipeline.io import usable_cores

    return usable_cores() if device == "cpu" else 1


def run_parallel_classification(
    *,
    records: Iterable[InputRecord],
    models: WorkerModels,
    handle: IO[str],
    workers: int,
    progress: bool = True,
    load_local: Callable[[], Any] | None = None,
) -> ClassifySummary:
    """Classify ``records`` with ``workers`` processes and write the rows to ``handle`` in input order.

    An input of one chunk (``models.batch_size`` rows or fewer) is not worth starting processes:
    with ``load_local`` (a function that returns ``TaskClassifiers``) it runs in this process,
    on the in-process path."""
    chunks = chunked(records, models.batch_size)
    first = next(chunks, [])
    second = next(chunks, None)
    if second is None and load_local is not None:
        from pipeline.inference.batch import run_classification

        return run_classification(
            records=first,
            classifiers=load_local(),
            handle=handle,
            output_format=models.output_format,
            top_tokens=models.top_tokens,
            progress=progress,
        )
    ahead = [first] + ([second] if second is not None else [])
    return _run_pool(chunks=prepend(ahead, chunks), models=models, handle=handle, workers=workers, progress=progress)


def prepend(items: list, rest: Iterator) -> Iterator:
    """``items``, then the rest of an iterator they were taken from."""
    yield from items
    yield from rest


class WorkerPool:
    """``workers`` processes (``START_METHOD``) that run picklable functions on chunks; ``ordered`` yields the
    results in the order of the chunks, with a bounded number of chunks in flight. Leaving the ``with``
    block ends every worker: after an error or Ctrl-C at once, else once they are idle. A worker that
    dies is E409."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pids: set[int] = set()
        self.pool = None

    def __enter__(self) -> WorkerPool:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context(START_METHOD)
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))
        return self

    def __exit__(self, kind, error, traceback) -> None:
        from concurrent.futures.process import BrokenProcessPool

        _end_pool(self.pool, graceful=kind is None)
        if kind is not None and issubclass(kind, BrokenProcessPool):
            raise WorkflowError(
                "E409",
                f"A worker process died ({error}); the rows before its chunk were written.",
                hint="A worker killed for lack of memory is the usual cause: run fewer worker processes (each holds its own models).",
            ) from None

    def submit(self, function: Callable, *args: Any):
        return self.pool.submit(function, *args)

    def ordered(self, function: Callable, chunks: Iterator, *args: Any, first: list | None = None) -> Iterator:
        """``function(chunk, *args)`` for every chunk, in order (``first``: futures already submitted, in order).

        Each result is ``(value, pid)``: the worker's pid is kept (``memory``), the value yielded."""
        pending = deque(first or [])
        pending.extend(self.submit(function, chunk, *args) for chunk in _take(chunks, self.workers * IN_FLIGHT_PER_WORKER - len(pending)))
        while pending:
            value, pid = pending.popleft().result()  # the oldest chunk: results leave in input order
            pending.extend(self.submit(function, chunk, *args) for chunk in _take(chunks, 1))
            self.pids.add(pid)
            yield value

    def memory(self) -> list[dict[str, Any]]:
        """``worker_memory`` of every worker that returned a result (call before leaving the ``with`` block)."""
        return [worker_memory(pid) for pid in sorted(self.pids)]


def _run_pool(*, chunks: Iterator[list[InputRecord]], models: WorkerModels, handle: IO[str], workers: int, progress: bool):
    from tqdm import tqdm

    summary = ParallelSummary(workers=workers)
    bar = tqdm(desc="classify", unit=" reviews", file=sys.stderr, disable=not progress, mininterval=0.5, smoothing=0.1)
    try:
        with WorkerPool(workers) as pool:
            header = pool.submit(describe, models)
            first = [pool.submit(classify_chunk, chunk, models) for chunk in _take(chunks, workers * IN_FLIGHT_PER_WORKER)]
            tasks, labels = header.result()
            OutputWriter(handle, output_format=models.output_format, tasks=tasks, labels=labels)  # the CSV header, if any
            for text, counts in pool.ordered(classify_chunk, chunks, models, first=first):
                handle.write(text)
                for row_id, error, warning in counts:
                    summary.add(row_id=row_id, error=error, warning=warning)
                bar.update(len(counts))
            summary.worker_memory = pool.memory()
    finally:
        bar.close()
    return summary


def _take(chunks: Iterator, count: int) -> list:
    taken = []
    for _ in range(count):
        chunk = next(chunks, None)
        if chunk is None:
            break
        taken.append(chunk)
    return taken


def _end_pool(pool, *, graceful: bool) -> None:
    """Stop the pool: after a complete run, let the idle workers exit; after Ctrl-C or an error, cancel what
    waits and end the worker processes now. Every worker is reaped either way."""
    if pool is None:
        return
    # concurrent.futures has no public way to end running workers before Python 3.14 (terminate_workers).
    processes = list((getattr(pool, "_processes", None) or {}).values())
    if graceful:
        pool.shutdown(wait=True)
        return
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():  # pragma: no cover - a worker stuck in a system call
            process.kill()
            process.join(timeout=5)


def worker_memory(pid: int) -> dict[str, Any]:
    """``VmRSS``, ``RssAnon`` (private), ``RssFile`` (file pages, shared with other processes) and ``VmHWM`` (peak) in MB."""
    memory: dict[str, Any] = {"pid": pid}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in MEMORY_FIELDS:
                    memory[name] = round(int(value.split()[0]) / 1024, 1)  # kB -> MB
    except OSError:
        pass
    return memory
