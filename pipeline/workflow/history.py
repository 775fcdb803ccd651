"""Run history: one row per `jpipe run` (and per `jpipe tune`) in ``<project>/.jpipe/history.db``.

Each row holds a run id (``YYMMDD-HHMMSS-xxxx``: sortable, short), start and end time, status
(``ok``, ``failed``, ``interrupted``), the config fingerprint (a hash of every setting that decides
what the stages produce, as the stage fingerprints count them: no git, no file times) and the whole
effective config as JSON, which stages ran and which were fresh, and the headline metrics
(:func:`pipeline.evaluation.headline.headline_metrics`, read from the project's report files when the
run ended). `jpipe metrics history` lists the rows, `jpipe metrics diff` compares two of them.

Stdlib ``sqlite3`` in WAL mode, so a `jpipe tune` and a `jpipe run` can append at the same time; a
``schema_version`` table lets a later jpipe migrate the file (and this one refuse a newer one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import WorkflowError

logger = logging.getLogger(__name__)

HISTORY_PATH = ".jpipe/history.db"  # under the project directory (the runner's state directory)
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    duration_s REAL,
    fingerprint TEXT,
    config TEXT NOT NULL,
    stages TEXT NOT NULL,
    command TEXT NOT NULL,
    details TEXT NOT NULL,
    error TEXT,
    jpipe_version TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_seq INTEGER NOT NULL REFERENCES runs(seq),
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (run_seq, name)
);
"""
_RUN_COLUMNS = ("id", "kind", "status", "started_at", "finished_at", "duration_s", "fingerprint", "config", "stages", "command")
_JSON_COLUMNS = ("config", "stages", "command", "details")


@dataclass
class RunRecord:
    """One history row. ``config`` is the effective config (``section -> key -> value``); ``metrics`` is flat."""

    id: str
    kind: str  # "run" or "tune"
    status: str  # "ok", "failed" or "interrupted"
    started_at: str
    finished_at: str
    duration_s: float | None = None
    fingerprint: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    command: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    jpipe_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def history_path(project_dir: str | Path) -> Path:
    return Path(project_dir) / HISTORY_PATH


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def new_run_id(when: datetime | None = None) -> str:
    """``YYMMDD-HHMMSS-xxxx`` (UTC, 4 random hex digits): ids sort by start time and stay short."""
    return f"{(when or datetime.now(UTC)):%y%m%d-%H%M%S}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------- config
def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_fingerprint(config) -> str:
    """A hash of every setting that decides what the stages produce (the keys each stage fingerprints), 12 hex digits.

    Settings outside the stage fingerprint (threads, devices, the corpus URL, [serve], [tracking]) leave it
    unchanged, as do disabled tasks; a profile counts through the values it sets.
    """
    from pipeline.config.tasks import data_view

    view: dict[str, Any] = {name: config.fingerprint_view(name) for name in config.sections}
    for name in config.task_names:
        view[f"tasks.{name}"] = {**config.fingerprint_view(f"tasks.{name}.classifier"), **data_view(config.task(name))}
    payload = json.dumps(view, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


def config_record(config) -> dict[str, Any]:
    """The effective config as JSON: every section and task, and the profiles applied."""
    return {"profile": list(config.profiles), **config.to_dict()}


# ---------------------------------------------------------------- store
def _corrupt(path: Path, exc: BaseException) -> BaseException:
    """E412 for a damaged file; a busy database (locked past the 30 s timeout) stays what it is."""
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return exc
    return WorkflowError(
        "E412",
        f"The run history {path} is damaged or not a jpipe history ({exc}).",
        hint=f"Move it away (mv {path} {path}.bad): the next `jpipe run` starts a new history.",
    )


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    conn.executescript(_SCHEMA)
    rows = conn.execute("SELECT version FROM schema_version").fetchall()
    if not rows:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif max(row[0] for row in rows) > SCHEMA_VERSION:
        raise WorkflowError(
            "E413",
            f"The run history {path} has schema version {max(row[0] for row in rows)}; this jpipe reads up to {SCHEMA_VERSION}.",
            hint="Upgrade jpipe (pip install -U jpipe), or move the file away to start a new history.",
        )
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    missing = [name for name in (*_RUN_COLUMNS, "details", "error") if name not in columns]
    if missing:
        raise sqlite3.DatabaseError(f"table runs lacks {', '.join(missing)}")


@contextlib.contextmanager
def connect(project_dir: str | Path, *, create: bool) -> Iterator[sqlite3.Connection]:
    """An open history (WAL, schema checked). ``create=False``: E410 when the project has none yet."""
    path = history_path(project_dir)
    if not path.exists():
        if not create:
            raise _no_history(project_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30)
    try:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                _check_schema(conn, path)
        except sqlite3.DatabaseError as exc:
            raise _corrupt(path, exc) from None
        yield conn
    finally:
        conn.close()


def _no_history(project_dir: str | Path) -> WorkflowError:
    return WorkflowError(
        "E410",
        f"No run history yet in {Path(project_dir)}.",
        hint="Run `jpipe run` first: every run (and every `jpipe tune`) appends a row to .jpipe/history.db.",
    )


def append(project_dir: str | Path, record: RunRecord) -> RunRecord:
    """Append ``record`` (and its metrics) to the project's history, creating the file if needed."""
    path = history_path(project_dir)
    values = [getattr(record, name) for name in _RUN_COLUMNS]
    values = [
        json.dumps(v, ensure_ascii=False, default=str) if n in _JSON_COLUMNS else v for n, v in zip(_RUN_COLUMNS, values, strict=True)
    ]
    with connect(project_dir, create=True) as conn:
        try:
            with conn:
                cursor = conn.execute(
                    f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}, details, error, jpipe_version) "
                    f"VALUES ({', '.join('?' * (len(_RUN_COLUMNS) + 3))})",
                    (*values, json.dumps(record.details, ensure_ascii=False, default=str), record.error, record.jpipe_version),
                )
                conn.executemany(
                    "INSERT INTO metrics (run_seq, name, value) VALUES (?, ?, ?)",
                    [(cursor.lastrowid, name, float(value)) for name, value in record.metrics.items()],
                )
        except sqlite3.DatabaseError as exc:
            raise _corrupt(path, exc) from None
    return record


