"""The FastAPI application of ``jpipe serve``: routes, start-up and shutdown.

``create_app(project_dir=...)`` returns an app that loads the project's models once, in a
background thread, when it starts: it answers ``/healthz`` at once and ``/readyz`` with
503 until the models are loaded (then 200). Model endpoints answer 503 (E330) meanwhile.
On shutdown the server stops taking connections, requests in flight finish (uvicorn
waits up to ``serve.shutdown_timeout_s``), then queued classify batches finish and the
worker threads stop.

Endpoints (OpenAPI at ``/docs``):

* ``POST /v1/classify``; ``GET /v1/similar``, ``POST /v1/similarity``, ``POST /v1/analogy``;
  ``POST /v1/generate`` (JSON, or Server-Sent Events with ``stream``);
* ``GET /v1/models``, ``GET /v1/stats`` (batching counters, memory), ``GET /healthz``, ``GET /readyz``;
* ``GET /`` and ``/static/*``: the demo page shipped in ``pipeline/serve/static/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, StreamingResponse

from pipeline import __version__
from pipeline.errors import InputError, ModelError, PipelineError
from pipeline.serve import schemas
from pipeline.serve.errors import JSONResponse, RequestGuard, error_response, install_error_handlers
from pipeline.serve.registry import load_models, set_torch_threads
from pipeline.serve.service import Service

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


class Runtime:
    """Loading state of the app: ``loading`` -> ``ready`` (with a :class:`Service`) or ``failed`` (with the error)."""

    def __init__(self, project_dir: Path, limits: Any) -> None:
        self.project_dir = project_dir
        self.limits = limits
        self.status = "loading"
        self.service: Service | None = None
        self.error: PipelineError | None = None

    async def load(self) -> None:
        try:
            models = await asyncio.to_thread(load_models, self.project_dir, device=self.limits["device"], backend=self.limits["backend"])
        except PipelineError as exc:
            logger.error("Loading the models failed: %s", exc)
            self.status, self.error = "failed", exc
            return
        except Exception as exc:  # noqa: BLE001 - a damaged model must not kill the process silently
            logger.exception("Loading the models failed")
            self.status, self.error = (
                "failed",
                ModelError(
                    "E304", f"Loading the models failed ({type(exc).__name__}: {exc}).", hint="Check the model directories, or retrain."
                ),
            )
            return
        service = Service(models, limits=self.limits)
        await service.start()
        self.service, self.status = service, "ready"

    def require(self) -> Service:
        if self.service is not None:
            return self.service
        if self.error is not None:
            raise self.error
        raise ModelError(
            "E330", "The server is still loading its models.", hint="Retry in a few seconds; /readyz answers 200 once they are loaded."
        )


def create_app(*, project_dir: str | os.PathLike, limits: Any = None, load_in_background: bool = True) -> FastAPI:
    """The app for ``project_dir``; ``limits`` is the ``[serve]`` config section (default: the project's config)."""
    if limits is None:
        from pipeline.config import load_config

        limits = load_config(Path(project_dir))["serve"]
    runtime = Runtime(Path(project_dir).resolve(), limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threads = set_torch_threads(limits["torch_threads"])
        logger.info("Loading the models of %s (torch threads: %d) ...", runtime.project_dir, threads)
        loading = asyncio.get_running_loop().create_task(runtime.load())
        if not load_in_background:
            await loading
        yield
        await loading  # a stop during loading waits for it: the loading thread cannot be interrupted
        if runtime.service is not None:
            await runtime.service.stop()

    app = FastAPI(
        title="jpipe",
        version=__version__,
        description="Japanese review classification, word similarity and text generation (KNB blog corpus models).",
        default_response_class=JSONResponse,
        lifespan=lifespan,
        responses=schemas.ERROR_RESPONSES,
    )
    app.state.runtime = runtime
    app.add_middleware(RequestGuard, max_body_bytes=limits["max_body_bytes"])
    install_error_handlers(app)
    _add_service_routes(app)
    _add_classify_route(app)
    _add_vector_routes(app)
    _add_generate_route(app)
    _add_extract_route(app)
    _add_page_routes(app)
    return app


async def current_service(request: Request) -> Service:
    """The ready service, or 503 (E330) while loading. Async: FastAPI would run a plain function on a worker thread."""
    return request.app.state.runtime.require()


ServiceDep = Annotated[Service, Depends(current_service)]


def _add_service_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["service"], summary="The process is up (always 200).")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], summary="200 once the models are loaded, 503 before (or when loading failed).")
    async def readyz(request: Request) -> Any:
        runtime: Runtime = request.app.state.runtime
        try:
            service = runtime.require()
        except PipelineError as exc:
            return error_response(exc, status=503)
        return {"status": "ready", "models": [entry["name"] for entry in service.models.entries]}

    @app.get("/v1/models", tags=["service"], summary="Loaded models: tasks, labels, format versions, test metrics.")
    async def models(service: ServiceDep) -> dict[str, Any]:
        served = service.models
        return {
            "project": str(served.project_dir),
            "tasks": list(served.tasks),
            "generator": served.generator is not None,
            "vector_sources": list(served.vectors),
            "models": served.entries,
            "load_seconds": round(served.load_seconds, 2),
        }

    @app.get("/v1/stats", tags=["service"], summary="Batching counters (requests, batches, texts per batch) and memory.")
    async def stats(service: ServiceDep) -> dict[str, Any]:
        return service.stats()


