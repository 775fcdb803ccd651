"""Running the app with uvicorn (``jpipe serve``).

One worker process serves the app object directly. With several workers uvicorn
starts each from the import string ``pipeline.serve.server:app_from_environment``; the
project directory and the ``--set`` overrides travel in environment variables, and
every worker loads its own models and batches its own requests.

On SIGINT or SIGTERM uvicorn stops accepting connections and waits up to
``serve.shutdown_timeout_s`` for requests in flight, then the app's shutdown lets
queued classify batches finish.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

ENV_PROJECT = "JPIPE_SERVE_PROJECT"
ENV_OVERRIDES = "JPIPE_SERVE_OVERRIDES"


def serve_limits(project_dir: str | os.PathLike, overrides: list[str] | None = None):
    """The ``[serve]`` section of the project's config with ``section.key=value`` overrides."""
    from pipeline.config import load_config

    return load_config(Path(project_dir), list(overrides or []))["serve"]


def app_from_environment():
    """App factory for uvicorn workers: project and overrides from the environment."""
    from pipeline.serve.app import create_app

    project = Path(os.environ[ENV_PROJECT])
    overrides = json.loads(os.environ.get(ENV_OVERRIDES, "[]"))
    return create_app(project_dir=project, limits=serve_limits(project, overrides))


def run_server(
    *,
    project_dir: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    overrides: list[str] | None = None,
    access_log: bool = False,
    log_level: str = "info",
) -> None:
    """Serve ``project_dir``'s models until interrupted. Fails early (E301) when the project has no model."""
    import uvicorn

    from pipeline.serve.app import create_app
    from pipeline.serve.registry import require_models

    project = Path(project_dir).resolve()
    found = require_models(project)
    limits = serve_limits(project, overrides)
    logger.info("Serving %s from %s on http://%s:%d (docs at /docs)", ", ".join(found.names()), project, host, port)
    options = dict(
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=int(limits["shutdown_timeout_s"]),
    )
    if workers <= 1:
        app = create_app(project_dir=project, limits=limits)
        uvicorn.Server(uvicorn.Config(app, **options)).run()
        return
    os.environ[ENV_PROJECT] = str(project)
    os.environ[ENV_OVERRIDES] = json.dumps(list(overrides or []))
    uvicorn.run("pipeline.serve.server:app_from_environment", factory=True, workers=workers, **options)
