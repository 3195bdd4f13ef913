"""Pure ASGI middleware: request body limits, admission control for predictions."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.handlers import error_response
from app.errors import PayloadTooLargeError


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``; uploads (``exempt`` paths) enforce their own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: frozenset[tuple[str, str]]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.exempt:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for key, value in scope["headers"]:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    response = error_response(
                        413, "payload_too_large",
                        f"request body of {int(value)} bytes exceeds the limit of {limit}",
                        path=scope["path"],
                    )
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited, send)


class AdmissionMiddleware:
    """503 at once, before the body is read, while ``max_in_flight`` predictions are running.

    The per-version queue bounds the work waiting for a model; this bounds the requests the
    server holds at all, so that under overload the excess costs microseconds instead of a
    JSON parse each, and the admitted requests keep a short latency.
    """

    def __init__(self, app: ASGIApp, max_in_flight: int, suffixes: tuple[str, ...]) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.suffixes = suffixes
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(self.suffixes):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            response = error_response(
                503, "overloaded",
                f"the server is handling {self.in_flight} predictions; retry shortly",
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
