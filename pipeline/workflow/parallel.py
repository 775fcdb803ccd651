"""``jpipe run --jobs N``: independent stages side by side, in forked processes, under the one project lock.

The parent process (the ``Runner``, holding the project lock) keeps every decision and every
write of ``jpipe.lock``; a child process only runs one stage function into that stage's
staging directory and sends back its metrics (or its error). So:

* a stage starts when every planned stage upstream of it is done, and is checked for early
  cutoff just before, exactly as a sequential run checks it; two stages are independent when
  neither is upstream of the other; among the stages ready to start, the one that took longest
  last time (``duration_s`` in the lock) starts first, since it bounds the run's wall time;
* the parent moves a finished stage's outputs into place and records them in ``jpipe.lock``
  (``Runner.finish``), one stage at a time, so the lock entries are those of a sequential run;
* a failing stage (an error, or a child that dies) stops only the stages downstream of it;
  the others run to the end, then the first error is raised. Its staging directory is removed,
  so it leaves no half-written output; the lock file never saw it.

Torch runs several threads per process: each child gets ``cores // jobs`` threads, so N stages
share the cores instead of fighting over them. ``fork`` (not ``spawn``) starts the children: the
parent imported no torch (the CLI does not), and a child inherits the config and stage table.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import traceback
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import WorkflowError
from pipeline.io import usable_cores

logger = logging.getLogger(__name__)


@dataclass
class _Schedule:
    """Which planned stages wait, run, are done, failed or blocked (downstream of a failure)."""

    plan: list[tuple[str, list[str]]]
    needs: dict[str, set[str]]  # stage -> planned stages upstream of it
    waiting: list[str] = field(default_factory=list)
    running: dict[str, Any] = field(default_factory=dict)  # name -> (process, connection, job)
    done: set[str] = field(default_factory=set)
    ran: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)  # seconds of each stage's last run (the lock's duration_s)

    def ready(self) -> list[str]:
        """Waiting stages whose planned upstream stages are all done, longest first; drops those below a failure.

        Longest first (by the duration of the stage's last run, in the lock; table order among unknown and
        equal ones): the longest stage is the critical path, so it should not wait behind short ones."""
        blocked = {name for name in self.waiting if self.needs[name] & (set(self.failed) | self._blocked())}
        for name in blocked:
            self.waiting.remove(name)
            logger.warning("%s does not run: a stage upstream of it failed", name)
        ready = [name for name in self.waiting if self.needs[name] <= self.done]
        return sorted(ready, key=lambda name: -self.durations.get(name, 0.0))

    def _blocked(self) -> set[str]:
        planned = {name for name, _ in self.plan}
        return planned - self.done - set(self.waiting) - set(self.running) - set(self.failed)


def stage_threads(jobs: int) -> int:
    """Torch threads for each of ``jobs`` stages running at once: the cores shared out (at least 1)."""
    return max(1, usable_cores() // jobs)


def run_parallel(runner, plan: list[tuple[str, list[str]]], *, jobs: int, resume: bool, forced: set[str], callbacks: dict) -> list[str]:
    """Run ``plan`` with up to ``jobs`` stages at once; returns the stages that ran (in the order they finished)."""
    planned = [name for name, _ in plan]
    needs = {name: set(runner.ancestors(name)) & set(planned) for name in planned}
    durations = {name: float(runner.lock["stages"].get(name, {}).get("duration_s") or 0.0) for name in planned}
    schedule = _Schedule(plan=plan, needs=needs, waiting=list(planned), durations=durations)
    reasons = dict(plan)
    context = multiprocessing.get_context("fork")
    try:
        while schedule.waiting or schedule.running:
            for name in schedule.ready():
                if len(schedule.running) >= jobs:
                    break
                schedule.waiting.remove(name)
                why = runner.recheck(name, forced, callbacks["skip"]) if schedule.ran else reasons[name]
                if why is None:
                    schedule.done.add(name)
                    continue
                _start(runner, schedule, name, why, context=context, resume=resume, jobs=jobs, callbacks=callbacks)
            if schedule.running:
                _collect(runner, schedule, callbacks)
            elif schedule.waiting and not schedule.ready():
                raise WorkflowError("E408", f"No stage can start: {', '.join(schedule.waiting)} wait for stages that never ran.")
    finally:
        _stop_all(schedule)
    if schedule.failed:
        first = next(name for name in planned if name in schedule.failed)
        raise schedule.failed[first]
    return schedule.ran


def _start(runner, schedule: _Schedule, name: str, why: list[str], *, context, resume: bool, jobs: int, callbacks: dict) -> None:
    if callbacks["start"]:
        callbacks["start"](name, why)
    job = runner.prepare(name, resume=resume)
    receiver, sender = context.Pipe(duplex=False)
    # the parent's PID travels with the job: a child that read getppid() itself would get its new parent's PID if
    # this process were killed before the child started, and would then never notice
    args = (job.ctx, sender, stage_threads(jobs), os.getpid())
    process = context.Process(target=_child, args=args, name=f"jpipe-{name}", daemon=False)
    process.start()
    sender.close()  # the parent keeps only the reading end: EOF when the child is gone
    schedule.running[name] = (process, receiver, job)
    runner.set_running({stage: entry[0].pid for stage, entry in schedule.running.items()})


def _collect(runner, schedule: _Schedule, callbacks: dict) -> None:
    """Wait for at least one running stage to end; record it (outputs and lock entry) or its failure."""
    from multiprocessing.connection import wait

    by_connection = {entry[1]: name for name, entry in schedule.running.items()}
    for connection in wait(list(by_connection)):
        name = by_connection[connection]
        process, _, job = schedule.running.pop(name)
        try:
            outcome, payload = connection.recv()
        except (EOFError, OSError):
            outcome, payload = "error", None
        connection.close()
        process.join()
        if outcome == "ok":
            try:
                seconds, metrics = runner.finish(job, payload)
            except Exception as exc:  # noqa: BLE001 - e.g. a declared output missing (E407): this stage failed, others go on
                _failed(schedule, name, exc, callbacks)
                continue
            schedule.ran.append(name)
            schedule.done.add(name)
            if callbacks["end"]:
                callbacks["end"](name, seconds, metrics)
        else:
            shutil.rmtree(job.staging, ignore_errors=True)
            error = payload or WorkflowError("E408", f"Stage {name} died (exit code {process.exitcode}) before it finished.")
            _failed(schedule, name, error, callbacks)
    runner.set_running({stage: entry[0].pid for stage, entry in schedule.running.items()})


def _failed(schedule: _Schedule, name: str, error: BaseException, callbacks: dict) -> None:
    schedule.failed[name] = error
    if callbacks["fail"]:
        callbacks["fail"](name, error)
    else:
        logger.error("stage %s failed: %s", name, error)


def _stop_all(schedule: _Schedule) -> None:
    """On the way out (an interrupt, an error of the parent): stop running children, remove their staging."""
    for process, connection, job in schedule.running.values():
        if process.is_alive():
            process.terminate()
        process.join()
        connection.close()
        shutil.rmtree(job.staging, ignore_errors=True)
    schedule.running.clear()


def _child(ctx, connection, threads: int, parent_pid: int) -> None:
    """In the forked process: run one stage function into its staging directory; send ("ok", metrics) or ("error", exc)."""
    from pipeline.text.sharded import exit_when_parent_dies

    # a stage of a killed run must not run on as an orphan (it also holds the inherited project lock)
    exit_when_parent_dies(parent_pid)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # torch reads it when first imported
    try:
        import sys

        if "torch" in sys.modules:  # imported by the parent (tests): set it directly
            sys.modules["torch"].set_num_threads(threads)
        metrics = ctx.stage.load()(ctx) or {}
        connection.send(("ok", metrics))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent, which decides
        connection.send(("error", _picklable(exc)))
    finally:
        connection.close()


def _picklable(exc: BaseException) -> BaseException:
    """``exc`` when it survives pickling (``PipelineError``s do), else a ``WorkflowError`` carrying its traceback."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception
        text = "".join(traceback.format_exception(exc)).strip()
        return WorkflowError("E408", f"A stage failed with {type(exc).__name__}: {exc}\n{text}")
