"""A fault-injecting HTTP proxy between a store and a real S3 server (moto), on 127.0.0.1.

It forwards every request unchanged, except the next ones a test arms a fault for:
transient 5xx answers, answers that come too late (timeouts), ``412`` or ``409`` on a
conditional ``PUT`` (``If-None-Match: *``: another writer took the key, or is writing it),
and stale listings (``ListObjectsV2`` answered from an older copy). ``down()`` answers
every request with 503 until ``up()``.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
Match = Callable[[str, str, dict[str, str]], bool]


def any_request(method: str, path: str, headers: dict[str, str]) -> bool:
    return True


def conditional_put(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "PUT" and headers.get("if-none-match") == "*"


def listing(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "GET" and "list-type=2" in path


@dataclass
class Fault:
    match: Match
    remaining: int
    status: int = 503
    code: str = "ServiceUnavailable"
    delay_s: float = 0.0


@dataclass
class FaultProxy:
    """Forward to ``upstream``; count what was injected in ``injected`` (by kind)."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    injected: dict[str, int] = field(default_factory=dict)
    stale_listings: bool = False
    _listings: dict[str, tuple[int, list[tuple[str, str]], bytes]] = field(default_factory=dict)
    _down: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # arming faults ------------------------------------------------------------------------
    def fail(self, count: int, status: int = 503, code: str = "ServiceUnavailable",
             match: Match = any_request) -> None:
        """Answer the next ``count`` matching requests with ``status`` (not forwarded)."""
        with self._lock:
            self.faults.append(Fault(match, count, status, code))

    def stall(self, count: int, delay_s: float, match: Match = any_request) -> None:
        """Hold the next ``count`` matching requests ``delay_s`` before forwarding them."""
        with self._lock:
            self.faults.append(Fault(match, count, 0, "", delay_s))

    def down(self) -> None:
        self._down = True

    def up(self) -> None:
        self._down = False

    def _take(self, method: str, path: str, headers: dict[str, str]) -> Fault | None:
        with self._lock:
            if self._down:
                self._count("down")
                return Fault(any_request, 1)
            for fault in self.faults:
                if fault.remaining > 0 and fault.match(method, path, headers):
                    fault.remaining -= 1
                    self._count(f"{fault.status or 'stall'}")
                    return fault
        return None

    def _count(self, kind: str) -> None:
        self.injected[kind] = self.injected.get(kind, 0) + 1

    # serving ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and Expect: 100-continue for PUT bodies

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                headers = {k.lower(): v for k, v in self.headers.items()}
                fault = proxy._take(self.command, self.path, headers)
                if fault is not None and fault.delay_s:
                    time.sleep(fault.delay_s)  # the client gives up and retries meanwhile
                elif fault is not None:
                    xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault.code}</Code>"
                           f"<Message>injected by the test proxy</Message></Error>").encode()
                    self._answer(fault.status, [("Content-Type", "application/xml")], xml)
                    return
                forward = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                forward["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=forward)
                    response = upstream.getresponse()
                    status, out, data = response.status, response.getheaders(), response.read()
                finally:
                    upstream.close()
                if listing(self.command, self.path, headers) and status == 200:
                    with proxy._lock:
                        if proxy.stale_listings and self.path in proxy._listings:
                            proxy._count("stale-listing")
                            status, out, data = proxy._listings[self.path]
                        else:
                            proxy._listings[self.path] = (status, out, data)
                self._answer(status, out, data)

            def _safe(self) -> None:
                try:
                    self._handle()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client timed out and left

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _safe

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
