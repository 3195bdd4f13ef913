"""CUDA paths: placement, pinned-memory batching, out-of-memory split. Skipped without CUDA."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from app.serving.batching import Batcher, BatchPolicy
from app.serving.runtime import LoadedModel
from tests.support import fakes
from tests.support.api import upload

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_upload_on_cuda_and_predict_matches_cpu(client, archives):
    r = upload(client, "clf", archives["classifier"], device="cuda")
    assert r.status_code == 201, r.text
    assert r.json()["device"] == "cuda:0"
    x = torch.randn(4, 320)
    out = client.post("/models/clf/predict", json={"inputs": x.tolist()}).json()["outputs"]
    expected = torch.jit.load(str(archives["classifier"]))(x)
    assert torch.allclose(torch.tensor(out), expected, atol=1e-4)


class Gated(LoadedModel):
    def __init__(self, module, device):
        super().__init__(module, device)
        self.gate, self.entered, self.sizes = threading.Event(), threading.Event(), []

    def forward(self, inputs):
        self.entered.set()
        self.gate.wait(30)
        self.sizes.append(int(inputs[0].shape[0]))
        return super().forward(inputs)


def run_blocked(model, later, policy=None):
    async def go():
        batcher = Batcher(model, policy or BatchPolicy(mode="on"), "gpu-test")
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(later[0], 60))
        await asyncio.to_thread(model.entered.wait, 10)
        rest = [asyncio.ensure_future(batcher.submit(x, 60)) for x in later[1:]]
        while batcher.queue_depth < len(later) - 1:
            await asyncio.sleep(0.001)
        model.gate.set()
        outs = await asyncio.gather(first, *rest, return_exceptions=True)
        await batcher.stop()
        return outs

    return asyncio.run(go())


def test_batched_requests_on_cuda_come_back_on_the_host_and_correct():
    module = fakes.build("classifier")
    model = Gated(module.to("cuda"), "cuda:0")
    xs = [[torch.randn(1, 320)] for _ in range(9)]
    outs = run_blocked(model, xs)
    reference = fakes.build("classifier")
    assert model.sizes == [1, 8]
    for x, out in zip(xs, outs):
        assert out.device.type == "cpu"
        assert torch.allclose(out, reference(x[0]), atol=1e-4)


class Hungry(torch.nn.Module):
    """Allocates ``per_sample`` bytes of device memory per sample in the batch."""

    def __init__(self, per_sample: int) -> None:
        super().__init__()
        self.per_sample = per_sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.empty(x.shape[0], self.per_sample, dtype=torch.uint8, device=x.device)
        return x + scratch[:, :1].float() * 0


def test_out_of_memory_batch_is_split_and_retried():
    free, _ = torch.cuda.mem_get_info()
    per_sample = int(free * 0.3)  # 4 samples need 1.2x the free memory, 2 need 0.6x
    module = torch.jit.script(Hungry(per_sample)).to("cuda")
    model = Gated(module, "cuda:0")
    xs = [[torch.ones(1, 2)] for _ in range(5)]
    outs = run_blocked(model, xs)
    assert all(not isinstance(o, BaseException) for o in outs), outs
    assert model.sizes[0] == 1 and 4 in model.sizes and max(model.sizes[model.sizes.index(4) + 1:]) <= 2
    torch.cuda.empty_cache()
