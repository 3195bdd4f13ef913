"""Uploads as tracked operations (``Prefer: respond-async``): stage, timings, result, cancel.

An operation runs the same ingest as a synchronous upload, in a task of its own. Code along
the way reports where it is with ``stage("screening")``: the current operation travels in a
context variable, so the call also works in threads started by ``asyncio.to_thread``, and is
a no-op outside an operation. Every change is written to the store's operation log, so any
server sharing the store (or this one after a restart) answers for the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from app.errors import ConflictError, NotFoundError, ScriptServeError, exception_line, redact_paths
from app.sandbox.process import cancel_scope
from app.store.operations import OperationLog

log = logging.getLogger(__name__)

STAGES = ("receiving", "compiling", "screening", "trial load", "loading", "checking",
          "warming up", "committing", "probing", "serving")
COMMITTED = frozenset({"committing", "probing", "serving"})  # too late to cancel from here
_current: ContextVar[Operation | None] = ContextVar("operation", default=None)


def stage(name: str) -> None:
    """Report that the current operation (if any) has reached stage ``name``."""
    op = _current.get()
    if op is not None:
        op.enter(name)


class Operation:
    """One tracked upload; changes come from the event loop and from worker threads."""

    def __init__(self, model: str, owner: str, publish: Callable[[Operation], None]) -> None:
        self.id = uuid.uuid4().hex
        self.model = model
        self.owner = owner
        self.created_at = time.time()
        self.state = "running"
        self.stages: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.revision = 0
        self.cancel = threading.Event()
        self.task: asyncio.Task | None = None
        self._publish = publish
        self._lock = threading.Lock()
        self._stage_start = time.monotonic()

    @property
    def stage(self) -> str:
        return self.stages[-1]["name"] if self.stages else "receiving"

    def enter(self, name: str) -> None:
        with self._lock:
            self._close_stage()
            self.stages.append({"name": name, "started_at": time.time(), "seconds": None})
            self._stage_start = time.monotonic()
            self.revision += 1
        self._publish(self)

    def finish(self, state: str, result: dict[str, Any] | None = None,
               error: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._close_stage()
            self.state, self.result, self.error = state, result, error
            self.revision += 1
        self._publish(self)

    def _close_stage(self) -> None:
        if self.stages and self.stages[-1]["seconds"] is None:
            self.stages[-1]["seconds"] = round(time.monotonic() - self._stage_start, 3)

    def record(self) -> dict[str, Any]:
        with self._lock:
            stages = [dict(s) for s in self.stages]
            if stages and stages[-1]["seconds"] is None:  # the running stage, so far
                stages[-1]["running_seconds"] = round(time.monotonic() - self._stage_start, 3)
            return {
                "id": self.id, "kind": "upload", "model": self.model, "owner": self.owner,
                "state": self.state, "stage": self.stage, "stages": stages,
                "created_at": self.created_at, "updated_at": time.time(),
                "revision": self.revision, "result": self.result, "error": self.error,
            }


def _error_of(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ScriptServeError):
        return {"status": exc.status_code, "code": exc.code, "message": redact_paths(exc.message)}
    log.error("upload operation failed unexpectedly: %s", exception_line(exc), exc_info=exc)
    return {"status": 500, "code": "internal_error", "message": "internal error (see the server log)"}


class Operations:
    """The operations this server runs, and the store's log for everyone else's."""

    def __init__(self, oplog: OperationLog) -> None:
        self.log = oplog
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}"  # several server processes may share a host
        self._ops: dict[str, Operation] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def prepare(self) -> None:
        self.log.prepare(self.host)

    def start(self, model: str, work: Callable[[], Awaitable[dict[str, Any]]],
              received_s: float = 0.0) -> Operation:
        """Run ``work`` as a new operation (its body took ``received_s`` to arrive); returns at once."""
        self._loop = asyncio.get_running_loop()
        self._changed = self._changed or asyncio.Event()
        op = Operation(model, self.owner, self._publish)
        op.stages.append({"name": "receiving", "started_at": op.created_at - received_s,
                          "seconds": round(received_s, 3)})
        self._ops[op.id] = op
        self._publish(op)
        op.task = asyncio.create_task(self._run(op, work), name=f"operation-{op.id}")
        return op

    async def _run(self, op: Operation, work: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        _current.set(op)  # this task's own context: threads it starts inherit both
        cancel_scope.set(op.cancel)
        try:
            result = await work()
        except asyncio.CancelledError:
            op.finish("cancelled", error={"status": 409, "code": "cancelled",
                                          "message": "the upload was cancelled; nothing was stored"})
            return
        except Exception as exc:
            op.finish("failed", error=_error_of(exc))
            return
        op.finish("succeeded", result=result)

    def _publish(self, op: Operation) -> None:
        """Persist a change and wake long polls (from any thread)."""
        try:
            self.log.write(op.record())
        except OSError as exc:
            log.error("could not write operation %s: %s", op.id, exc)
        if self._loop is not None and self._changed is not None:
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    def get(self, op_id: str) -> dict[str, Any]:
        op = self._ops.get(op_id)
        record = op.record() if op is not None else self.log.read(op_id)
        if record is None:
            raise NotFoundError(f"no operation {op_id!r} (records are kept for a day)")
        return record

    async def wait(self, op_id: str, after: int, wait_s: float) -> dict[str, Any]:
        """The record once its revision passes ``after``, or after ``wait_s`` seconds."""
        deadline = time.monotonic() + wait_s
        while True:
            record = self.get(op_id)
            left = deadline - time.monotonic()
            if record["revision"] > after or record["state"] != "running" or left <= 0:
                return record
            if op_id in self._ops and self._changed is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
            else:  # another server's operation: read its record again
                await asyncio.sleep(min(left, 0.25))

    def recent(self) -> list[dict[str, Any]]:
        return self.log.recent()

    async def cancel(self, op_id: str) -> dict[str, Any]:
        """Cancel a running operation of this server; kills its compile or trial process."""
        op = self._ops.get(op_id)
        if op is None:
            record = self.get(op_id)  # 404 if unknown
            if record["state"] == "running":
                raise ConflictError(f"operation {op_id} runs on another server "
                                    f"({record.get('owner')}); cancel it there")
            raise ConflictError(f"operation {op_id} has already finished: {record['state']}")
        if op.state != "running":
            raise ConflictError(f"operation {op_id} has already finished: {op.state}")
        if op.stage in COMMITTED:
            raise ConflictError(f"operation {op_id} is past cancelling: the version is being "
                                "committed; delete the version once it is served")
        op.cancel.set()  # kills the sandboxed process, if one runs
        assert op.task is not None
        op.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(op.task), 30)
        return op.record()

    async def close(self) -> None:
        """Shutdown: cancel what still runs."""
        running = [op for op in self._ops.values() if op.state == "running" and op.task]
        for op in running:
            op.cancel.set()
            op.task.cancel()  # type: ignore[union-attr]
        await asyncio.gather(*(op.task for op in running if op.task), return_exceptions=True)
