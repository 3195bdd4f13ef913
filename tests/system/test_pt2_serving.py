"""ExportedProgram and AOTInductor packages on a real server, under 32 concurrent clients.

The tutorial's Classification, as a torch.export.save archive uploaded as is, and as an
AOTInductor package compiled by the server (format=aoti: a C++ compiler runs in the compile
process, a minute or more on two cores). Served outputs are compared with the same program
run in this process, and the version's stats show that requests were batched.
"""

from __future__ import annotations

import asyncio
import shutil

import httpx
import pytest
import torch

from tests.support import pt2
from tests.support.compile_sources import classification_weights
from tests.system.test_batch_correctness import hammer

pytestmark = pytest.mark.slow


def _rows(seed: int) -> list[list[float]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(pt2.ROWS, generator=gen) * (1 + i % 5)).tolist() for i in range(64)]


def _check_served(live_server, name: str, program) -> float:
    """Hammer ``name`` with 32 clients; every answer equals ``program`` on that row. Max diff."""
    answers = asyncio.run(hammer(f"{live_server.url}/models/{name}/predict", _rows(3), 32, 8))
    assert len(answers) == 256
    worst = 0.0
    for row, status, body in answers:
        assert status == 200, body
        expected = program(torch.tensor([row]))
        worst = max(worst, (torch.tensor(body["outputs"]) - expected).abs().max().item())
    assert worst < 1e-5
    stats = httpx.get(f"{live_server.url}/models/{name}/stats").json()["versions"][0]["total"]
    assert stats["mean_batch_size"] > 1, stats  # 32 clients, 20 ms to fill: requests were combined
    print(f"{name}: 256 answers under 32 clients, max abs diff vs in-process {worst:.3g}, "
          f"mean batch {stats['mean_batch_size']:.2f}")  # the figure the issue asks for (-s)
    return worst


def test_exported_program_under_32_clients_equals_in_process(live_server, tmp_path):
    archive = pt2.export_classifier(tmp_path / "clf.pt2")
    with open(archive, "rb") as fh:
        r = httpx.post(f"{live_server.url}/models", headers=live_server.auth, timeout=120,
                       data={"name": "ep", "max_batch_delay_ms": "20"}, files={"file": fh})
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "exported_program"
    program = torch.export.load(str(archive)).module()
    _check_served(live_server, "ep", program)
    assert httpx.get(f"{live_server.url}/models/ep").json()["versions"][0]["batching"]["enabled"] is True


NO_COMPILER = shutil.which("g++") is None and shutil.which("c++") is None


@pytest.mark.skipif(NO_COMPILER, reason="needs a C++ compiler")
def test_aoti_compiled_by_the_server_under_32_clients_equals_in_process(live_server, tmp_path):
    weights, eager = classification_weights(tmp_path)
    with open(weights, "rb") as fh:
        r = httpx.post(f"{live_server.url}/models", headers=live_server.auth, timeout=600,
                       data={"name": "aoti", "architecture": "Classification", "format": "aoti",
                             "max_batch_delay_ms": "20"},
                       files={"weights": fh})
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["format"] == "aoti" and info["compile"]["format"] == "aoti"
    package = tmp_path / "downloaded.pt2"
    package.write_bytes(httpx.get(f"{live_server.url}/models/aoti/archive", timeout=60).content)
    compiled = torch._inductor.aoti_load_package(str(package))
    x = torch.randn(3, pt2.ROWS)
    assert (compiled(x) - eager(x)).abs().max().item() < 1e-5
    _check_served(live_server, "aoti", compiled)
    code = httpx.get(f"{live_server.url}/models/aoti/code").json()
    assert code["format"] == "aoti" and any(name.endswith(".cpp") for name in code["submodules"])
