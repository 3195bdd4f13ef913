"""Python client for ScriptServe (httpx): ``Client`` (sync) and ``AsyncClient`` (async).

    from app.client import Client
    with Client("http://127.0.0.1:8000", token="...") as c:
        c.upload("net.torchscript", "net")
        y = c.predict("net", torch.randn(2, 4))           # numpy (or output="torch")
        z = c.infer("net", {"x": torch.randn(2, 4)})      # v2: exact dtypes, by output name

Server errors raise ``ApiError`` (``status_code``, ``code``, ``message`` from the server);
network failures raise ``ConnectionFailedError``. Both derive from ``ClientError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from app.client.calls import (
    DEFAULT_URL,
    ApiError,
    Call,
    Calls,
    ClientError,
    ConnectionFailedError,
    Progress,
    StageWatch,
    adrive,
    archive_path,
    drive,
    raise_for_error,
)

if TYPE_CHECKING:
    from app.client.tensors import OutputKind

__all__ = ["ApiError", "AsyncClient", "Client", "ClientError", "ConnectionFailedError", "Progress"]

T = TypeVar("T")
_CHUNK = 1 << 20


def _form(version: int | None, device: str | None, batching: str | None,
          max_batch_size: int | None, max_batch_delay_ms: float | None, threads: int | None,
          fields: dict[str, Any] | None) -> dict[str, Any]:
    return {"version": version, "device": device, "batching": batching,
            "max_batch_size": max_batch_size, "max_batch_delay_ms": max_batch_delay_ms,
            "threads": threads, **(fields or {})}


def _unreachable(request: httpx.Request, exc: Exception) -> ConnectionFailedError:
    return ConnectionFailedError(f"{request.method} {request.url}: {exc or type(exc).__name__}")


def _discard(partial: Path | None) -> None:
    if partial is not None:
        partial.unlink(missing_ok=True)


class Client:
    """Synchronous client; use it as a context manager or call ``close()``."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout_s: float = 60.0, http: httpx.Client | None = None) -> None:
        self._calls = Calls(url, token, timeout_s)
        self._http = http or httpx.Client()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._http.send(request)
        except httpx.TransportError as exc:
            raise _unreachable(request, exc) from exc

    def _run(self, call: Call[T]) -> T:
        return drive(self._send, call)

    def health(self) -> bool:
        """True when the server answers ``/health``."""
        return self._run(self._calls.health())

    def ready(self) -> dict[str, Any]:
        """``/ready``: whether every stored model has been loaded."""
        return self._run(self._calls.ready())

    def upload(self, path: str | os.PathLike, name: str, *, version: int | None = None,
               device: str | None = None, batching: str | None = None,
               max_batch_size: int | None = None, max_batch_delay_ms: float | None = None,
               threads: int | None = None, fields: dict[str, Any] | None = None,
               files: dict[str, str | os.PathLike] | None = None,
               progress: Progress | None = None,
               on_stage: StageWatch | None = None) -> dict[str, Any]:
        """Upload an archive as a new version; extra ``fields`` / ``files`` join the form.

        The server tracks it as an operation; ``on_stage`` sees each stage (compiling,
        screening, trial load, ...). The result is the new version's info."""
        form = _form(version, device, batching, max_batch_size, max_batch_delay_ms, threads, fields)
        return self._run(self._calls.upload(path, name, form, files or {}, progress, on_stage))

    def models(self) -> list[dict[str, Any]]:
        """Every model with its versions, device and signature."""
        return self._run(self._calls.json("/models"))["models"]

    def info(self, name: str) -> dict[str, Any]:
        """One model's versions in detail."""
        return self._run(self._calls.json(f"/models/{name}"))

    def predict(self, name: str, inputs: Any, *, version: int | None = None,
                timeout_s: float | None = None, output: OutputKind = "numpy") -> Any:
        """Native predict; the result is shaped like the model's return value."""
        return self._run(self._calls.predict(name, inputs, version, timeout_s, output))

    def infer(self, name: str, inputs: Any, *, version: int | None = None, binary: bool = True,
              outputs: list[str] | None = None, output: OutputKind = "numpy") -> dict[str, Any]:
        """v2 inference: outputs by name with exact dtypes (binary tensors by default)."""
        return self._run(self._calls.infer(name, inputs, version, binary, outputs, output))

    def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        """v2 model metadata: input and output names, datatypes and shapes."""
        return self._run(self._calls.metadata(name, version))

    def code(self, name: str, *, version: int | None = None, view: str = "code") -> str:
        """The TorchScript code (``view="graph"`` or ``"inlined"``: the graph) as text."""
        return self._run(self._calls.code(name, version, view))

    def delete(self, name: str, version: int | None = None) -> dict[str, Any]:
        """Delete one version, or every version of the model."""
        return self._run(self._calls.delete(name, version))

    def pin(self, name: str, version: int) -> dict[str, Any]:
        """Serve ``version`` when a request names no version (kept in the store)."""
        return self._run(self._calls.default(name, "pin", version))

    def unpin(self, name: str) -> dict[str, Any]:
        """The highest version serves by default again."""
        return self._run(self._calls.default(name, "unpin"))

    def rollback(self, name: str) -> dict[str, Any]:
        """Pin the highest version below the current default."""
        return self._run(self._calls.default(name, "rollback"))

    def download(self, name: str, dest: str | os.PathLike, *, version: int | None = None,
                 progress: Progress | None = None) -> Path:
        """Save the archive to ``dest`` (a file, or a folder to put it in); returns the path."""
        request = self._calls.download_request(name, version)
        partial: Path | None = None
        try:
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    response.read()
                    raise_for_error(response)
                path = archive_path(dest, name, response)
                partial = path.with_name(path.name + ".part")
                total = int(response.headers.get("content-length", 0))
                with open(partial, "wb") as fh:
                    for chunk in response.iter_bytes(_CHUNK):
                        fh.write(chunk)
                        if progress is not None:
                            progress(fh.tell(), total)
            finally:
                response.close()
        except httpx.TransportError as exc:
            _discard(partial)
            raise _unreachable(request, exc) from exc
        except BaseException:
            _discard(partial)
            raise
        partial.replace(path)
        return path


