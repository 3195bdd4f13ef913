"""Pure ASGI middleware: a request ID on every response and log line, an access log, and the
end-to-end time of each prediction for its model version's metrics."""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry.logs import request_id_var
from app.telemetry.stats import VersionStats, status_index

REQUEST_ID_HEADER = b"x-request-id"
STATS_KEY = "scriptserve.stats"
"""Scope key naming the ``VersionStats`` a request counts toward (set by ``attribute``)."""

# Printable, no spaces or quotes, bounded: safe to echo in a header and to write in a log line.
_SANE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")

access_log = logging.getLogger("app.access")


def attribute(scope: Scope, observer: Any) -> None:
    """Count this request toward a model version's request metrics (when metrics are on).

    Call it once the version is resolved, so that unknown names never become label values.
    """
    if isinstance(observer, VersionStats) and STATS_KEY not in scope:
        observer.in_flight += 1
        scope[STATS_KEY] = observer


def request_id_from(scope: Scope) -> bytes:
    """The client's ``X-Request-ID`` if it is sane, else a new random one."""
    for key, value in scope["headers"]:
        if key == REQUEST_ID_HEADER:
            if _SANE_ID.fullmatch(value):
                return value
            break
    # random, not os.urandom: an ID needs to be unique, not secret, and a system call on every
    # request lets the inference threads take the GIL from the event loop (measured: ~10% of
    # the loop's samples at 128 clients sat in os.urandom waiting for the GIL back).
    return b"%032x" % random.getrandbits(128)


class RequestContextMiddleware:
    """Tag the request with an ID, time it, and log one access line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        rid = request_id_from(scope)
        request_id = rid.decode("ascii")
        # Not reset on exit: an unhandled error is logged (and answered) by Starlette's
        # ServerErrorMiddleware, outside this one, and that log line needs the ID too. The
        # variable lives in this request's task context, so nothing leaks to other requests.
        request_id_var.set(request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            status = 500
            raise
        finally:
            end = time.monotonic()
            stats: VersionStats | None = scope.get(STATS_KEY)
            if stats is not None:
                stats.in_flight -= 1
                stats.record_request(end - start, status_index(status), end)
            if access_log.isEnabledFor(logging.INFO):
                duration_ms = (end - start) * 1000
                access_log.info(
                    "%s %s %d %.2fms", scope["method"], scope["path"], status, duration_ms,
                    extra={"request_id": request_id, "fields": {
                        "method": scope["method"], "path": scope["path"], "status": status,
                        "duration_ms": round(duration_ms, 3)}},
                )
