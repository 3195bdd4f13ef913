"""The batching policy, tested deterministically: a gate holds the worker, no timing asserts."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from app.errors import ModelExecutionError, OverloadedError
from app.serving.batching import Batcher, BatchPolicy
from app.serving.runtime import LoadedModel
from tests.support import fakes


class GatedModel(LoadedModel):
    """A real scripted module whose forward waits for the test to open a gate."""

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        super().__init__(module, "cpu")
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batch_sizes: list[int] = []

    def forward(self, inputs):
        self.entered.set()
        self.gate.wait(30)
        self.batch_sizes.append(int(inputs[0].shape[0]))
        return super().forward(inputs)


def make(name="tuple_out", **policy):
    model = GatedModel(fakes.build(name))
    batcher = Batcher(model, BatchPolicy(**{"mode": "on", **policy}), "test")
    batcher.start()
    return model, batcher


async def submit_when_blocked(model, batcher, later):
    """Submit one request, wait until the worker is inside forward, then queue ``later``."""
    first = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
    await asyncio.to_thread(model.entered.wait, 10)
    rest = [asyncio.ensure_future(batcher.submit(inputs, 30)) for inputs in later]
    await asyncio.sleep(0)
    while batcher.queue_depth < len(later):
        await asyncio.sleep(0.001)
    model.gate.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def run(coro):
    return asyncio.run(coro)


def test_idle_request_runs_alone_at_once():
    async def go():
        model, batcher = make()
        model.gate.set()
        out = await batcher.submit([torch.ones(2, 3)], 30)
        await batcher.stop()
        return model, out

    model, out = run(go())
    assert model.batch_sizes == [2]
    assert torch.equal(out[0], torch.full((2, 3), 2.0))


def test_queued_requests_form_one_batch_and_get_their_own_rows():
    async def go():
        model, batcher = make()
        later = [[torch.full((1, 3), float(i))] for i in range(2, 5)]
        results = await submit_when_blocked(model, batcher, later)
        await batcher.stop()
        return model, results

    model, results = run(go())
    assert model.batch_sizes == [1, 3]
    for i, (doubled, sums) in zip(range(2, 5), results[1:]):
        assert torch.equal(doubled, torch.full((1, 3), 2.0 * i))
        assert torch.equal(sums, torch.tensor([3.0 * i]))


def test_multi_sample_requests_count_as_samples_and_limit_holds():
    async def go():
        model, batcher = make(max_batch_size=4)
        later = [[torch.ones(3, 3)], [torch.ones(2, 3)], [torch.ones(1, 3)], [torch.ones(2, 3)]]
        await submit_when_blocked(model, batcher, later)
        await batcher.stop()
        return model

    model = run(go())
    assert model.batch_sizes[0] == 1
    assert all(size <= 4 for size in model.batch_sizes)
    assert sum(model.batch_sizes) == 1 + 3 + 2 + 1 + 2
    assert model.batch_sizes[1:] == [4, 4]  # 3+1 fill the first batch, 2+2 the next


def test_incompatible_shapes_and_dtypes_are_not_mixed():
    async def go():
        model, batcher = make()
        later = [[torch.ones(1, 3)], [torch.ones(1, 5)], [torch.ones(1, 3)],
                 [torch.ones(1, 3, dtype=torch.float64)], [torch.ones(1, 5)]]
        results = await submit_when_blocked(model, batcher, later)
        await batcher.stop()
        return model, results

    model, results = run(go())
    assert sorted(model.batch_sizes[1:]) == [1, 2, 2]
    assert results[2][0].shape == (1, 5) and results[4][0].dtype == torch.float64


def test_a_failing_request_fails_alone():
    async def go():
        model, batcher = make("fails_on_negative")
        later = [[torch.ones(1, 3)], [-torch.ones(1, 3)], [torch.ones(1, 3) * 2]]
        results = await submit_when_blocked(model, batcher, later)
        await batcher.stop()
        return model, results

    model, results = run(go())
    assert isinstance(results[2], ModelExecutionError)
    assert "negative values are not allowed" in results[2].message
    assert torch.equal(results[1], torch.full((1, 3), 2.0))
    assert torch.equal(results[3], torch.full((1, 3), 3.0))
    assert model.batch_sizes[1] == 3  # tried together first, then one by one


def test_under_load_the_delay_waits_for_a_full_batch():
    async def go():
        model, batcher = make(max_batch_size=3, max_batch_delay_ms=60_000)
        first = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 120))
        await asyncio.to_thread(model.entered.wait, 10)
        queued = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 120))
        while batcher.queue_depth < 1:
            await asyncio.sleep(0.001)
        model.gate.set()
        await first
        # the worker now holds one queued request and waits for the batch to fill
        late = [asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 120)) for _ in range(2)]
        await asyncio.wait_for(asyncio.gather(queued, *late), 60)
        await batcher.stop()
        return model

    assert run(go()).batch_sizes == [1, 3]


def test_idle_worker_does_not_wait_for_the_delay():
    async def go():
        model, batcher = make(max_batch_size=8, max_batch_delay_ms=600_000)
        model.gate.set()
        out = await asyncio.wait_for(batcher.submit([torch.ones(1, 3)], 900), 60)
        await batcher.stop()
        return model, out

    model, out = run(go())
    assert model.batch_sizes == [1] and out[0].shape == (1, 3)


def test_full_queue_is_rejected_with_retry_after():
    async def go():
        model, batcher = make(max_queue_size=2)
        first = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
        await asyncio.to_thread(model.entered.wait, 10)
        queued = [asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30)) for _ in range(2)]
        while batcher.queue_depth < 2:
            await asyncio.sleep(0.001)
        with pytest.raises(OverloadedError) as info:
            await batcher.submit([torch.ones(1, 3)], 30)
        model.gate.set()
        await asyncio.gather(first, *queued)
        await batcher.stop()
        return info.value

    err = run(go())
    assert err.status_code == 503 and err.headers["Retry-After"]


def test_unsafe_model_is_never_batched():
    async def go():
        model = GatedModel(fakes.build("batch_mean"))
        batcher = Batcher(model, BatchPolicy(mode="auto"), "test")
        batcher.start()
        first = asyncio.ensure_future(batcher.submit([torch.ones(1, 3)], 30))
        await asyncio.to_thread(model.entered.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit([torch.rand(1, 3)], 30)) for _ in range(4)]
        model.gate.set()
        outs = await asyncio.gather(first, *rest)
        await batcher.stop()
        return model, batcher, outs

    model, batcher, outs = run(go())
    assert batcher.state.enabled is False and "depend on other samples" in batcher.state.reason
    assert all(torch.equal(o, torch.zeros(1, 3)) for o in outs)  # alone, x - mean(x) == 0