def _record(row: sqlite3.Row, metrics: dict[str, float]) -> RunRecord:
    data = {key: row[key] for key in row.keys() if key != "seq"}
    for name in _JSON_COLUMNS:
        data[name] = json.loads(data[name]) if data[name] else {}
    return RunRecord(**data, metrics=metrics)


def read_runs(project_dir: str | Path, *, limit: int | None = None) -> list[RunRecord]:
    """The history's rows, oldest first (the last ``limit`` rows when given); E410 when there are none."""
    path = history_path(project_dir)
    with connect(project_dir, create=False) as conn:
        conn.row_factory = sqlite3.Row
        try:
            query = "SELECT * FROM runs ORDER BY seq DESC" + (" LIMIT ?" if limit else "")
            rows = list(reversed(conn.execute(query, (limit,) if limit else ()).fetchall()))
            metrics: dict[int, dict[str, float]] = {row["seq"]: {} for row in rows}
            if rows:
                for seq, name, value in conn.execute("SELECT run_seq, name, value FROM metrics WHERE run_seq >= ?", (rows[0]["seq"],)):
                    if seq in metrics:
                        metrics[seq][name] = value
            records = [_record(row, dict(sorted(metrics[row["seq"]].items()))) for row in rows]
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            raise _corrupt(path, exc) from None
    if not records:
        raise _no_history(project_dir)
    return records


def resolve(runs: list[RunRecord], ref: str) -> RunRecord:
    """A run by id, unique id prefix, or negative index (``-1`` the last run, ``-2`` the one before); E411 otherwise."""
    text = ref.strip()
    if text.lstrip("-").isdigit() and text.startswith("-"):
        index = int(text)
        if -len(runs) <= index <= -1:
            return runs[index]
    else:
        exact = [run for run in runs if run.id == text]
        found = exact or [run for run in runs if text and run.id.startswith(text)]
        if len(found) == 1:
            return found[0]
    recent = ", ".join(run.id for run in runs[-5:][::-1])
    raise WorkflowError(
        "E411",
        f"No run '{ref}' in the history (it holds {len(runs)} run{'s' if len(runs) != 1 else ''}).",
        hint=f"Name a run by its id (or a unique start of it) or by position: -1 is the last run, -2 the one before. Recent runs: {recent}.",
    )


# ---------------------------------------------------------------- diff
def _change(old: float | None, new: float | None) -> float | None:
    return None if old is None or new is None else round(new - old, 10)


def fingerprinted(key: str) -> bool | None:
    """Whether config key ``key`` (flattened) counts in the config fingerprint; None when not a config key (``params.*``)."""
    from pipeline.config import SCHEMA, ClassifierSection, TaskSection

    section, _, name = key.partition(".")
    if section in SCHEMA:
        return SCHEMA[section][name].fingerprint if name in SCHEMA[section] else None
    parts = key.split(".")
    if section == "tasks" and len(parts) == 3 and parts[2] in TaskSection.settings():
        return TaskSection.settings()[parts[2]].fingerprint
    if section == "tasks" and len(parts) == 4 and parts[2] == "classifier" and parts[3] in ClassifierSection.settings():
        return ClassifierSection.settings()[parts[3]].fingerprint
    return None


