"""``jpipe train TASK`` and ``jpipe train TASK --ddp N``: one task's training stage, data-parallel when asked.

``--ddp N`` starts ``torchrun --standalone --nproc_per_node N -m pipeline train TASK`` (the same
command, N times). Started by torchrun, each process finds ``WORLD_SIZE`` in its environment:

* rank 0 is the runner: it joins the process group, runs the stale upstream stages (tokenize,
  vectors) alone, takes the project lock and runs ``train_TASK`` as ``jpipe run`` would, except
  that the stage function runs on every rank: rank 0 tells the others (a broadcast) to start,
  with the same config, and commits the outputs and the lock entry when it is done;
* the other ranks join the group, wait for that word, run the stage function with a private
  staging directory (they write no model: ``publish_model`` and the loop's checkpoints are
  rank 0's) and leave.

The work directory (``.jpipe/work/train_TASK``) is shared, so ``--resume`` continues every rank
from rank 0's last checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.workflow.stage import StageContext

logger = logging.getLogger(__name__)


def launch(*, nproc: int, args: list[str]) -> int:
    """Run ``python -m pipeline ARGS`` in ``nproc`` processes under torchrun (this machine); returns its exit code."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "pipeline", *args]
    logger.info("starting %d training processes: %s", nproc, " ".join(command))
    return subprocess.call(command)


def train_task(runner, task: str, *, force: bool = False, resume: bool = False, callbacks: dict | None = None) -> list[str]:
    """Run stage ``train_<task>`` (and its stale upstream stages): in this process, or as one rank of a torchrun group."""
    from pipeline.training.distributed import launched_world

    name = f"train_{task}"
    stage = runner.stage(name)
    callbacks = callbacks or {}
    if launched_world() <= 1:
        return runner.run(name, force=force, resume=resume, **callbacks)
    from pipeline.training import distributed

    device = runner.config[stage.section]["device"] if stage.section else "auto"
    group = distributed.init_from_env(device=device)
    try:
        if group.main:
            return _lead(runner, name, force=force, resume=resume, callbacks=callbacks)
        _follow(runner, name, rank=group.rank)
        return []
    finally:
        distributed.shutdown()


def _lead(runner, name: str, *, force: bool, resume: bool, callbacks: dict) -> list[str]:
    """Rank 0: upstream stages alone, then the stage on every rank (the others wait for the word)."""
    from pipeline.training import distributed

    told: list[bool] = []

    def on_all_ranks(ctx: StageContext):
        distributed.broadcast({"run": True, "resume": ctx.resume})
        told.append(True)
        return ctx.stage.load()(ctx)

    try:
        for upstream in [stage for stage, _ in runner.plan(name) if stage != name]:
            runner.run(upstream, resume=resume, **callbacks)
        runner.executors[name] = on_all_ranks
        return runner.run(name, force=force, resume=resume, **callbacks)
    finally:
        if not told:  # fresh (or an upstream stage failed): release the waiting ranks
            distributed.broadcast({"run": False})


def _follow(runner, name: str, *, rank: int) -> None:
    """A rank > 0: run the stage function when rank 0 says so, into a staging directory of its own."""
    from pipeline.training import distributed

    word = distributed.broadcast(None)
    if not word["run"]:
        return
    logging.getLogger("pipeline").setLevel(logging.WARNING)  # rank 0 reports the epochs
    staging = runner.state_dir / "staging" / f"{name}-rank{rank}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ctx = StageContext(
        stage=runner.stage(name),
        project_dir=runner.project_dir,
        config=runner.config,
        staging_dir=staging,
        work_dir=Path(runner.state_dir) / "work" / name,
        resume=word["resume"],
    )
    try:
        ctx.stage.load()(ctx)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
