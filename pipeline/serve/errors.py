"""Every error of the HTTP API as JSON: ``{"error": {"code", "kind", "message", "hint"}}`` with a 4xx/503 status.

Library errors (:class:`~pipeline.errors.PipelineError`) keep their code; FastAPI's own
failures (malformed JSON, a body that does not fit the schema, an unknown path or
method) get one (E240, E241, E246). :class:`RequestGuard` rejects over-large bodies
(E242, 413) and non-JSON bodies (E245, 415) before FastAPI reads them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

# Codes whose HTTP status is not the default of their kind.
STATUS_BY_CODE = {
    "E208": 404,  # word not in the vectors
    "E240": 400,  # malformed JSON
    "E242": 413,  # body too large
    "E243": 413,  # too many texts or pairs
    "E245": 415,  # not JSON
    "E246": 404,  # unknown path (405 when the method is wrong: set per response)
    "E305": 404,  # vector source not built
    "E316": 422,  # generator without themes asked for one
    "E331": 404,  # model not loaded by this server
    "E330": 503,  # still loading
    "E332": 503,  # overloaded
}
STATUS_BY_KIND = {"config": 422, "input": 422, "model": 503, "workflow": 500}
JSON_TYPES = ("application/json",)
# Read as JSON too: no content type, and curl -d's default (the body is the JSON text all the same).
READ_AS_JSON = ("", "application/x-www-form-urlencoded")
BODY_METHODS = (b"POST", b"PUT", b"PATCH")


class JSONResponse(StarletteJSONResponse):
    """UTF-8 JSON; falls back to ASCII escapes when a string cannot be encoded (a lone surrogate echoed from input)."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def status_of(error: PipelineError) -> int:
    return STATUS_BY_CODE.get(error.code, STATUS_BY_KIND.get(error.kind, 500))


def error_body(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    kinds = {"1": "config", "2": "input", "3": "model", "4": "workflow"}
    return {"error": {"code": code, "kind": kinds.get(code[1:2], "error"), "message": message, "hint": hint}}


def error_response(error: PipelineError, *, status: int | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error.to_json()}, status_code=status or status_of(error), headers=headers)


async def pipeline_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PipelineError)
    return error_response(exc)


def _location(loc: tuple | list) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:] or parts
    return ".".join(parts) or "body"


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's ``RequestValidationError``: malformed JSON -> E240 (400), anything else -> E241 (422)."""
    errors = list(getattr(exc, "errors", lambda: [])())
    for error in errors:
        if error.get("type") == "json_invalid":
            where = error.get("loc", ("body", "?"))[-1]
            reason = (error.get("ctx") or {}).get("error", "JSON decode error")
            body = error_body("E240", f"Request body is not valid JSON: {reason} (at character {where}).", "Send one JSON object.")
            return JSONResponse(body, status_code=400)
    shown = "; ".join(f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    hint = "The OpenAPI description at /docs lists every field, its type and its range."
    return JSONResponse(error_body("E241", f"Invalid request: {shown}{more}.", hint), status_code=422)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's ``HTTPException``: unknown path (404), wrong method (405), unreadable body (400)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if status == 404:
        body = error_body("E246", f"No endpoint {request.url.path}.", "The endpoints are listed at /docs.")
    elif status == 405:
        body = error_body(
            "E246", f"{request.url.path} does not take {request.method}.", "The endpoints and their methods are listed at /docs."
        )
    elif status == 400:
        body = error_body("E240", f"The request body could not be read as JSON ({exc.detail}).", "Send UTF-8 JSON.")
    else:
        code = "E241" if status < 500 else "E000"
        body = error_body(code, str(exc.detail), None)
    return JSONResponse(body, status_code=status, headers=getattr(exc, "headers", None))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: logged with its traceback, answered as JSON 500."""
    logger.exception("Unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("E000", f"Internal error ({type(exc).__name__}).", "This is a bug: the server log has the traceback.")
    body["error"]["kind"] = "error"
    return JSONResponse(body, status_code=500)


def install_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError

    app.add_exception_handler(PipelineError, pipeline_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)


class RequestGuard:
    """ASGI middleware: a request body is read whole (up to ``max_body_bytes``) and must be JSON.

    Over the limit -> 413 (E242), by ``Content-Length`` before reading or while reading a
    chunked body. A body with a content type other than JSON -> 415 (E245); a body without
    a content type, or sent as a form (``curl -d``'s default), is read as JSON.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].encode() not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        problem = self._check_headers(headers)
        body = None
        if problem is None:
            body, problem = await self._read_body(receive)
        if problem is not None:
            await problem(scope, receive, send)
            return
        if body is None:  # the client went away while sending
            return
        if _media_type(headers) in READ_AS_JSON:
            kept = [(name, value) for name, value in scope["headers"] if name.lower() != b"content-type"]
            scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
        await self.app(scope, _replay(body, receive), send)

    def _too_large(self, size: str) -> JSONResponse:
        message = f"Request body is {size} bytes; this server takes at most {self.max_body_bytes}."
        return JSONResponse(error_body("E242", message, "Send fewer or shorter texts per request."), status_code=413)

    def _check_headers(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                return JSONResponse(error_body("E240", "Content-Length is not a number.", None), status_code=400)
            if int(length) > self.max_body_bytes:
                return self._too_large(str(int(length)))
        content_type = _media_type(headers)
        if content_type not in READ_AS_JSON and content_type not in JSON_TYPES and not content_type.endswith("+json"):
            message = f"Request body is sent as {content_type!r}; the API reads JSON."
            return JSONResponse(error_body("E245", message, "Send the body as JSON (Content-Type: application/json)."), status_code=415)
        return None

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, JSONResponse | None]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", self._too_large(f"more than {self.max_body_bytes}")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _media_type(headers: dict[bytes, bytes]) -> str:
    return headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then the client's own messages (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
