"""Pure ASGI fast path for ``POST /models/{name}[/versions/{v}]/predict``.

Predictions are the hot path: FastAPI's routing, dependency solving and response classes
cost more CPU per request than decoding, batching and encoding together (py-spy, 2 cores).
This layer answers prediction paths directly with the same core (``app.serving.prediction``), the
same auth, limits and error bodies, and passes everything else to the app.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_body
from app.api.middleware.request_context import attribute
from app.errors import InputError, PayloadTooLargeError, ScriptServeError
from app.security import check_token
from app.serving import pipeline, prediction

log = logging.getLogger(__name__)

PREDICT_PATH = re.compile(r"^/models/([^/]+)/(?:versions/([^/]+)/)?predict$")
_JSON = b"application/json"


class _InvalidRequest(InputError):
    code = "invalid_request"


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer to one prediction request."""

    status: int
    media_type: bytes
    body: bytes
    headers: dict[str, str]


class PredictFastPath:
    """Serve prediction requests without the framework's per-request machinery."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = PREDICT_PATH.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        answer = await answer_prediction(self.state, scope, receive, match.group(1), match.group(2))
        headers = [(b"content-type", answer.media_type), (b"content-length", str(len(answer.body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})


async def answer_prediction(
    state: State, scope: Scope, receive: Receive, name: str, version_text: str | None
) -> Answer:
    """Answer ``POST /models/{name}[/versions/{version}]/predict``, errors included."""
    try:
        media_type, body, headers = await _predict(state, scope, receive, name, version_text)
        return Answer(200, media_type, body, headers)
    except ScriptServeError as exc:
        if exc.status_code >= 500:  # as the app's error handler does
            log.warning("POST %s -> %d %s", scope["path"], exc.status_code, exc.message)
        return Answer(exc.status_code, _JSON, error_body(exc.code, exc.message), exc.headers)
    except Exception:
        log.exception("unhandled error on POST %s", scope["path"])
        body = error_body("internal_error", "internal server error (see the server log)")
        return Answer(500, _JSON, body, {})


async def _predict(
    state: State, scope: Scope, receive: Receive, name: str, version_text: str | None
) -> tuple[bytes, bytes, dict[str, str]]:
    settings = state.settings
    headers = dict(scope["headers"])
    if settings.inference_token:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        check_token(auth, settings.inference_token, state.admin_token)
    version = None
    if version_text is not None:
        if not version_text.isdigit():
            raise _InvalidRequest(f"version: must be an integer, got {version_text[:20]!r}")
        version = int(version_text)
    timeout_s = _timeout(scope, settings.request_timeout_s)
    mv, body = await pipeline.resolve_and_read(
        state.registry, name, version, lambda: _read_body(receive, headers, settings.max_body_bytes)
    )
    attribute(scope, mv.batcher.observer)
    result = await prediction.predict(
        mv,
        headers.get(b"content-type", b"application/json").decode("latin-1"),
        headers.get(b"accept", b"").decode("latin-1"),
        body,
        timeout_s,
        settings.max_body_bytes,
    )
    return result.media_type.encode(), result.body, result.headers


def _timeout(scope: Scope, default: float) -> float:
    query = scope.get("query_string", b"")
    if not query:
        return default
    values = parse_qs(query.decode("latin-1")).get("timeout_s")
    if not values:
        return default
    try:
        value = float(values[-1])
    except ValueError:
        value = math.nan
    if not 0 < value <= 3600:
        raise _InvalidRequest("timeout_s: must be a number of seconds in (0, 3600]")
    return value


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {int(declared)} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _InvalidRequest("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
