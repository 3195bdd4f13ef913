"""The one place exceptions become HTTP error bodies ``{"error": {"code", "message"}}``.

Under ``/v2`` (the Open Inference Protocol) the body is ``{"error": "<message>"}`` instead,
as Triton and KServe clients expect.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from app.errors import ScriptServeError, redact_paths
from app.telemetry.logs import request_id_var

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def is_v2_path(path: str) -> bool:
    """True for Open Inference Protocol paths."""
    return path == "/v2" or path.startswith("/v2/")


def error_body(code: str, message: str, path: str = "") -> bytes:
    """The one error body, with filesystem paths redacted: ``{"error": {"code", "message"}}``
    (``{"error": "<message>"}`` under ``/v2``). Every error answer is built here."""
    message = redact_paths(message)
    doc = {"error": message} if is_v2_path(path) else {"error": {"code": code, "message": message}}
    return orjson.dumps(doc)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, *, path: str = ""
) -> Response:
    return Response(error_body(code, message, path), status_code=status, headers=headers,
                    media_type="application/json")


async def _scriptserve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ScriptServeError)
    if exc.status_code >= 500:
        log.warning("%s %s -> %d %s", request.method, request.url.path, exc.status_code, exc.message)
    return error_response(
        exc.status_code, exc.code, exc.message, exc.headers, path=request.url.path
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg')}")
    return error_response(
        422, "invalid_request", "; ".join(problems) or "invalid request",
        path=request.url.path,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(
        exc.status_code, code, str(exc.detail), getattr(exc, "headers", None), path=request.url.path
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    # Answered by Starlette's outermost middleware, past RequestContextMiddleware: add the ID here.
    request_id = request_id_var.get()
    return error_response(
        500, "internal_error", "internal server error (see the server log)",
        {"X-Request-ID": request_id} if request_id else None, path=request.url.path,
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ScriptServeError, _scriptserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
