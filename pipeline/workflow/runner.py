"""The stage runner: staleness, the lock file, and transactional stage runs.

A stage is *fresh* when its recorded fingerprint still describes the world:
same stage version, same config section, same input files, same upstream runs,
and its outputs are where it left them. Otherwise it is *stale*, with reasons
such as ``config tokenize.split_mode changed`` or ``upstream prepare reran``.

A stage never writes its declared outputs in place. It writes into a staging
directory (``ctx.output(path)``); only when the stage function returns does
the runner move every output into place and then rewrite ``jpipe.lock``
atomically. A failing or interrupted stage therefore leaves the previous
outputs and the lock exactly as they were.

File hashes are cached in the lock by (size, mtime), so checking a fresh
project costs a few ``stat`` calls, not a re-read of every artifact.
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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.config import Config
from pipeline.workflow.stage import Stage, StageContext
from pipeline.errors import PipelineError
from pipeline.io import replace_dir, sha256_file, write_json

logger = logging.getLogger(__name__)

LOCK_FILENAME = "jpipe.lock"
STATE_DIRNAME = ".jpipe"
LOCK_FORMAT = 1


@dataclass
class StageStatus:
    name: str
    fresh: bool
    reasons: list[str] = field(default_factory=list)
    last_run: str | None = None
    duration_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": "fresh" if self.fresh else "stale",
            "reasons": self.reasons,
            "last_run": self.last_run,
            "duration_s": self.duration_s,
            "metrics": self.metrics,
        }


class FileHasher:
    """Content hashes of files and directories, cached by (size, mtime_ns)."""

    def __init__(self, project_dir: Path, cache: dict[str, dict[str, Any]] | None = None) -> None:
        self.project_dir = project_dir
        self.cache = dict(cache or {})

    def _abs(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.project_dir / path

    def hash(self, relative: str) -> str | None:
        """sha256 of a file, or of a directory's (path, size, mtime) listing; None when missing."""
        path = self._abs(relative)
        if path.is_dir():
            digest = hashlib.sha256()
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                stat = child.stat()
                digest.update(f"{child.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            return "dir:" + digest.hexdigest()
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        cached = self.cache.get(relative)
        if cached and cached["size"] == stat.st_size and cached["mtime_ns"] == stat.st_mtime_ns:
            return cached["sha256"]
        sha = sha256_file(path)
        self.cache[relative] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
        return sha


def _fingerprint(*, version: int, config: dict, inputs: dict, upstream: dict) -> str:
    payload = json.dumps({"version": version, "config": config, "inputs": inputs, "upstream": upstream}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


class Runner:
    """Decides what is stale and runs stages in dependency order."""

    def __init__(self, project_dir: str | os.PathLike, config: Config, stages: list[Stage] | None = None) -> None:
        if stages is None:
            from pipeline.workflow.stages import STAGES

            stages = STAGES
        self.project_dir = Path(project_dir).resolve()
        self.config = config
        self.stages = {stage.name: stage for stage in stages}
        self.order = [stage.name for stage in stages]
        self.lock_path = self.project_dir / LOCK_FILENAME
        self.state_dir = self.project_dir / STATE_DIRNAME
        self.lock = self._read_lock()
        self.hasher = FileHasher(self.project_dir, self.lock.get("file_cache"))
        self._producer = {output: stage.name for stage in stages for output in stage.outputs}
        self._check_graph()

    # ----------------------------------------------------------------- graph
    def _check_graph(self) -> None:
        position = {name: index for index, name in enumerate(self.order)}
        for stage in self.stages.values():
            for upstream in self.upstream(stage.name):
                if position[upstream] >= position[stage.name]:
                    raise RuntimeError(f"stage table out of order: {stage.name} reads an output of {upstream}")

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
            raise PipelineError(f"Unknown stage '{name}'.", hint=f"Valid stages: {', '.join(self.order)}.")
        return self.stages[name]

    # ------------------------------------------------------------------ lock
    def _read_lock(self) -> dict[str, Any]:
        if not self.lock_path.exists():
            return {"format": LOCK_FORMAT, "stages": {}, "file_cache": {}}
        try:
            with open(self.lock_path, encoding="utf-8") as handle:
                lock = json.load(handle)
        except (json.JSONDecodeError, OSError) as exc:
            raise PipelineError(
                f"{self.lock_path} is unreadable ({exc}).", hint="Delete it and run `jpipe run` to rebuild what is stale."
            ) from None
        lock.setdefault("stages", {})
        lock.setdefault("file_cache", {})
        return lock

    def _write_lock(self) -> None:
        self.lock["format"] = LOCK_FORMAT
        self.lock["jpipe_version"] = __version__
        # keep only cache entries for files a stage still references
        referenced = {path for entry in self.lock["stages"].values() for part in ("inputs", "optional_inputs", "outputs") for path in entry.get(part, {})}
        self.lock["file_cache"] = {path: value for path, value in self.hasher.cache.items() if path in referenced}
        write_json(self.lock_path, self.lock, indent=1)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """One `jpipe run` per project at a time; the OS drops the lock if the process dies."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / "run.lock", "a+")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PipelineError(
                    f"Another `jpipe run` is working in {self.project_dir}.", hint="Wait for it to finish, then try again."
                ) from None
            yield
        finally:
            handle.close()

    # ---------------------------------------------------------------- status
    def _current(self, name: str) -> tuple[dict, dict, dict, dict, dict]:
        stage = self.stages[name]
        config_view = self.config.fingerprint_view(stage.section) if stage.section else {}
        inputs = {path: self.hasher.hash(path) for path in stage.input_paths(self.config)}
        optional = {path: self.hasher.hash(path) for path in stage.optional_inputs}
        upstream = {up: self.lock["stages"].get(up, {}).get("fingerprint") for up in self.upstream(name)}
        return config_view, inputs, optional, upstream, stage.package_versions()

    def status(self) -> list[StageStatus]:
        statuses: dict[str, StageStatus] = {}
        for name in self.order:
            stage = self.stages[name]
            entry = self.lock["stages"].get(name)
            config_view, inputs, optional, upstream, packages = self._current(name)
            reasons: list[str] = []
            if entry is None:
                reasons.append("never run")
            else:
                for up, fingerprint in upstream.items():
                    if not statuses[up].fresh:
                        reasons.append(f"upstream {up} is stale")
                    elif entry.get("upstream", {}).get(up) != fingerprint:
                        reasons.append(f"upstream {up} reran")
                if entry.get("version") != stage.version:
                    reasons.append(f"stage version changed ({entry.get('version')} -> {stage.version})")
                old_config = entry.get("config", {})
                for key in sorted(set(old_config) | set(config_view)):
                    if old_config.get(key) != config_view.get(key):
                        reasons.append(f"config {stage.section}.{key} changed")
                # An input produced by an upstream that reran is already explained by that reason.
                explained = {path for up in upstream for path in self.stages[up].outputs if any(r.startswith(f"upstream {up} ") for r in reasons)}
                for path, digest in inputs.items():
                    if digest is None:
                        reasons.append(f"input {path} missing")
                    elif digest != entry.get("inputs", {}).get(path) and path not in explained:
                        reasons.append(f"input {path} changed")
                for path, digest in optional.items():
                    if digest != entry.get("optional_inputs", {}).get(path):
                        reasons.append(f"input {path} {'removed' if digest is None else 'changed'}")
                for package, version in packages.items():
                    old_version = entry.get("packages", {}).get(package)
                    if version != old_version:
                        reasons.append(f"package {package} changed ({old_version} -> {version})")
                for path in stage.outputs:
                    digest = self.hasher.hash(path)
                    if digest is None:
                        reasons.append(f"output {path} missing")
                    elif digest != entry.get("outputs", {}).get(path):
                        reasons.append(f"output {path} modified")
            statuses[name] = StageStatus(
                name=name,
                fresh=not reasons,
                reasons=reasons,
                last_run=(entry or {}).get("finished_at"),
                duration_s=(entry or {}).get("duration_s"),
                metrics=(entry or {}).get("metrics", {}),
            )
        return [statuses[name] for name in self.order]

    # ------------------------------------------------------------------- run
    def plan(self, target: str | None = None, *, force: bool = False) -> list[tuple[str, list[str]]]:
        """The stages a run would execute, each with why."""
        statuses = {status.name: status for status in self.status()}
        if target is None:
            names = self.order
            return [(n, statuses[n].reasons or ["--force"]) for n in names if force or not statuses[n].fresh]
        self.stage(target)
        plan = [(n, statuses[n].reasons) for n in self.ancestors(target) if not statuses[n].fresh]
        if force or not statuses[target].fresh:
            plan.append((target, statuses[target].reasons or ["--force"]))
        return plan

    def run(
        self,
        target: str | None = None,
        *,
        force: bool = False,
        resume: bool = False,
        on_stage_start: Callable[[str, list[str]], None] | None = None,
        on_stage_end: Callable[[str, float, dict], None] | None = None,
    ) -> list[str]:
        """Run what is stale (up to ``target``); returns the names of the stages that ran."""
        with self.exclusive():
            plan = self.plan(target, force=force)
            for name, reasons in plan:
                if on_stage_start:
                    on_stage_start(name, reasons)
                seconds, metrics = self._run_one(name, resume=resume)
                if on_stage_end:
                    on_stage_end(name, seconds, metrics)
            return [name for name, _ in plan]

    def _run_one(self, name: str, *, resume: bool) -> tuple[float, dict]:
        stage = self.stages[name]
        config_view, _, optional, upstream, packages = self._current(name)
        # Hash inputs as they are when the stage starts: what it read is what we record.
        inputs = {}
        for path in stage.input_paths(self.config):
            digest = self.hasher.hash(path)
            if digest is None:
                producer = self._producer.get(path)
                hint = f"Run `jpipe run {producer}` first." if producer else "Check the path in the config."
                raise PipelineError(f"Stage {name}: input {path} is missing.", hint=hint)
            inputs[path] = digest
        staging = self.state_dir / "staging" / f"{name}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        work_dir = self.state_dir / "work" / name
        work_dir.mkdir(parents=True, exist_ok=True)
        ctx = StageContext(stage=stage, project_dir=self.project_dir, config=self.config, staging_dir=staging, work_dir=work_dir, resume=resume)
        started = time.perf_counter()
        try:
            metrics = stage.load()(ctx) or {}
            missing = [path for path in stage.outputs if not (staging / path).exists()]
            if missing:
                raise RuntimeError(f"stage {name} finished without writing {', '.join(missing)}")
            for path in stage.outputs:
                source, target = staging / path, self.project_dir / path
                target.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    replace_dir(source, target)
                else:
                    os.replace(source, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        seconds = time.perf_counter() - started
        outputs = {path: self.hasher.hash(path) for path in stage.outputs}
        self.lock["stages"][name] = {
            "fingerprint": _fingerprint(version=stage.version, config=config_view, inputs={**inputs, **optional, **packages}, upstream=upstream),
            "version": stage.version,
            "config": config_view,
            "inputs": inputs,
            "optional_inputs": optional,
            "packages": packages,
            "outputs": outputs,
            "upstream": upstream,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(seconds, 3),
            "metrics": metrics,
        }
        self._write_lock()
        return seconds, metrics
