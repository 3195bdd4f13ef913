"""Pure ASGI: 405 for management writes on a server that serves a read-only model directory."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.errors import ReadOnlyError

_NAME = r"[^/]+"
# (methods, path, what the call does, the methods the path still allows)
RULES: tuple[tuple[frozenset[str], re.Pattern[str], str, str], ...] = (
    (frozenset({"POST"}), re.compile(r"^/models/?$"), "upload", "GET, HEAD"),
    (frozenset({"DELETE"}), re.compile(rf"^/models/{_NAME}/?$"), "deletion", "GET, HEAD"),
    (frozenset({"DELETE"}), re.compile(rf"^/models/{_NAME}/versions/{_NAME}/?$"), "deletion", "GET, HEAD"),
    (frozenset({"PUT", "DELETE"}), re.compile(rf"^/models/{_NAME}/default/?$"), "pinning", ""),
    (frozenset({"POST"}), re.compile(rf"^/models/{_NAME}/rollback/?$"), "rollback", ""),
    (frozenset({"POST"}), re.compile(rf"^/v2/repository/models/{_NAME}/load/?$"), "repository load", ""),
    (frozenset({"POST"}), re.compile(rf"^/v2/repository/models/{_NAME}/unload/?$"), "repository unload", ""),
)


class ReadOnlyMiddleware:
    """Refuse every call that would change what is served, before its body is read.

    The model directory (``Settings.model_dir``) is the only source of versions: on KServe the
    storage initializer put it there and a rollout changes it. An upload or a deletion here
    would make this replica differ from its siblings and vanish at its next restart.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in {"POST", "PUT", "DELETE", "PATCH"}:
            for methods, pattern, action, allow in RULES:
                if scope["method"] in methods and pattern.match(scope["path"]):
                    refusal = ReadOnlyError(action.capitalize())
                    response = error_response(refusal.status_code, refusal.code, refusal.message,
                                              headers={"Allow": allow}, path=scope["path"])
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
