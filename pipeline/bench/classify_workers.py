"""``jpipe bench classify --workers N``: the local engine in this process (N=1, the reference) against
N worker processes (``pipeline.inference.workers``), on the same reviews, in alternating rounds.

Each run is timed end to end, wall clock, model loading (and for N > 1 the start of the worker
processes) included, JSONL to /dev/null: what a user waits for. The rounds alternate N=1 and N,
so a change of the machine's load hits both; the medians and their ratio are reported with the
load average before and after, and the memory of each worker process at the end of its run.

On a shared machine the wall clock depends on what else runs, so the CPU seconds of each run are
reported too (this process plus its reaped worker processes, ``getrusage``): reviews per CPU second
is what the engine costs, whatever the load; N workers can only be N times faster than one when
they use no more CPU per review and N cores are free.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.data.readers import InputRecord
from pipeline.inference.classifier import DEFAULT_BATCH_SIZE


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``)."""
    with open("/proc/loadavg", encoding="ascii") as handle:
        return [float(value) for value in handle.read().split()[:3]]


def _records(texts: list[str], reviews: int) -> Iterator[InputRecord]:
    for index in range(reviews):
        yield InputRecord(id=str(index + 1), text=texts[index % len(texts)])


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _in_process(project_dir: Path, texts: list[str], *, reviews: int, batch_size: int) -> tuple[float, dict]:
    """Seconds of the in-process engine (``classify --workers 1``), models loaded inside the timing; its peak RSS."""
    import resource

    from pipeline.inference.batch import TaskClassifiers, run_classification

    started = time.perf_counter()
    classifiers = TaskClassifiers.from_project(project_dir, batch_size=batch_size)
    with open(os.devnull, "w", encoding="utf-8") as sink:
        summary = run_classification(
            records=_records(texts, reviews), classifiers=classifiers, handle=sink, output_format="jsonl", progress=False
        )
    seconds = time.perf_counter() - started
    assert summary.rows == reviews
    return seconds, {"VmHWM": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _with_workers(project_dir: Path, texts: list[str], *, reviews: int, batch_size: int, workers: int) -> tuple[float, list[dict]]:
    """Seconds of ``workers`` worker processes, their start and model loading included; each worker's memory."""
    from pipeline.inference.batch import task_model_dirs
    from pipeline.inference.workers import WorkerModels, run_parallel_classification

    started = time.perf_counter()
    directories = task_model_dirs(project_dir)
    models = WorkerModels(model_dirs={task: str(path.resolve()) for task, path in directories.items()}, batch_size=batch_size)
    with open(os.devnull, "w", encoding="utf-8") as sink:
        summary = run_parallel_classification(records=_records(texts, reviews), models=models, handle=sink, workers=workers, progress=False)
    seconds = time.perf_counter() - started
    assert summary.rows == reviews
    return seconds, summary.worker_memory


def benchmark_workers(
    *, project_dir: str | os.PathLike, reviews: int = 20_000, batch_size: int = DEFAULT_BATCH_SIZE, workers: int = 2, rounds: int = 3
) -> dict[str, Any]:
    """Reviews/s of the in-process engine (N=1) and of ``workers`` processes, alternating, ``rounds`` times each."""
    import torch

    from pipeline.bench.classify import benchmark_texts
    from pipeline.io import usable_cores

    project_dir = Path(project_dir)
    texts, source = benchmark_texts(project_dir)
    threads = torch.get_num_threads()
    before = load_average()
    single: list[float] = []
    parallel: list[float] = []
    memory: list[dict] = []
    cpu: dict[int, list[float]] = {1: [], workers: []}
    for _ in range(rounds):
        cpu_before = _cpu_seconds()
        seconds, peak = _in_process(project_dir, texts, reviews=reviews, batch_size=batch_size)
        single.append(seconds)
        cpu_middle = _cpu_seconds()
        seconds, memory = _with_workers(project_dir, texts, reviews=reviews, batch_size=batch_size, workers=workers)
        parallel.append(seconds)
        cpu[1].append(cpu_middle - cpu_before)
        cpu[workers].append(_cpu_seconds() - cpu_middle)
    started = time.perf_counter()  # the fixed cost: start the workers, load the models, one chunk each
    _with_workers(project_dir, texts, reviews=workers * batch_size + 1, batch_size=batch_size, workers=workers)
    startup = time.perf_counter() - started
    one, many = reviews / statistics.median(single), reviews / statistics.median(parallel)
    return {
        "reviews": reviews,
        "source": source,
        "mean_characters": round(sum(len(t) for t in texts) / len(texts), 1),
        "batch_size": batch_size,
        "cores": usable_cores(),
        "in_process_torch_threads": threads,
        "workers": workers,
        "rounds": rounds,
        "seconds_workers_1": [round(s, 2) for s in single],
        f"seconds_workers_{workers}": [round(s, 2) for s in parallel],
        "reviews_per_second_workers_1": round(one, 1),
        f"reviews_per_second_workers_{workers}": round(many, 1),
        "ratio": round(many / one, 3),
        "cpu_seconds_workers_1": [round(s, 2) for s in cpu[1]],
        f"cpu_seconds_workers_{workers}": [round(s, 2) for s in cpu[workers]],
        "reviews_per_cpu_second_workers_1": round(reviews / statistics.median(cpu[1]), 1),
        f"reviews_per_cpu_second_workers_{workers}": round(reviews / statistics.median(cpu[workers]), 1),
        "startup_seconds_workers": round(startup, 2),
        "load_average_before": before,
        "load_average_after": load_average(),
        "in_process_peak_rss_mb": peak["VmHWM"],
        "worker_memory_mb": memory,
    }
