"""``jpipe bench jobs``: wall time of the training stages with ``jpipe run --jobs N`` against ``--jobs 1``.

The project's upstream stages must be fresh (a finished ``jpipe run``). The bench copies the
project without the outputs of the timed stages (their lock entries, with their last durations, stay), then runs those stages
in one copy with one job and in the other with N jobs, through the same ``Runner.run`` that
``jpipe run`` calls (the stage table limited to the timed stages and their upstream, which is
fresh). Three runs, each on a fresh copy: one job (torch's default threads: all cores), one
job with the torch threads each parallel job gets (``cores // N``), and N jobs. It reports the
wall times, the speed-ups, the monitored dev figures, and whether the runs wrote the same model
weights byte for byte (torch's float sums depend on its thread count: only runs with the same
threads per stage can be equal).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_STAGES = ("train_topic", "train_sentiment", "train_generator")
_SKIP = {".jpipe"}


def _copy_without(project: Path, target: Path, *, stages: list, timed: set[str]) -> None:
    """``project`` copied to ``target`` without the timed stages' outputs."""
    drop = {output for stage in stages if stage.name in timed for output in stage.outputs}
    shutil.copytree(project, target, ignore=lambda directory, names: [n for n in names if n in _SKIP and Path(directory) == project])
    for output in drop:
        path = target / output
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    # The lock entries stay: the stages are stale (their outputs are missing) and their last durations
    # are known, as when a project reruns its training stages after a change.


def _weights(project: Path, stages: list, timed: set[str]) -> dict[str, str]:
    """sha256 of every weights file the timed stages wrote."""
    from pipeline.io import sha256_file

    found = {}
    for stage in stages:
        for output in stage.outputs if stage.name in timed else ():
            root = project / output
            for path in sorted(root.rglob("*.safetensors") if root.is_dir() else []):
                found[str(path.relative_to(project))] = sha256_file(path)
    return found


def _timed_run(project: Path, copy: Path, *, config, table: list, timed: set[str], jobs: int, threads: int | None) -> dict[str, Any]:
    """Run the timed stages in a fresh copy; seconds, weights hashes and the stages' summary metrics."""
    import torch

    from pipeline.workflow.runner import Runner

    _copy_without(project, copy, stages=table, timed=timed)
    full = Runner(copy, config, stages=table)
    keep = timed | {upstream for name in timed for upstream in full.ancestors(name)}
    runner = Runner(copy, config, stages=[stage for stage in table if stage.name in keep])
    if sorted(name for name, _ in runner.plan()) != sorted(timed):
        raise RuntimeError(f"the upstream stages of {', '.join(sorted(timed))} are not fresh in {project}: run `jpipe run` first")
    default_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads)  # the single-process run's torch threads (its default: all cores)
    try:
        started = time.perf_counter()
        runner.run(jobs=jobs)
        seconds = round(time.perf_counter() - started, 1)
    finally:
        torch.set_num_threads(default_threads)
    lock = json.loads((copy / "jpipe.lock").read_text(encoding="utf-8"))["stages"]
    monitored = {name: {k: v for k, v in lock[name]["metrics"].items() if k.startswith("dev_")} for name in sorted(timed)}
    return {
        "jobs": jobs,
        "torch_threads": threads or default_threads,
        "seconds": seconds,
        "weights": _weights(copy, table, timed),
        "dev": monitored,
    }


def benchmark_jobs(*, project_dir: str | os.PathLike, config, jobs: int = 2, stages: tuple[str, ...] = DEFAULT_STAGES) -> dict[str, Any]:
    """Seconds of the ``stages``: one job (default torch threads), one job with the threads each parallel job gets,
    and ``jobs`` jobs; each on a fresh copy of the project."""
    from pipeline.workflow.parallel import stage_threads
    from pipeline.workflow.stages import build_stages

    project = Path(project_dir).resolve()
    table, timed = build_stages(config), set(stages)
    options = dict(config=config, table=table, timed=timed)
    with tempfile.TemporaryDirectory(prefix="jpipe-bench-jobs-", dir=project.parent) as scratch:
        runs = {
            "one_job": _timed_run(project, Path(scratch) / "one", jobs=1, threads=None, **options),
            "one_job_same_threads": _timed_run(project, Path(scratch) / "same", jobs=1, threads=stage_threads(jobs), **options),
            "parallel": _timed_run(project, Path(scratch) / "parallel", jobs=jobs, threads=None, **options),
        }
    parallel = runs["parallel"]
    parallel["torch_threads"] = stage_threads(jobs)
    return {
        "stages": sorted(timed),
        "jobs": jobs,
        "cores": os.cpu_count(),
        "runs": {name: {k: v for k, v in run.items() if k != "weights"} for name, run in runs.items()},
        "speedup": round(runs["one_job"]["seconds"] / parallel["seconds"], 3),
        "speedup_same_threads": round(runs["one_job_same_threads"]["seconds"] / parallel["seconds"], 3),
        "same_weights_as_one_job": runs["one_job"]["weights"] == parallel["weights"],
        "same_weights_as_one_job_same_threads": runs["one_job_same_threads"]["weights"] == parallel["weights"],
        "weights_files": len(parallel["weights"]),
    }