def diff_runs(old: RunRecord, new: RunRecord, *, all_metrics: bool = False) -> dict[str, Any]:
    """What changed from run ``old`` to run ``new``: metrics (``all_metrics``: unchanged ones too) and config keys.

    Config keys compare the flattened effective configs (``section.key``, ``tasks.NAME.key``), and for a
    tune row its best parameters (``params.KEY``).
    """
    metrics = []
    for name in sorted(set(old.metrics) | set(new.metrics)):
        before, after = old.metrics.get(name), new.metrics.get(name)
        if all_metrics or before != after:
            metrics.append({"metric": name, "old": before, "new": after, "change": _change(before, after)})
    flat_old = {**flatten(old.config), **flatten(old.details.get("params") or {}, "params.")}
    flat_new = {**flatten(new.config), **flatten(new.details.get("params") or {}, "params.")}
    missing = object()
    config = [
        {"key": key, "old": flat_old.get(key), "new": flat_new.get(key), "fingerprinted": fingerprinted(key)}
        for key in sorted(set(flat_old) | set(flat_new))
        if flat_old.get(key, missing) != flat_new.get(key, missing)
    ]
    return {
        "old": {"id": old.id, "kind": old.kind, "status": old.status, "fingerprint": old.fingerprint, "finished_at": old.finished_at},
        "new": {"id": new.id, "kind": new.kind, "status": new.status, "fingerprint": new.fingerprint, "finished_at": new.finished_at},
        "same_fingerprint": old.fingerprint is not None and old.fingerprint == new.fingerprint,
        "metrics": metrics,
        "config": config,
    }


def pick_pair(runs: list[RunRecord], a: str | None, b: str | None) -> tuple[RunRecord, RunRecord]:
    """``metrics diff``'s two runs: B defaults to the last run; A to the last run of B's kind before B (a run, a tune),
    else the run just before B."""
    new = resolve(runs, b) if b is not None else runs[-1]
    if a is not None:
        return resolve(runs, a), new
    position = next(index for index, run in enumerate(runs) if run.id == new.id)
    before = [run for run in runs[:position] if run.kind == new.kind] or runs[:position]
    if not before:
        raise WorkflowError(
            "E411",
            f"Run {new.id} is the first run in the history: there is no run before it to compare with.",
            hint="Name both runs (e.g. `jpipe metrics diff -2 -1`), or run `jpipe run` again to have two.",
        )
    return before[-1], new


# ---------------------------------------------------------------- recording
def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jpipe")
    except PackageNotFoundError:
        return None


