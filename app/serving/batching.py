"""When to batch: a bounded queue per model version, inference threads, deadlines, futures.

How to batch (collate / forward / split) lives in ``app.serving.runtime``; whether a model may be
batched at all is decided once by ``app.serving.batch_safety``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from app.errors import (
    DeadlineExceededError,
    ModelExecutionError,
    NotReadyError,
    OutputTooLargeError,
    OverloadedError,
    ScriptServeError,
    exception_line,
    is_out_of_memory,
)
from app.serving.batch_safety import BatchSafety
from app.serving.runtime import LoadedModel, batch_key, batch_rows, collate, split
from app.wire.casting import from_model_error

log = logging.getLogger(__name__)

BatchingMode = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class BatchPolicy:
    """Effective batching settings of one model version."""

    max_batch_size: int = 32
    max_batch_delay_ms: float = 0.0
    max_queue_size: int = 1024
    threads: int = 1
    mode: BatchingMode = "auto"
    max_output_bytes: int = 0  # raw tensor bytes of one request's output; 0: no limit


@dataclass(eq=False)
class Job:
    """One request waiting for, or inside, a forward pass."""

    inputs: list[torch.Tensor]
    rows: int | None
    key: tuple | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    enqueued_at: float
    deadline: float
    started_at: float = 0.0
    finished_at: float = 0.0
    batch_size: int = 0
    expired: bool = False


@dataclass
class BatchingState:
    """Whether this version's requests may be combined, and why."""

    enabled: bool | None  # None: unknown until the probe has run on a real input
    reason: str


BatchObserver = Callable[[list[Job], float], None]


