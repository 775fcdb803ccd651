"""``jpipe bench classify --engine ray``: the local and Ray engines on the same reviews, in the same run.

The reviews are KNBC test sentences (unseen in training), one or two per review, cycled and
numbered to the size asked for, written as a .txt file: both engines read that file, classify
with both task models and write JSONL to disk (the local engine one file, Ray its shards).
Figures, per engine and input size:

* reviews/s end to end, wall clock, model loading and (Ray) starting the local Ray included;
* peak memory: the highest proportional set size (PSS, so pages shared between Ray's processes
  count once) summed over this process and all its descendants (Ray's raylet, GCS and workers),
  sampled every 0.2 s; measured at two input sizes to see whether it grows with the input.

From these: the ratio Ray / local at the full size (Ray's overhead on one machine), each engine's
fixed cost and marginal speed (a line through its two sizes: seconds = fixed + reviews / rate),
and the scaling from 1 to 2 actors (at the smaller size).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.bench.classify import benchmark_texts
from pipeline.inference.classifier import DEFAULT_BATCH_SIZE

SAMPLE_SECONDS = 0.2


class PeakMemory:
    """Samples the PSS of this process tree in a thread; ``peak_mb`` after the ``with`` block."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak_kb / 1024, 1)

    def _sample(self) -> None:
        while True:
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(pid) for pid in _tree(os.getpid())))
            if self._stop.wait(SAMPLE_SECONDS):
                return


def _tree(root: int) -> list[int]:
    """``root`` and every descendant (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(parent, []).append(int(stat.parent.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += parents.get(pid, [])
    return found


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_reviews(path: Path, texts: list[str], count: int) -> Path:
    """``count`` reviews of one or two KNBC sentences each (a cycle through ``texts``), one per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(count):
            first = texts[index % len(texts)]
            second = texts[(index * 7 + 3) % len(texts)] if index % 2 else ""  # every other review: two sentences
            handle.write(first + second + "\n")
    return path


def _local(project_dir: Path, source: Path, output: Path, *, batch_size: int) -> dict[str, Any]:
    from pipeline.data.readers import read_records
    from pipeline.inference.batch import TaskClassifiers, run_classification
    from pipeline.io import atomic_open

    with PeakMemory() as memory:
        started = time.perf_counter()
        classifiers = TaskClassifiers.from_project(project_dir, batch_size=batch_size)
        with atomic_open(output, newline="") as handle:
            summary = run_classification(
                records=read_records(str(source)), classifiers=classifiers, handle=handle, output_format="jsonl", progress=False
            )
        seconds = time.perf_counter() - started
    return {
        "rows": summary.rows,
        "seconds": round(seconds, 2),
        "reviews_per_second": round(summary.rows / seconds, 1),
        "peak_mb": memory.peak_mb,
    }


def _ray(project_dir: Path, source: Path, output: Path, *, batch_size: int, actors: int) -> dict[str, Any]:
    from pipeline.inference.batch import task_model_dirs
    from pipeline.inference.ray_engine import RayModels, RaySource, run_ray_classification

    models = RayModels(model_dirs={t: str(p.resolve()) for t, p in task_model_dirs(project_dir).items()}, batch_size=batch_size)
    with PeakMemory() as memory:
        started = time.perf_counter()
        summary = run_ray_classification(source=RaySource(path=str(source), kind="txt"), models=models, output_dir=output, actors=actors)
        seconds = time.perf_counter() - started
    return {
        "rows": summary.rows,
        "actors": actors,
        "seconds": round(seconds, 2),
        "reviews_per_second": round(summary.rows / seconds, 1),
        "ray_start_seconds": summary.connect_seconds,
        "shards": len(summary.shards),
        "peak_mb": memory.peak_mb,
    }


def _fit(small: dict[str, Any], full: dict[str, Any]) -> dict[str, float]:
    """Fixed seconds and marginal reviews/s of an engine, from its runs at two sizes."""
    extra_seconds = max(full["seconds"] - small["seconds"], 1e-9)
    rate = (full["rows"] - small["rows"]) / extra_seconds
    return {"fixed_seconds": round(full["seconds"] - full["rows"] / rate, 2), "marginal_reviews_per_second": round(rate, 1)}


def benchmark_ray_classify(
    *, project_dir: str | os.PathLike, reviews: int = 200_000, actors: int = 2, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, Any]:
    """Local vs Ray (``actors`` actors) on ``reviews`` reviews and on a quarter of them; 1 vs ``actors`` actors on the quarter."""
    project_dir = Path(project_dir)
    texts, source_name = benchmark_texts(project_dir)
    small = max(1, reviews // 4)
    with tempfile.TemporaryDirectory(prefix="jpipe-bench-ray-") as scratch:
        work = Path(scratch)
        full, quarter = (write_reviews(work / f"reviews-{n}.txt", texts, n) for n in (reviews, small))
        runs = {
            "local": _local(project_dir, full, work / "local.jsonl", batch_size=batch_size),
            "ray": _ray(project_dir, full, work / "ray", batch_size=batch_size, actors=actors),
            "local_small": _local(project_dir, quarter, work / "local-small.jsonl", batch_size=batch_size),
            "ray_small": _ray(project_dir, quarter, work / "ray-small", batch_size=batch_size, actors=actors),
            "ray_small_1_actor": _ray(project_dir, quarter, work / "ray-small-1", batch_size=batch_size, actors=1),
        }
    mean_chars = sum(len(texts[i % len(texts)]) for i in range(min(reviews, 10_000))) / min(reviews, 10_000)
    return {
        "reviews": reviews,
        "small_reviews": small,
        "source": source_name,
        "cores": os.cpu_count(),
        "batch_size": batch_size,
        "mean_sentence_characters": round(mean_chars, 1),
        "runs": runs,
        "ray_vs_local": round(runs["ray"]["reviews_per_second"] / runs["local"]["reviews_per_second"], 3),
        "actor_scaling": round(runs["ray_small"]["reviews_per_second"] / runs["ray_small_1_actor"]["reviews_per_second"], 3),
        # seconds = fixed + rows / marginal rate, from the two sizes: start-up cost and steady speed of each engine
        "fit": {engine: _fit(runs[f"{engine}_small"], runs[engine]) for engine in ("local", "ray")},
        "peak_mb_growth": {
            "local": round(runs["local"]["peak_mb"] / max(runs["local_small"]["peak_mb"], 1e-9), 3),
            "ray": round(runs["ray"]["peak_mb"] / max(runs["ray_small"]["peak_mb"], 1e-9), 3),
        },
    }
