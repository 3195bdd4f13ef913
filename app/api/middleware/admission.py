"""Pure ASGI: admission control for predictions (503 before the body is read)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response


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
