"""Optional MLflow logging of run-history rows: ``[tracking] mlflow_uri = "sqlite:///mlruns.db"``.

Each `jpipe run` (and `jpipe tune`) row becomes an MLflow run named by its history id, in the
experiment ``tracking.experiment``: params (the flattened effective config, ``section.key``; a tune's
best parameters as ``params.KEY``), metrics (the headline figures), the report files
(``models/report/``) as artifacts under ``report/``, and the row itself as ``jpipe_run.json``.

A relative store (``sqlite:///mlruns.db``, ``file:mlruns`` or a bare path) is relative to the project
directory; a SQLite store keeps its artifacts in ``mlartifacts/`` beside the database file. MLflow is
imported here only: ``pip install 'jpipe[tracking]'`` (mlflow-skinny, with SQLAlchemy and Alembic
for the SQLite store).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.paths import REPORT_DIR

INSTALL_HINT = "pip install 'jpipe[tracking]'"
_STATUS = {"ok": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
_BATCH = 100  # MLflow takes at most 100 params per log_batch call
_MAX_PARAM = 6000  # characters of a param value MLflow stores


def require_mlflow(uri: str = "") -> None:
    """E110 unless MLflow (and, for a ``sqlite:`` store, SQLAlchemy and Alembic) can be imported."""
    needed = ["mlflow"] + (["sqlalchemy", "alembic"] if uri.startswith("sqlite:") else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            "E110",
            f"tracking.mlflow_uri is set, but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed.",
            hint=f'Install MLflow logging with: {INSTALL_HINT}; or set tracking.mlflow_uri = "" to turn it off.',
        )


def resolve_uri(uri: str, project_dir: Path) -> str:
    """``uri`` with a relative SQLite or file store made absolute under ``project_dir``; other URIs as they are."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((project_dir / uri.removeprefix("sqlite:///")).resolve())
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return (project_dir / uri.removeprefix("file:")).resolve().as_uri()
    if "://" not in uri and not uri.startswith("file:"):
        return (project_dir / uri).resolve().as_uri()
    return uri


def _text(value: Any) -> str:
    return (value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))[:_MAX_PARAM]


def _experiment_id(client, name: str, uri: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # else MLflow puts artifacts in ./mlruns of the current directory
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def _millis(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def log_record(*, project_dir: Path, record, section) -> str:
    """Log history row ``record`` as one MLflow run in ``section``'s (``config["tracking"]``) store; its MLflow run id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from pipeline.workflow.history import flatten

    uri = resolve_uri(section["mlflow_uri"], project_dir)
    require_mlflow(uri)
    client = MlflowClient(tracking_uri=uri)
    tags = {
        "jpipe.run_id": record.id,
        "jpipe.kind": record.kind,
        "jpipe.status": record.status,
        "jpipe.fingerprint": record.fingerprint or "",
    }
    run = client.create_run(
        _experiment_id(client, section["experiment"], uri), start_time=_millis(record.started_at), tags=tags, run_name=record.id
    )
    run_id = run.info.run_id
    params = {**flatten(record.config), **flatten(record.details.get("params") or {}, "params.")}
    items = [Param(key, _text(value)) for key, value in params.items()]
    stamp = _millis(record.finished_at)
    metrics = [Metric(name, value, stamp, 0) for name, value in record.metrics.items()]
    for start in range(0, max(len(items), len(metrics), 1), _BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _BATCH], params=items[start : start + _BATCH])
    client.log_dict(run_id, record.to_json(), "jpipe_run.json")
    report = project_dir / REPORT_DIR
    if record.kind == "run" and report.is_dir():
        client.log_artifacts(run_id, str(report), "report")
    client.set_terminated(run_id, status=_STATUS.get(record.status, "FINISHED"), end_time=stamp)
    return run_id