class Batcher:
    """Owns a model version's queue and inference threads."""

    def __init__(
        self,
        model: LoadedModel,
        policy: BatchPolicy,
        label: str = "model",
        observer: BatchObserver | None = None,
    ) -> None:
        self.model = model
        self.policy = policy
        self.label = label
        self.observer = observer
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._accepting = False
        self._waiting = 0  # submitted and not yet answered (touched on the event loop only)
        self._decide_lock = threading.Lock()
        self.executions = 0
        if policy.mode == "off":
            self.state = BatchingState(False, "batching switched off for this model")
        elif policy.mode == "on":
            self.state = BatchingState(True, "batching forced on for this model (not probed)")
        elif model.batch.unbatchable:
            self.state = BatchingState(False, model.batch.unbatchable)
        elif not model.signature.tensors_only:
            self.state = BatchingState(False, "forward takes non-tensor arguments")
        else:
            self.state = BatchingState(None, "not probed yet: the first request's inputs are used")

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference threads and accept requests."""
        self._accepting = True
        for i in range(max(1, self.policy.threads)):
            t = threading.Thread(target=self._run, name=f"infer-{self.label}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    async def stop(self, drain_timeout_s: float = 30.0, queued_deadlines: bool = False) -> None:
        """Stop intake, let queued requests finish, then end the threads.

        The drain lasts ``drain_timeout_s``; with ``queued_deadlines`` (a version retired while
        the server goes on: deletion, unload) at least until the last queued request's own
        deadline, so that a slow model's queue is answered rather than cut off with 503."""
        with self._cond:
            self._accepting = False
            self._cond.notify_all()
            latest = max((job.deadline for job in self._queue), default=0.0)
        deadline = time.monotonic() + drain_timeout_s
        if queued_deadlines:
            deadline = max(deadline, latest + 1.0)
        for t in self._threads:
            await asyncio.to_thread(t.join, max(0.0, deadline - time.monotonic()))
        with self._cond:
            leftover = list(self._queue)
            self._queue.clear()
        for job in leftover:
            _resolve(job, NotReadyError(f"{self.label} was unloaded before this request ran"))

    @property
    def running(self) -> bool:
        """Whether an inference thread is still alive (stopped: one still inside a forward)."""
        return any(t.is_alive() for t in self._threads)

    def join(self) -> None:
        """Wait for every inference thread to end (after ``stop``)."""
        for t in self._threads:
            t.join()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet answered: queued, batching or running."""
        return self._waiting

    def decide_batching(self, template: list[torch.Tensor], deadline: float | None = None
                        ) -> BatchSafety | None:
        """Run the batch-safety probe now (idempotent; thread-safe)."""
        with self._decide_lock:
            if self.state.enabled is not None:
                return None
            result = self.model.batch_safety(template, deadline)
            self.state = BatchingState(result.safe, result.reason)
            log.info("%s batch-safety probe: %s (%s)", self.label, result.safe, result.reason)
            return result

    # intake --------------------------------------------------------------------------------
    async def submit(self, inputs: list[torch.Tensor], timeout_s: float) -> Any:
        """Queue one request and wait for its output (or its error)."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        rows = batch_rows(inputs)
        job = Job(
            inputs=inputs,
            rows=rows,
            key=batch_key(inputs) if rows is not None else None,
            future=loop.create_future(),
            loop=loop,
            enqueued_at=now,
            deadline=now + timeout_s,
        )
        with self._cond:
            if not self._accepting:
                raise NotReadyError(f"{self.label} is not accepting requests (unloading)")
            if len(self._queue) >= self.policy.max_queue_size:
                raise OverloadedError(
                    f"{self.label} has {len(self._queue)} requests queued; retry shortly"
                )
            self._queue.append(job)
            self._cond.notify()
        self._waiting += 1
        timer = loop.call_later(timeout_s, self._expire, job)
        try:
            return await job.future
        finally:
            timer.cancel()
            self._waiting -= 1

    def _expire(self, job: Job) -> None:
        """Deadline passed: answer 504 now and drop the job if it is still queued."""
        job.expired = True
        # inference threads hold the lock only briefly (they wait for a batch with it released)
        with self._cond, contextlib.suppress(ValueError):
            self._queue.remove(job)
        if not job.future.done():
            job.future.set_exception(_deadline_error(self.label))

    # inference thread ---------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                # Requests that queued while this thread was busy show concurrent load: only then
                # is it worth waiting (up to max_batch_delay_ms) for a fuller batch. A lone
                # request reaching an idle thread runs at once.
                under_load = bool(self._queue)
                while not self._queue and self._accepting:
                    self._cond.wait()
                if not self._queue:
                    return
                jobs = self._take(may_wait=under_load)
            try:
                self._execute(jobs)
            except BaseException as exc:  # never let an inference thread die silently
                log.exception("inference thread for %s failed", self.label)
                for job in jobs:
                    _resolve(job, ScriptServeError(f"internal error in the inference thread: {exc}"))

    def _take(self, may_wait: bool) -> list[Job]:
        """Pop the next batch: the head job plus compatible queued jobs (lock held)."""
        first = self._queue.popleft()
        if first.rows is None or self.state.enabled is False:
            return [first]
        if self.state.enabled is None:
            return [first]  # probe runs on this job's inputs before anything is combined
        limit = self.policy.max_batch_size
        jobs, total = [first], first.rows
        self._gather(jobs, total, limit)
        delay = self.policy.max_batch_delay_ms / 1000.0
        if delay > 0 and may_wait:
            until = first.enqueued_at + delay
            while (total := sum(j.rows or 0 for j in jobs)) < limit and self._accepting:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                self._gather(jobs, total, limit)
        return jobs

    def _gather(self, jobs: list[Job], total: int, limit: int) -> None:
        key = jobs[0].key
        keep: deque[Job] = deque()
        while self._queue:
            job = self._queue.popleft()
            if job.key == key and job.rows is not None and total + job.rows <= limit:
                jobs.append(job)
                total += job.rows
            else:
                keep.append(job)
                if total >= limit:
                    break
        keep.extend(self._queue)
        self._queue = keep

    def _execute(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.expired or job.future.done() or now >= job.deadline:
                _resolve(job, _deadline_error(self.label))
            else:
                live.append(job)
        if not live:
            return
        # an empty input tells the probe nothing (and breaks its sampling): wait for a real one
        if self.state.enabled is None and live[0].rows and all(t.numel() for t in live[0].inputs):
            try:
                self.decide_batching(live[0].inputs, live[0].deadline)
            except ScriptServeError as exc:  # the model's host failed under the probe
                for job in live:
                    _resolve(job, exc)
                return
        self._forward_group(live)

    def _forward_group(self, jobs: list[Job]) -> None:
        start = time.monotonic()
        for job in jobs:
            job.started_at = start
        rows = sum(j.rows or 1 for j in jobs)
        try:
            deadline = max(j.deadline for j in jobs)
            if len(jobs) == 1:
                outputs = [self.model.run(jobs[0].inputs, deadline)]
            else:
                batched = self.model.run(collate([j.inputs for j in jobs]), deadline)
                outputs = split(batched, [j.rows or 0 for j in jobs])
        except ScriptServeError as exc:  # the model's host died or was killed: no retry alone
            for job in jobs:
                _resolve(job, exc)
            return
        except Exception as exc:
            if len(jobs) > 1 and is_out_of_memory(exc):
                # A large batch did not fit on the device: halve it before failing anyone.
                log.warning("%s: out of memory on %d samples; splitting the batch", self.label, rows)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                half = len(jobs) // 2
                self._forward_group(jobs[:half])
                self._forward_group(jobs[half:])
                return
            if len(jobs) > 1:  # isolate the failure: run each request alone
                for job in jobs:
                    self._forward_group([job])
                return
            if is_out_of_memory(exc):
                message = f"{self.label} ran out of device memory on this input ({rows} samples)"
            else:
                message = f"the model raised: {exception_line(exc, 500)}"
                if any(not t.is_floating_point() for t in jobs[0].inputs if isinstance(t, torch.Tensor)):
                    message += (" (the inputs were integer tensors: JSON numbers without a decimal "
                                'point decode as int64; send 1.0 rather than 1, or give "dtype")')
            mismatch = from_model_error(message, self.model.signature.names, jobs[0].inputs,
                                        self.model.floating_dtype)
            _resolve(jobs[0], mismatch or ModelExecutionError(message))
            return
        end = time.monotonic()
        self.executions += 1
        for job in jobs:
            job.finished_at = end
            job.batch_size = rows
        executed = jobs
        if self.policy.max_output_bytes:
            jobs, outputs = self._bounded(jobs, outputs)
        if jobs:
            _deliver(jobs, outputs)
        if self.observer is not None:  # after the hand-off: recording never delays answers
            self.observer(executed, end - start)

    def _bounded(self, jobs: list[Job], outputs: list[Any]) -> tuple[list[Job], list[Any]]:
        """Fail the requests whose output is over the limit; keep the rest."""
        limit = self.policy.max_output_bytes
        kept_jobs, kept = [], []
        for job, out in zip(jobs, outputs):
            size = output_bytes(out)
            if size > limit:
                _resolve(job, OutputTooLargeError(
                    f"the model's output for this request is {size} bytes, over the limit of "
                    f"{limit} bytes; send fewer or smaller inputs"))
            else:
                kept_jobs.append(job)
                kept.append(out)
        return kept_jobs, kept


def _deadline_error(label: str) -> DeadlineExceededError:
    return DeadlineExceededError(f"request to {label} exceeded its deadline before it ran")


def output_bytes(value: Any) -> int:
    """Raw bytes of the tensors (and strings) in an output structure."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(output_bytes(v) for v in value)
    if isinstance(value, dict):
        return sum(output_bytes(k) + output_bytes(v) for k, v in value.items())
    if isinstance(value, (str, bytes)):
        return len(value)
    return 8


def _deliver(jobs: list[Job], outputs: list[Any]) -> None:
    loop = jobs[0].loop

    def settle() -> None:
        for job, out in zip(jobs, outputs):
            if not job.future.done():
                job.future.set_result(out)

    if all(j.loop is loop for j in jobs):
        _call(loop, settle)
    else:
        for job, out in zip(jobs, outputs):
            _call(job.loop, _set_result, job, out)


def _resolve(job: Job, exc: BaseException) -> None:
    _call(job.loop, _set_exception, job, exc)


def _set_result(job: Job, value: Any) -> None:
    if not job.future.done():
        job.future.set_result(value)


def _set_exception(job: Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


def _call(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    # RuntimeError: the loop closed (shutdown), so nobody is waiting any more
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)
