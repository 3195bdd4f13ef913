"""The OpenAPI schema says every answer the native API can give, errors included.

FastAPI documents only the success and its own validation error (with a body shape this
API never sends). ``install`` post-processes the generated schema once: every error answer
of the native routes (``/models``, ``/health``, ``/ready``) gets the one error body
``{"error": {"code", "message"}}`` (``{"error": "..."}`` under ``/v2``), and each operation
lists the statuses it can answer (the fuzz test in ``tests/system/test_fuzz.py`` holds the server
to this).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

NATIVE_PREFIXES = ("/models", "/operations", "/health", "/ready", "/metrics")
V2_PREFIX = "/v2"
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
V2_ERROR_SCHEMA = {  # the Open Inference Protocol's error body
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_REASONS = {
    400: "malformed request",
    401: "missing or invalid bearer token (where one is required)",
    404: "no such model or version",
    405: "method not allowed",
    409: "conflict",
    413: "body or upload too large",
    415: "unsupported content type",
    422: "request or archive that does not fit (see the error code)",
    503: "overloaded (Retry-After) or not ready",
    504: "deadline exceeded",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "string"}}}


def _statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """What an operation can answer besides success, by what it takes."""
    codes = {int(c) for c in operation.get("responses", {}) if c[0] in "45"}
    if path.startswith(("/models", "/operations", "/v2/models")):
        codes.add(401)
    if "{name}" in path:
        codes |= {404, 503}  # 503: the store is still loading this model
    if operation.get("parameters") or operation.get("requestBody"):
        codes.add(422)
    if operation.get("requestBody"):
        codes |= {400, 413, 415}
    return codes


def _document(spec: dict[str, Any]) -> dict[str, Any]:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["V2Error"] = ERROR_SCHEMA, V2_ERROR_SCHEMA
    for path, item in spec.get("paths", {}).items():
        if path.startswith(NATIVE_PREFIXES):
            ref = {"$ref": "#/components/schemas/Error"}
        elif path.startswith(V2_PREFIX):
            ref = {"$ref": "#/components/schemas/V2Error"}
        else:
            continue
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            for code in sorted(_statuses(path, method, operation)):
                entry = responses.setdefault(str(code), {"description": _REASONS.get(code, "error")})
                entry["content"] = {"application/json": {"schema": ref}}
                if code == 503:
                    entry["headers"] = _RETRY_AFTER
    used = str(spec.get("paths"))
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f"/{unused}'" not in used:
            del schemas[unused]
    return spec


def install(app: FastAPI) -> None:
    """Serve the documented schema at ``/openapi.json`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            ))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