def _add_classify_route(app: FastAPI) -> None:
    # The schema documents the answer; the dict is returned as JSON directly: validating it again
    # against the response model would cost the event loop ~20% more per request under load.
    @app.post(
        "/v1/classify",
        tags=["classify"],
        responses={200: {"model": schemas.ClassifyResponse, "description": "One result per text, in order."}},
        summary="Label and class probabilities per text and task (attention per token with explain).",
    )
    async def classify(body: schemas.ClassifyRequest, service: ServiceDep) -> JSONResponse:
        return JSONResponse(await service.classify(body.texts, tasks=body.tasks, explain=body.explain))


def _add_vector_routes(app: FastAPI) -> None:
    @app.get("/v1/similar", tags=["vectors"], response_model=schemas.SimilarResponse, summary="Nearest neighbours of a word by cosine.")
    async def similar(
        service: ServiceDep,
        word: Annotated[str, Query(min_length=1, max_length=1000, description="A word or short phrase (phrases are averaged).")],
        topn: Annotated[int, Query(ge=1, description="Neighbours to return.")] = 10,
        source: Annotated[
            str | None,
            Query(
                description="auto, word2vec, spacy, imported, ginza or combined (default auto: ginza, else word2vec, else the first loaded)."
            ),
        ] = None,
    ) -> Any:
        return await service.similar(_unicode(word, "word"), topn=topn, source=source)

    @app.post("/v1/similarity", tags=["vectors"], response_model=schemas.SimilarityResponse, summary="Cosine of word pairs.")
    async def similarity(body: schemas.SimilarityRequest, service: ServiceDep) -> Any:
        return await service.similarity(body.pairs, source=body.source)

    @app.post("/v1/analogy", tags=["vectors"], response_model=schemas.AnalogyResponse, summary="Words closest to a - b + c.")
    async def analogy(body: schemas.AnalogyRequest, service: ServiceDep) -> Any:
        return await service.analogy(body.a, body.b, body.c, topn=body.topn, source=body.source)


def _unicode(value: str, name: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("E241", f"{name} is not valid Unicode (it has a lone surrogate code point).", hint="Send UTF-8 text.") from None
    return value


def _add_extract_route(app: FastAPI) -> None:
    @app.post("/v1/extract", tags=["extract"], summary="Opinion (評判) records per sentence: type, polarity, expression, target, spans.")
    async def extract(body: schemas.ExtractRequest, service: ServiceDep) -> dict[str, Any]:
        return await service.extract(body.texts, beam=body.beam)


def _add_generate_route(app: FastAPI) -> None:
    @app.post(
        "/v1/generate",
        tags=["generate"],
        response_model=schemas.GenerateResponse,
        summary="Continue a prompt; with stream, Server-Sent Events per token.",
        responses={
            200: {"content": {"text/event-stream": {"example": 'data: {"token": "京都の"}\n\ndata: {"done": true, "text": "..."}\n\n'}}}
        },
    )
    async def generate(body: schemas.GenerateRequest, service: ServiceDep) -> Any:
        options = body.model_dump(exclude={"stream"})
        if body.stream and body.num != 1:
            raise InputError("E247", f"Streaming writes one text, got num = {body.num}.", hint="Stream with num 1, or leave stream off.")
        plan = await service.prepare_generation(options)
        if not body.stream:
            return await service.generate(plan)
        return StreamingResponse(
            _sse(service, plan), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )


async def _sse(service: Service, plan: Any) -> AsyncIterator[str]:
    """``data: {...}`` events; an error after the stream started becomes a last ``{"error": {...}}`` event."""
    try:
        async for event in service.stream(plan):
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
    except PipelineError as exc:
        yield f"data: {json.dumps({'error': exc.to_json()}, ensure_ascii=False)}\n\n"
    except Exception as exc:  # noqa: BLE001 - headers are sent: the client learns of it through the stream
        logger.exception("Generation failed while streaming")
        yield f"data: {json.dumps({'error': {'code': 'E000', 'kind': 'error', 'message': f'Internal error ({type(exc).__name__}).', 'hint': None}})}\n\n"


def _add_page_routes(app: FastAPI) -> None:
    """``/`` and ``/static``: the demo page, when the package ships it."""
    if STATIC_DIR.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html; charset=utf-8")
        return {"service": "jpipe", "docs": "/docs", "page": "not installed (pipeline/serve/static/index.html is missing)"}