class AsyncClient:
    """Asynchronous client with the same calls as ``Client``; ``async with`` or ``aclose()``."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, *,
                 timeout_s: float = 60.0, http: httpx.AsyncClient | None = None) -> None:
        self._calls = Calls(url, token, timeout_s)
        self._http = http or httpx.AsyncClient()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise _unreachable(request, exc) from exc
        return response

    async def _run(self, call: Call[T]) -> T:
        return await adrive(self._send, call)

    async def health(self) -> bool:
        return await self._run(self._calls.health())

    async def ready(self) -> dict[str, Any]:
        return await self._run(self._calls.ready())

    async def upload(self, path: str | os.PathLike, name: str, *, version: int | None = None,
                     device: str | None = None, batching: str | None = None,
                     max_batch_size: int | None = None, max_batch_delay_ms: float | None = None,
                     threads: int | None = None, fields: dict[str, Any] | None = None,
                     files: dict[str, str | os.PathLike] | None = None,
                     progress: Progress | None = None,
                     on_stage: StageWatch | None = None) -> dict[str, Any]:
        form = _form(version, device, batching, max_batch_size, max_batch_delay_ms, threads, fields)
        return await self._run(self._calls.upload(path, name, form, files or {}, progress, on_stage))

    async def models(self) -> list[dict[str, Any]]:
        return (await self._run(self._calls.json("/models")))["models"]

    async def info(self, name: str) -> dict[str, Any]:
        return await self._run(self._calls.json(f"/models/{name}"))

    async def predict(self, name: str, inputs: Any, *, version: int | None = None,
                      timeout_s: float | None = None, output: OutputKind = "numpy") -> Any:
        return await self._run(self._calls.predict(name, inputs, version, timeout_s, output))

    async def infer(self, name: str, inputs: Any, *, version: int | None = None,
                    binary: bool = True, outputs: list[str] | None = None,
                    output: OutputKind = "numpy") -> dict[str, Any]:
        return await self._run(self._calls.infer(name, inputs, version, binary, outputs, output))

    async def metadata(self, name: str, version: int | None = None) -> dict[str, Any]:
        return await self._run(self._calls.metadata(name, version))

    async def code(self, name: str, *, version: int | None = None, view: str = "code") -> str:
        return await self._run(self._calls.code(name, version, view))

    async def delete(self, name: str, version: int | None = None) -> dict[str, Any]:
        return await self._run(self._calls.delete(name, version))

    async def pin(self, name: str, version: int) -> dict[str, Any]:
        return await self._run(self._calls.default(name, "pin", version))

    async def unpin(self, name: str) -> dict[str, Any]:
        return await self._run(self._calls.default(name, "unpin"))

    async def rollback(self, name: str) -> dict[str, Any]:
        return await self._run(self._calls.default(name, "rollback"))

    async def download(self, name: str, dest: str | os.PathLike, *, version: int | None = None,
                       progress: Progress | None = None) -> Path:
        request = self._calls.download_request(name, version)
        partial: Path | None = None
        try:
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise_for_error(response)
                path = archive_path(dest, name, response)
                partial = path.with_name(path.name + ".part")
                total = int(response.headers.get("content-length", 0))
                with open(partial, "wb") as fh:  # noqa: ASYNC230 - local disk, small writes
                    async for chunk in response.aiter_bytes(_CHUNK):
                        fh.write(chunk)
                        if progress is not None:
                            progress(fh.tell(), total)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            _discard(partial)
            raise _unreachable(request, exc) from exc
        except BaseException:
            _discard(partial)
            raise
        partial.replace(path)
        return path