def _error_text(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{code}: {message}" if code else f"{type(exc).__name__}: {message}"


def _duration(started: str, finished: str) -> float | None:
    try:
        return round((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds(), 1)
    except (TypeError, ValueError):  # a start time without a time zone
        return None


def save(project_dir: str | Path, record: RunRecord, *, config=None) -> RunRecord | None:
    """Append ``record``, then log it to MLflow when ``config`` sets ``tracking.mlflow_uri``.

    Never raises: the run or study it records is over, and its outputs are in place. A history that
    cannot be written, or an MLflow server that cannot be reached, is a warning (with the error's hint).
    """
    from pipeline.errors import PipelineError

    try:
        append(project_dir, record)
    except (PipelineError, OSError, sqlite3.Error) as exc:
        logger.warning("Run %s not recorded in the run history: %s", record.id, exc)
        return None
    if config is not None and config["tracking"]["mlflow_uri"]:
        from pipeline.workflow.tracking import log_record

        try:
            log_record(project_dir=Path(project_dir), record=record, section=config["tracking"])
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the run itself succeeded
            logger.warning("Run %s not logged to MLflow (%s): %s", record.id, config["tracking"]["mlflow_uri"], _error_text(exc))
    return record


class RunRecorder:
    """Collects what one `jpipe run` did (through the runner's callbacks) and appends it to the history."""

    def __init__(self, runner, *, target: str | None, force: bool) -> None:
        self.runner, self.target, self.force = runner, target, force
        self.started_at = now_iso()
        self.id = new_run_id(datetime.fromisoformat(self.started_at))
        self.ran: list[str] = []
        self.cut_off: list[str] = []
        self.failed: list[str] = []

    def callbacks(self, printers: dict[str, Any] | None = None) -> dict[str, Any]:
        """``Runner.run`` callbacks that note each stage, then call ``printers``' (the CLI's progress lines)."""
        printers = printers or {}
        notes = {"on_stage_end": self.ran, "on_stage_skip": self.cut_off, "on_stage_fail": self.failed}

        def wrap(name: str):
            def callback(stage: str, *args: Any) -> None:
                notes[name].append(stage)
                if printers.get(name):
                    printers[name](stage, *args)

            return callback

        return {**printers, **{name: wrap(name) for name in notes}}

    def stages(self) -> dict[str, Any]:
        """ran / cut off (fresh once upstream wrote the same bytes) / failed / not reached / fresh (not planned)."""
        runner = self.runner
        planned = [name for name, _ in (getattr(runner, "last_plan", None) or [])]
        if self.target is None:
            considered = list(runner.order)
        else:
            considered = [*runner.ancestors(self.target), self.target] if self.target in runner.stages else []
        done = {*self.ran, *self.cut_off, *self.failed}
        return {
            "target": self.target,
            "force": self.force,
            "ran": self.ran,
            "cut_off": self.cut_off,
            "failed": self.failed,
            "not_reached": [name for name in planned if name not in done],
            "fresh": [name for name in considered if name not in planned],
        }

    def record(self, *, status: str, error: str | None = None) -> RunRecord | None:
        from pipeline.evaluation.headline import headline_metrics

        config, finished = self.runner.config, now_iso()
        record = RunRecord(
            id=self.id,
            kind="run",
            status=status,
            started_at=self.started_at,
            finished_at=finished,
            duration_s=_duration(self.started_at, finished),
            fingerprint=config_fingerprint(config),
            config=config_record(config),
            stages=self.stages(),
            command={"target": self.target, "force": self.force, "overrides": dict(config.overrides), "profile": list(config.profiles)},
            error=error,
            jpipe_version=_version(),
            metrics=headline_metrics(self.runner.project_dir, tasks=config.task_names),
        )
        return save(self.runner.project_dir, record, config=config)


@contextlib.contextmanager
def recorded_run(runner, *, target: str | None = None, force: bool = False) -> Iterator[RunRecorder]:
    """``with recorded_run(runner) as rec: runner.run(..., **rec.callbacks())``: one history row when the block ends.

    Status ``ok``, ``failed`` (the error's code and message) or ``interrupted`` (Ctrl-C). With
    ``tracking.mlflow_uri`` set, a missing MLflow is an error before anything runs (E110).
    """
    if runner.config["tracking"]["mlflow_uri"]:
        from pipeline.workflow.tracking import require_mlflow

        require_mlflow(runner.config["tracking"]["mlflow_uri"])
    recorder = RunRecorder(runner, target=target, force=force)
    try:
        yield recorder
    except KeyboardInterrupt:
        recorder.record(status="interrupted", error="interrupted (Ctrl-C)")
        raise
    except Exception as exc:
        recorder.record(status="failed", error=_error_text(exc))
        raise
    recorder.record(status="ok")


def record_tune(
    project_dir: str | Path,
    *,
    task: str,
    best_value: float | None,
    params: dict[str, Any],
    n_trials: int,
    metric: str = "dev_macro_f1",
    config=None,
    status: str = "ok",
    started_at: str | None = None,
    study: str | None = None,
    details: dict[str, Any] | None = None,
) -> RunRecord | None:
    """Append a ``tune`` row: a study of ``task`` after ``n_trials`` finished trials, its best ``metric`` and parameters.

    ``config`` (the project's effective config) adds the config fingerprint and JSON, and MLflow logging when
    ``tracking.mlflow_uri`` is set; ``started_at`` (ISO time) the study's start; ``study`` its name; ``details``
    anything else (pruned trials, the sampler). Never raises (a warning when the history cannot be written).
    Metrics: ``<task>.tune_best_<metric>`` and ``<task>.tune_trials``.
    """
    finished = now_iso()
    started = started_at or finished
    metrics = {f"{task}.tune_trials": float(n_trials)}
    if best_value is not None:
        metrics[f"{task}.tune_best_{metric}"] = float(best_value)
    record = RunRecord(
        id=new_run_id(datetime.fromisoformat(started)),
        kind="tune",
        status=status,
        started_at=started,
        finished_at=finished,
        duration_s=_duration(started, finished),
        fingerprint=config_fingerprint(config) if config is not None else None,
        config=config_record(config) if config is not None else {},
        stages={},
        command={"task": task, "study": study, "metric": metric},
        details={**(details or {}), "params": dict(params), "n_trials": n_trials},
        jpipe_version=_version(),
        metrics=metrics,
    )
    return save(project_dir, record, config=config)
