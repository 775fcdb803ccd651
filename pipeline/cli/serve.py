"""Commands: serve (the HTTP API), bench serve.

Only typer and the standard library are imported here: FastAPI, uvicorn, httpx and
torch load inside the command bodies, so ``jpipe --help`` stays light.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli._app import SetOption, app, bench_app, console, reported, state

ModelsOption = Annotated[
    Path | None,
    typer.Option("--models", help="Project directory whose models/ are served (default: the current project, --dir)."),
]


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    models: ModelsOption = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes; each loads the models and batches its own requests.", min=1)
    ] = 1,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = False,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="Classifier backend: torch or onnx (`jpipe export onnx` first); default: serve.backend (torch)."),
    ] = None,
    overrides: SetOption = None,
) -> None:
    """Serve the trained models over HTTP (FastAPI + uvicorn): classify, similar, similarity, analogy, generate.

    Models are loaded once at start-up (only those the project has). Concurrent classify
    requests are merged into one forward pass (serve.max_batch_size, serve.max_wait_ms).
    Limits and threads: the [serve] config section (jpipe config). API docs at /docs, demo page at /.

    Example: jpipe serve --port 8000, then
    curl -s localhost:8000/v1/classify -H 'Content-Type: application/json' -d '{"texts": ["紅葉の京都は最高"]}'
    """
    from pipeline.serve.server import run_server

    project = (models or state.project_dir).resolve()
    if backend is not None:
        overrides = [*(overrides or []), f'serve.backend="{backend}"']
    with reported():
        run_server(project_dir=project, host=host, port=port, workers=workers, overrides=overrides, access_log=access_log)


@bench_app.command("serve")
def bench_serve(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    clients: Annotated[int, typer.Option("--clients", help="Concurrent classify clients (one review per request).", min=1, max=1024)] = 32,
    requests: Annotated[
        int, typer.Option("--requests", help="Requests per endpoint at most (Python clients; wrk runs --seconds).", min=1)
    ] = 4000,
    seconds: Annotated[float, typer.Option("--seconds", help="Seconds per endpoint at most.", min=1.0, max=3600.0)] = 30.0,
    similar_clients: Annotated[int, typer.Option("--similar-clients", help="Concurrent similar clients.", min=1, max=1024)] = 4,
    offline_reviews: Annotated[int, typer.Option("--offline-reviews", help="Reviews for the offline batch throughput.", min=1)] = 4000,
    client: Annotated[
        str,
        typer.Option(
            "--client",
            help="Load client: wrk (native, apt-get install wrk), httpx (one AsyncClient per client), raw (minimal HTTP/1.1 on asyncio), or auto (wrk when installed, else raw).",
        ),
    ] = "auto",
    server_workers: Annotated[
        int, typer.Option("--server-workers", help="Server worker processes (jpipe serve --workers).", min=1, max=64)
    ] = 1,
    models: ModelsOption = None,
    overrides: SetOption = None,
) -> None:
    """Throughput and p50/p99 latency of a local `jpipe serve` (classify, similar) beside offline batch classify, and server RSS.

    Starts the server on 127.0.0.1 (a free port) as a subprocess, drives it with wrk (--seconds per endpoint)
    or Python clients (at most --requests requests and --seconds seconds), then stops it. Prints the CPU
    seconds of server and client, and the load average.
    --set values (serve.max_batch_size=32 ...) go to the server.
    """
    from pipeline.bench.serve import benchmark_serve, format_report

    project = (models or state.project_dir).resolve()
    with reported():
        result = benchmark_serve(
            project_dir=project,
            clients=clients,
            similar_clients=similar_clients,
            requests=requests,
            seconds=seconds,
            offline_reviews=offline_reviews,
            overrides=overrides or [],
            client=client,
            server_workers=server_workers,
        )
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    console().print(format_report(result), markup=False, highlight=False, soft_wrap=True)
