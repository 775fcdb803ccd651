"""The stage runner: staleness with early cutoff, the lock file, and transactional stage runs.

A stage is *fresh* when what it depends on is what it saw when it last ran: the
same stage version, config section (fingerprinted keys), package versions, and the
same *content* in every input. Otherwise it is *stale*, with reasons such as
``config tokenize.split_mode changed`` or ``input data/tokens/knbc.jsonl changed``.

Early cutoff (as in Bazel or DVC): staleness compares content hashes, not "did the
upstream run". When an upstream stage reruns and writes byte-identical outputs, the
stages that read them stay fresh, with the note ``upstream tokenize reran, its outputs
are unchanged``. A stale upstream still makes its downstream stale ("upstream X is
stale": its outputs may change), and ``run`` re-checks each planned stage just before
running it, so a stage whose inputs came out unchanged is skipped.

A stage never writes its declared outputs in place. It writes into a staging
directory (``ctx.output(path)``); only when the stage function returns does the
runner move every output into place, hash it once, and rewrite ``jpipe.lock``
atomically. A failing or interrupted stage leaves the outputs and the lock as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import WorkflowError
from pipeline.io import replace_dir, write_json
from pipeline.workflow.hashing import FileHasher
from pipeline.workflow.lock import LOCK_FILENAME, LOCK_FORMAT, UNVERIFIED_PREFIX, migrate_v1, read_lock, write_lock
from pipeline.workflow.stage import Stage, StageContext

__all__ = ["LOCK_FILENAME", "LOCK_FORMAT", "FileHasher", "Runner", "Stage", "StageContext", "StageStatus"]

logger = logging.getLogger(__name__)

STATE_DIRNAME = ".jpipe"
RUNNING_FILENAME = "running.json"  # in .jpipe/: the stages a run is running now (for `jpipe status`)
FORCED = "forced"


@dataclass
class StageStatus:
    name: str
    fresh: bool
    reasons: list[str] = field(default_factory=list)
    # Why a fresh stage is fresh although something upstream reran (early cutoff).
    notes: list[str] = field(default_factory=list)
    last_run: str | None = None
    duration_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    running: bool = False  # a `jpipe run` is running this stage now
    interrupted: bool = False  # a run was running it when its process died (killed, or the machine went down)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": "fresh" if self.fresh else "stale",
            "running": self.running,
            "interrupted": self.interrupted,
            "reasons": self.reasons,
            "notes": self.notes,
            "last_run": self.last_run,
            "duration_s": self.duration_s,
            "metrics": self.metrics,
        }


@dataclass
class StageJob:
    """A stage about to run: what its inputs were when it started, and its staging directory."""

    name: str
    inputs: dict[str, str]
    current: _Current
    staging: Path
    ctx: StageContext
    started: float


@dataclass
class _Current:
    """What a stage depends on now (config view, input content hashes, package versions)."""

    config: dict[str, Any]
    inputs: dict[str, str | None]
    optional: dict[str, str | None]
    packages: dict[str, str | None]


def _fingerprint(*, version: int, current: _Current) -> str:
    """What the stage's last run was made of. Upstream runs are not part of it: content is."""
    payload = {"version": version, "config": current.config, "inputs": {**current.inputs, **current.optional}, "packages": current.packages}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _config_reasons(section: str | None, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    # A key "@other.key" is another section's setting that the stage also depends on.
    return [
        f"config {key[1:] if key.startswith('@') else f'{section}.{key}'} changed"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def _content_reason(kind: str, path: str, recorded: str | None, current: str | None, *, optional: bool = False) -> str | None:
    """The reason an input or output no longer matches the lock, or None when it does."""
    if current == recorded:
        return None
    if isinstance(recorded, str) and recorded.startswith(UNVERIFIED_PREFIX):
        return f"{kind} {path} unverifiable (lock format 1 recorded its file times, which changed)"
    if current is None:
        return f"{kind} {path} {'removed' if optional else 'missing'}"
    return f"{kind} {path} {'changed' if kind == 'input' else 'modified'}"


def _input_reasons(entry: dict[str, Any], current: _Current) -> list[str]:
    reasons = []
    recorded, optional = entry.get("inputs", {}), entry.get("optional_inputs", {})
    for path, digest in current.inputs.items():
        if path not in recorded and digest is not None:
            reasons.append(f"input {path} added")  # a new input (e.g. one more extra corpus)
        else:
            reasons.append(_content_reason("input", path, recorded.get(path), digest))
    for path, digest in current.optional.items():
        reasons.append(_content_reason("input", path, optional.get(path), digest, optional=True))
    return [reason for reason in reasons if reason]


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_size, info.st_mtime_ns


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed child its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: the state letter follows the command name in parentheses
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): signal 0 is all we know


def _staging_pid(name: str) -> int | None:
    """The process id a staging directory is named after (``<stage>-<pid>``, ``<stage>-rank<r>-<pid>``), or None."""
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if "-" in name and tail.isdigit() else None


def _package_reasons(old: dict[str, Any], new: dict[str, str | None]) -> list[str]:
    return [
        f"package {package} changed ({old.get(package)} -> {version})" for package, version in new.items() if old.get(package) != version
    ]


class Runner:
    """Decides what is stale and runs stages in dependency order."""

    def __init__(self, project_dir: str | os.PathLike, config: Config, stages: list[Stage] | None = None) -> None:
        if stages is None:
            from pipeline.workflow.stages import build_stages

            stages = build_stages(config)
        self.project_dir = Path(project_dir).resolve()
        self.config = config
        self.stages = {stage.name: stage for stage in stages}
        self.order = [stage.name for stage in stages]
        self.lock_path = self.project_dir / LOCK_FILENAME
        self.state_dir = self.project_dir / STATE_DIRNAME
        self._producer = {output: stage.name for stage in stages for output in stage.outputs}
        self._packages: dict[str, dict[str, str | None]] = {}
        self._running_since: dict[str, str] = {}
        # stage name -> how its function is called (default: in this process); e.g. data-parallel training
        self.executors: dict[str, Callable[[StageContext], dict | None]] = {}
        self.last_plan: list[tuple[str, list[str]]] | None = None  # what the last `run` planned (the run history records it)
        self._check_graph()
        self._load_lock()

    # ----------------------------------------------------------------- graph
    def _check_graph(self) -> None:
        position = {name: index for index, name in enumerate(self.order)}
        for stage in self.stages.values():
            for upstream in self.upstream(stage.name):
                if position[upstream] >= position[stage.name]:
                    raise WorkflowError("E405", f"Stage table out of order: {stage.name} reads an output of {upstream}, which comes later.")

    def upstream(self, name: str) -> list[str]:
        """Stages whose outputs ``name`` reads, in table order."""
        stage = self.stages[name]
        producers = {self._producer[path] for path in stage.input_paths(self.config) if path in self._producer}
        return [other for other in self.order if other in producers]

    def ancestors(self, name: str) -> list[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for upstream in self.upstream(stack.pop()):
                if upstream not in seen:
                    seen.add(upstream)
                    stack.append(upstream)
        return [other for other in self.order if other in seen]

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            from pipeline.workflow.stages import INACTIVE_STAGES

            if name in INACTIVE_STAGES:  # a stage only under some config
                reason, hint = INACTIVE_STAGES[name]
                raise WorkflowError("E401", f"{name} is not a stage of this project: {reason}.", hint=hint)
            raise WorkflowError("E401", f"Unknown stage '{name}'.", hint=f"Valid stages: {', '.join(self.order)}.")
        return self.stages[name]

    # ------------------------------------------------------------------ lock
    def _load_lock(self) -> None:
        """Read the lock (again: ``run`` re-reads it once it holds the project lock) and migrate format 1."""
        self._lock_stat = _stat_key(self.lock_path)
        self.lock = read_lock(self.lock_path)
        self.hasher = FileHasher(self.project_dir, self.lock.get("file_cache"))
        self.migrated = self.lock.get("format", 1) < LOCK_FORMAT
        self.unverified: list[str] = []
        if self.migrated:
            self.unverified = migrate_v1(self.lock, self.hasher)
            # status shows the unverifiable directories as reasons; `run` writes the upgraded lock
            logger.debug("jpipe.lock: read lock format 1 as %d; unverifiable: %s", LOCK_FORMAT, self.unverified or "none")

    def _write_lock(self) -> None:
        write_lock(self.lock_path, self.lock, self.hasher.cache)
        self._lock_stat = _stat_key(self.lock_path)
        self.migrated = False

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One `jpipe run` per project at a time; the OS drops the lock if the process dies."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / "run.lock", "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkflowError(
                    "E402", f"Another `jpipe run` is working in {self.project_dir}.", hint="Wait for it to finish, then try again."
                ) from None
            yield
        finally:
            handle.close()

    # ---------------------------------------------------------------- status
    def _current(self, name: str) -> _Current:
        stage = self.stages[name]
        if name not in self._packages:  # importlib.metadata scans sys.path: once per runner
            self._packages[name] = stage.package_versions()
        return _Current(
            config=stage.fingerprint_config(self.config),
            inputs={path: self.hasher.hash(path) for path in stage.input_paths(self.config)},
            optional={path: self.hasher.hash(path) for path in stage.optional_inputs},
            packages=self._packages[name],
        )

    def _fingerprint_of(self, name: str) -> str | None:
        return self.lock["stages"].get(name, {}).get("fingerprint")

    def stage_reasons(self, name: str, upstream_fresh: dict[str, bool]) -> tuple[list[str], list[str]]:
        """Why stage ``name`` is stale (empty when fresh), and notes on a fresh one.

        ``upstream_fresh`` holds the freshness of the stages before it in the table.
        """
        stage, entry = self.stages[name], self.lock["stages"].get(name)
        if entry is None:
            return ["never run"], []
        current = self._current(name)
        reasons = [f"upstream {up} is stale" for up in self.upstream(name) if not upstream_fresh[up]]
        if entry.get("version") != stage.version:
            reasons.append(f"stage version changed ({entry.get('version')} -> {stage.version})")
        reasons += _config_reasons(stage.section, entry.get("config", {}), current.config)
        reasons += _input_reasons(entry, current)
        reasons += _package_reasons(entry.get("packages", {}), current.packages)
        for path in stage.outputs:
            reasons.append(_content_reason("output", path, entry.get("outputs", {}).get(path), self.hasher.hash(path)))
        reasons = [reason for reason in reasons if reason]
        return reasons, self._cutoff_notes(name, entry, current, upstream_fresh)

    def _cutoff_notes(self, name: str, entry: dict[str, Any], current: _Current, upstream_fresh: dict[str, bool]) -> list[str]:
        """Notes on early cutoff: a fresh upstream reran since this stage ran, but what it read is unchanged."""
        notes = []
        for up in self.upstream(name):
            if not upstream_fresh[up] or entry.get("upstream", {}).get(up) == self._fingerprint_of(up):
                continue
            read = [path for path in current.inputs if self._producer.get(path) == up]
            if any(current.inputs[path] != entry.get("inputs", {}).get(path) for path in read):
                continue  # a changed input is a reason, not a note
            if len(read) == len(self.stages[up].outputs):
                notes.append(f"upstream {up} reran, its outputs are unchanged")
            else:
                notes.append(
                    f"upstream {up} reran, its output{'s' if len(read) > 1 else ''} {', '.join(read)} {'are' if len(read) > 1 else 'is'} unchanged"
                )
        return notes

    def status(self) -> list[StageStatus]:
        """Every stage, in table order, fresh or stale with reasons."""
        self.hasher.reset()  # files may have changed since the last call: stat them again
        statuses: list[StageStatus] = []
        fresh: dict[str, bool] = {}
        running, interrupted = self.running(), self.interrupted()
        for name in self.order:
            reasons, notes = self.stage_reasons(name, fresh)
            fresh[name] = not reasons
            entry = self.lock["stages"].get(name) or {}
            statuses.append(
                StageStatus(
                    name=name,
                    fresh=not reasons,
                    reasons=reasons,
                    notes=notes,
                    last_run=entry.get("finished_at"),
                    duration_s=entry.get("duration_s"),
                    metrics=entry.get("metrics", {}),
                    running=name in running,
                    interrupted=name in interrupted,
                )
            )
        return statuses

    # ------------------------------------------------------------------- run
    def plan(self, target: str | None = None, *, force: bool = False) -> list[tuple[str, list[str]]]:
        """The stages a run would execute, each with why (``forced`` when only ``force`` asks for it).

        A stage stale only because an upstream is stale may still be skipped by ``run``
        when that upstream's outputs come out unchanged.
        """
        statuses = {status.name: status for status in self.status()}
        if target is None:
            return [(n, statuses[n].reasons or [FORCED]) for n in self.order if force or not statuses[n].fresh]
        self.stage(target)
        plan = [(n, statuses[n].reasons) for n in self.ancestors(target) if not statuses[n].fresh]
        if force or not statuses[target].fresh:
            plan.append((target, statuses[target].reasons or [FORCED]))
        return plan

    def run(
        self,
        target: str | None = None,
        *,
        force: bool = False,
        resume: bool = False,
        on_stage_start: Callable[[str, list[str]], None] | None = None,
        on_stage_end: Callable[[str, float, dict], None] | None = None,
        on_stage_skip: Callable[[str, list[str]], None] | None = None,
        on_stage_fail: Callable[[str, BaseException], None] | None = None,
        jobs: int = 1,
    ) -> list[str]:
        """Run what is stale (up to ``target``); returns the names of the stages that ran.

        Each planned stage is checked again just before it runs: if the stages run before
        it wrote the same bytes as last time, it is fresh and skipped (``on_stage_skip``
        gets its notes). With ``jobs`` > 1, stages whose upstream stages are done run side
        by side in forked processes (``pipeline.workflow.parallel``); a failing stage stops
        only its downstream stages, and its error is raised once the others have finished.
        """
        callbacks = {"start": on_stage_start, "end": on_stage_end, "skip": on_stage_skip, "fail": on_stage_fail}
        with self.exclusive():
            if _stat_key(self.lock_path) != self._lock_stat:
                self._load_lock()  # another run finished since this runner read the lock
            if self.migrated:
                self._write_lock()
            self.remove_dead_staging()
            forced = set(self.order) if force and target is None else {target} if force else set()
            plan = self.last_plan = self.plan(target, force=force)
            try:
                if jobs > 1:
                    from pipeline.workflow.parallel import run_parallel

                    return run_parallel(self, plan, jobs=jobs, resume=resume, forced=forced, callbacks=callbacks)
                return self._run_sequential(plan, resume=resume, forced=forced, callbacks=callbacks)
            finally:
                self.set_running({})

    def recheck(self, name: str, forced: set[str], on_skip: Callable[[str, list[str]], None] | None) -> list[str] | None:
        """Stage ``name``'s reasons to run now that stages before it ran, or None (after ``on_skip``) when it came out fresh."""
        current = {status.name: status for status in self.status()}[name]
        if current.fresh and name not in forced:
            if on_skip:
                on_skip(name, current.notes)
            else:
                logger.info("%s is fresh: %s", name, "; ".join(current.notes) or "its inputs are unchanged")
            return None
        return current.reasons or [FORCED]

    def _run_sequential(self, plan: list[tuple[str, list[str]]], *, resume: bool, forced: set[str], callbacks: dict) -> list[str]:
        ran: list[str] = []
        for name, reasons in plan:
            if ran:  # what ran before may have cut this stage off: check it again
                reasons = self.recheck(name, forced, callbacks["skip"])
                if reasons is None:
                    continue
            if callbacks["start"]:
                callbacks["start"](name, reasons)
            self.set_running({name: os.getpid()})
            try:
                seconds, metrics = self._run_one(name, resume=resume)
            except BaseException as exc:
                if callbacks["fail"]:
                    callbacks["fail"](name, exc)
                raise
            ran.append(name)
            if callbacks["end"]:
                callbacks["end"](name, seconds, metrics)
        return ran

    # ------------------------------------------------------- running stages
    def set_running(self, stages: dict[str, int]) -> None:
        """Record which stages run now (name -> process id) for ``status``; an empty dict removes the record."""
        path = self.state_dir / RUNNING_FILENAME
        if not stages:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        started = {name: self._running_since.get(name) or datetime.now(UTC).isoformat(timespec="seconds") for name in stages}
        self._running_since = started
        write_json(path, {"pid": os.getpid(), "stages": {name: {"pid": pid, "started_at": started[name]} for name, pid in stages.items()}})

    def _running_record(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """(whether the recording run is alive, its stages) from ``.jpipe/running.json``; (False, {}) when none."""
        try:
            with open(self.state_dir / RUNNING_FILENAME, encoding="utf-8") as handle:
                record = json.load(handle)
            return _alive(int(record["pid"])), dict(record["stages"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False, {}

    def running(self) -> dict[str, dict[str, Any]]:
        """The stages a `jpipe run` in this project is running now (name -> pid, started_at); {} when none runs."""
        alive, stages = self._running_record()
        return stages if alive else {}

    def interrupted(self) -> dict[str, dict[str, Any]]:
        """The stages a run was running when its process died (name -> pid, started_at); the next run clears them."""
        alive, stages = self._running_record()
        return {} if alive else stages

    def remove_dead_staging(self) -> list[str]:
        """Remove the staging directories of processes that died mid-stage (``kill -9``); returns their names.

        Called under the project lock, so no live run of this project is writing one of them.
        """
        root = self.state_dir / "staging"
        dead = sorted(
            path.name
            for path in (root.iterdir() if root.is_dir() else [])
            if (pid := _staging_pid(path.name)) is not None and pid != os.getpid() and not _alive(pid)
        )
        for name in dead:
            shutil.rmtree(root / name, ignore_errors=True)
        if dead:
            logger.warning(
                "Removed %d staging director%s of a killed run: %s", len(dead), "y" if len(dead) == 1 else "ies", ", ".join(dead)
            )
        return dead

    def _hash_inputs(self, name: str) -> dict[str, str]:
        """Content hashes of the inputs as the stage starts: what it reads is what the lock records."""
        stage, inputs = self.stages[name], {}
        for path in stage.input_paths(self.config):
            digest = self.hasher.hash(path)
            if digest is None:
                producer = self._producer.get(path)
                hint = f"Run `jpipe run {producer}` first." if producer else f"Check the paths in the {stage.section} config section."
                raise WorkflowError("E404", f"Stage {name}: input {path} is missing.", hint=hint)
            inputs[path] = digest
        return inputs

    def _commit(self, stage: Stage, staging: Path) -> None:
        """Move every staged output into place (each a rename: the old or the new, never a mixture)."""
        missing = [path for path in stage.outputs if not (staging / path).exists()]
        if missing:
            raise WorkflowError("E407", f"Stage {stage.name} finished without writing {', '.join(missing)}.")
        for path in stage.outputs:
            source, target = staging / path, self.project_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                replace_dir(source, target)
            else:
                os.replace(source, target)

    def _run_one(self, name: str, *, resume: bool) -> tuple[float, dict]:
        job = self.prepare(name, resume=resume)
        try:
            execute = self.executors.get(name)
            metrics = (execute(job.ctx) if execute else job.ctx.stage.load()(job.ctx)) or {}
        except BaseException:
            shutil.rmtree(job.staging, ignore_errors=True)
            raise
        return self.finish(job, metrics)

    def prepare(self, name: str, *, resume: bool) -> StageJob:
        """Hash the inputs of stage ``name`` and make its empty staging directory: what it reads is what the lock records."""
        stage = self.stages[name]
        self.hasher.reset()
        inputs = self._hash_inputs(name)
        current = self._current(name)
        staging = self.state_dir / "staging" / f"{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        work_dir = self.state_dir / "work" / name
        work_dir.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(
            stage=stage, project_dir=self.project_dir, config=self.config, staging_dir=staging, work_dir=work_dir, resume=resume
        )
        return StageJob(name=name, inputs=inputs, current=current, staging=staging, ctx=ctx, started=time.perf_counter())

    def finish(self, job: StageJob, metrics: dict) -> tuple[float, dict]:
        """Move the staged outputs of a stage function that returned ``metrics`` into place and record them in the lock."""
        name, stage, current, inputs = job.name, self.stages[job.name], job.current, job.inputs
        try:
            self._commit(stage, job.staging)
        finally:
            shutil.rmtree(job.staging, ignore_errors=True)
        seconds = time.perf_counter() - job.started
        self.hasher.reset()  # the outputs are new: hash them now, once (later checks only stat them)
        self.lock["stages"][name] = {
            "fingerprint": _fingerprint(version=stage.version, current=current),
            "version": stage.version,
            "config": current.config,
            "inputs": inputs,
            "optional_inputs": current.optional,
            "packages": current.packages,
            "outputs": {path: self.hasher.hash(path) for path in stage.outputs},
            "upstream": {up: self._fingerprint_of(up) for up in self.upstream(name)},
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(seconds, 3),
            "metrics": metrics,
        }
        self._write_lock()
        return seconds, metrics
