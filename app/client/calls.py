"""The client's calls, written once as generators of requests: no I/O here.

A call yields each ``httpx.Request`` it needs and receives the ``httpx.Response``; the sync
and async clients in ``app.client`` only differ in how they send. Also the client's errors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Generator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import httpx
import orjson

if TYPE_CHECKING:
    from app.client.tensors import OutputKind

T = TypeVar("T")
Call = Generator[httpx.Request, httpx.Response, T]
Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) while a file moves."""
StageWatch = Callable[[dict[str, Any]], None]
"""Called with the operation record each time a tracked upload changes stage."""

DEFAULT_URL = "http://127.0.0.1:8000"
_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 409: "conflict",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input",
          503: "unavailable", 504: "deadline_exceeded"}


class ClientError(Exception):
    """Base of every error this client raises."""


class ApiError(ClientError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message


class ConnectionFailedError(ClientError):
    """The server could not be reached, or the connection broke."""


def raise_for_error(response: httpx.Response) -> None:
    """Raise ``ApiError`` for a 4xx/5xx response (native or v2 error body)."""
    if response.status_code < 400:
        return
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code, message = str(error.get("code")), str(error.get("message"))
    elif isinstance(error, str):
        code, message = _CODES.get(response.status_code, "http_error"), error
    else:
        code = _CODES.get(response.status_code, "http_error")
        message = response.text[:300] or response.reason_phrase
    raise ApiError(response.status_code, code, message)


class _ProgressFile:
    """A binary file that reports how much has been read (httpx reads it in chunks)."""

    def __init__(self, fh: BinaryIO, progress: Callable[[int], None]) -> None:
        self._fh = fh
        self._progress = progress
        self.name = fh.name

    def fileno(self) -> int:
        return self._fh.fileno()

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._fh.seek(offset, whence)
        self._progress(0)
        return position

    def read(self, size: int = -1) -> bytes:
        chunk = self._fh.read(size)
        self._progress(len(chunk))
        return chunk


class Calls:
    """Builds requests and reads responses for every call; does no I/O itself."""

    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        self.base = url.rstrip("/")
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._returns: dict[tuple[str, int], str] = {}
        self._first_input: dict[str, str] = {}

    def request(self, method: str, path: str, *, timeout: httpx.Timeout | None = None,
                headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Request:
        return httpx.Request(
            method, self.base + path, headers={**self.auth, **(headers or {})},
            extensions={"timeout": (timeout or self.timeout).as_dict()}, **kwargs,
        )

    def json(self, path: str, method: str = "GET", **kwargs: Any) -> Call[Any]:
        response = yield self.request(method, path, **kwargs)
        raise_for_error(response)
        return response.json()

    def health(self) -> Call[bool]:
        response = yield self.request("GET", "/health")
        return response.status_code == 200

    def ready(self) -> Call[dict[str, Any]]:
        response = yield self.request("GET", "/ready")
        if response.status_code != 503:
            raise_for_error(response)
        return response.json()

    def upload(self, path: str | os.PathLike, name: str, fields: dict[str, Any],
               files: dict[str, str | os.PathLike], progress: Progress | None,
               on_stage: StageWatch | None = None) -> Call[dict]:
        """Upload as an operation (``Prefer: respond-async``), follow it to its end.

        A server that answers 201 at once (no operations) is fine too."""
        paths = {"file": Path(path), **{k: Path(v) for k, v in files.items()}}
        total = sum(p.stat().st_size for p in paths.values())
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(min(done, total), total)

        data = {"name": name, **{k: str(v) for k, v in fields.items() if v is not None}}
        with ExitStack() as stack:
            parts = [(field, (p.name, _ProgressFile(stack.enter_context(open(p, "rb")), advance)))
                     for field, p in paths.items()]
            slow = httpx.Timeout(None, connect=self.timeout.connect, read=max(self.timeout.read or 0, 600))
            response = yield self.request("POST", "/models", data=data, files=parts, timeout=slow,
                                          headers={"Prefer": "respond-async"})
        raise_for_error(response)
        if response.status_code != 202:
            return response.json()
        return (yield from self.follow(response.json(), on_stage))

    def follow(self, record: dict[str, Any], on_stage: StageWatch | None) -> Call[dict]:
        """Long-poll an operation until it ends: its result, or its error as ``ApiError``."""
        reported = 0
        while True:
            stages = record.get("stages") or [{"name": record["stage"]}]
            if on_stage is not None:
                for entry in stages[reported:]:  # every stage, even one between two polls
                    on_stage({**record, "stage": entry["name"]})
            reported = len(stages)
            if record["state"] != "running":
                break
            response = yield self.request(
                "GET", f"/operations/{record['id']}",
                params={"after": record["revision"], "wait_s": 10},
                timeout=httpx.Timeout(30, connect=self.timeout.connect),
            )
            raise_for_error(response)
            record = response.json()
        if record["state"] == "succeeded":
            return record["result"]
        error = record.get("error") or {}
        raise ApiError(int(error.get("status", 500)), str(error.get("code", record["state"])),
                       str(error.get("message", f"the upload was {record['state']}")))

    def predict(self, name: str, inputs: Any, version: int | None, timeout_s: float | None,
                output: OutputKind) -> Call[Any]:
        from app.client.tensors import NPZ, native_body, native_outputs, npz_outputs  # torch: here

        path = f"/models/{name}" + (f"/versions/{version}" if version is not None else "") + "/predict"
        params = {"timeout_s": timeout_s} if timeout_s else None
        timeout = httpx.Timeout(timeout_s + 10, connect=10.0) if timeout_s else None
        headers = {"Content-Type": "application/json"}
        if output != "json":  # arrays keep the dtypes the model returned (JSON has one number type)
            headers["Accept"] = NPZ
        response = yield self.request("POST", path, content=native_body(inputs), params=params,
                                      headers=headers, timeout=timeout)
        raise_for_error(response)
        if response.headers.get("content-type", "").startswith(NPZ):
            key = (name, int(response.headers.get("x-model-version", "0")))
        else:
            body = orjson.loads(response.content)
            key = (name, body["version"])
        if output != "json" and key not in self._returns:
            info = yield from self.json(f"/models/{name}")
            for v in info["versions"]:
                self._returns[(name, v["version"])] = v["signature"]["returns"]
        if response.headers.get("content-type", "").startswith(NPZ):
            return npz_outputs(response.content, self._returns.get(key), output)
        return native_outputs(body["outputs"], self._returns.get(key), output)

    def infer(self, name: str, inputs: Any, version: int | None, binary: bool,
              outputs: list[str] | None, output: OutputKind) -> Call[dict[str, Any]]:
        from app.client.tensors import v2_body, v2_outputs  # torch: only when inferring

        base = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "")
        if not isinstance(inputs, dict):
            if name not in self._first_input:
                meta = yield from self.json(base)
                self._first_input[name] = meta["inputs"][0]["name"]
            inputs = {self._first_input[name]: inputs}
        content, json_length = v2_body(inputs, binary, outputs)
        headers = {"Content-Type": "application/octet-stream" if binary else "application/json"}
        if binary:
            headers["Inference-Header-Content-Length"] = str(json_length)
        response = yield self.request("POST", base + "/infer", content=content, headers=headers)
        raise_for_error(response)
        body = response.content
        length = int(response.headers.get("inference-header-content-length", len(body)))
        return v2_outputs(orjson.loads(body[:length]), body, length, output)

    def metadata(self, name: str, version: int | None) -> Call[dict[str, Any]]:
        suffix = f"/versions/{version}" if version is not None else ""
        return (yield from self.json(f"/v2/models/{name}{suffix}"))

    def code(self, name: str, version: int | None, view: str) -> Call[str]:
        params: dict[str, Any] = {"view": view, **({"version": version} if version else {})}
        response = yield self.request("GET", f"/models/{name}/code", params=params,
                                      headers={"Accept": "text/plain"})
        raise_for_error(response)
        return response.text

    def delete(self, name: str, version: int | None) -> Call[dict[str, Any]]:
        path = f"/models/{name}" + (f"/versions/{version}" if version is not None else "")
        return (yield from self.json(path, "DELETE"))

    def default(self, name: str, action: str, version: int | None = None) -> Call[dict[str, Any]]:
        """Pin (``version``), unpin or roll back the default version of ``name``."""
        if action == "pin":
            return (yield from self.json(f"/models/{name}/default", "PUT", json={"version": version}))
        if action == "unpin":
            return (yield from self.json(f"/models/{name}/default", "DELETE"))
        return (yield from self.json(f"/models/{name}/rollback", "POST"))

    def download_request(self, name: str, version: int | None) -> httpx.Request:
        params = {"version": version} if version is not None else None
        return self.request("GET", f"/models/{name}/archive", params=params,
                            timeout=httpx.Timeout(None, connect=self.timeout.connect, read=600))


def drive(send: Callable[[httpx.Request], httpx.Response], call: Call[T]) -> T:
    """Run a call with a synchronous ``send``."""
    try:
        request = next(call)
        while True:
            response = send(request)
            try:
                request = call.send(response)
            except StopIteration as done:
                return done.value
    finally:
        call.close()  # a failed send leaves the call suspended: release its open files


async def adrive(send: Callable[[httpx.Request], Awaitable[httpx.Response]], call: Call[T]) -> T:
    """Run a call with an asynchronous ``send``."""
    try:
        request = next(call)
        while True:
            response = await send(request)
            try:
                request = call.send(response)
            except StopIteration as done:
                return done.value
    finally:
        call.close()  # a failed send leaves the call suspended: release its open files


def archive_path(dest: str | os.PathLike, name: str, response: httpx.Response) -> Path:
    """Where a download goes: ``dest`` itself, or the server's file name inside it."""
    path = Path(dest)
    if not path.is_dir():
        return path
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r'filename="?([^";]+)"?', disposition)
    filename = Path(match.group(1)).name if match else ""
    return path / (filename or f"{name}.torchscript")
