"""kill -9 while a 100 MB upload is in flight: the store loads, every earlier version answers
exactly as before, and no partial version is visible."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from tests.support import fakes
from tests.support.api import TOKEN
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow
BOUNDARY = "scriptserve-crash-test"
CHUNK = 1 << 20


def big_archive(folder: Path) -> Path:
    """A real 100 MB TorchScript archive (Linear 5000 x 5000)."""
    path = folder / "big.torchscript"
    torch.jit.script(torch.nn.Linear(5000, 5000, bias=False)).save(str(path))
    return path


def streamed_upload(path: Path, name: str, pause_after: int, resume: threading.Event) -> Iterator[bytes]:
    """A multipart body that stops after ``pause_after`` bytes of the file until ``resume``."""
    yield (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n"
           f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
           f"filename=\"{path.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    sent = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            if sent >= pause_after and not resume.is_set():
                resume.wait(120)
            yield block
            sent += len(block)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def answers(server: LiveServer, inputs: dict[str, list]) -> dict[str, str]:
    """The exact response text of every version of every model."""
    out = {}
    for model in httpx.get(f"{server.url}/models", timeout=10).json()["models"]:
        for version in model["versions"]:
            r = httpx.post(f"{server.url}/models/{model['name']}/versions/{version}/predict",
                           json={"inputs": inputs[model["name"]]}, timeout=30)
            assert r.status_code == 200, r.text
            out[f"{model['name']}/{version}"] = r.text
    return out


def test_kill_9_during_a_100_mb_upload_loses_nothing(tmp_path):
    server = LiveServer(tmp_path / "store", token=TOKEN)
    server.start()
    try:
        for name, builder, seed in (("clf", "classifier", 0), ("clf", "classifier", 1),
                                    ("multi", "add_scaled", 0)):
            path = fakes.save(builder, tmp_path, seed)
            with open(path, "rb") as fh:
                r = httpx.post(f"{server.url}/models", headers=server.auth, timeout=120,
                               data={"name": name}, files={"file": (path.name, fh)})
            assert r.status_code == 201, r.text
        inputs = {"clf": torch.randn(3, 320).tolist(), "multi": [[[1.5, -2.0]], [[0.25, 4.0]]]}
        before = answers(server, inputs)
        big = big_archive(tmp_path)
        assert big.stat().st_size >= 100_000_000
        resume = threading.Event()
        outcome: list = []

        def send() -> None:
            body = streamed_upload(big, "clf", 30 * CHUNK, resume)
            try:
                outcome.append(httpx.post(
                    f"{server.url}/models", content=body, timeout=120,
                    headers={**server.auth, "content-type": f"multipart/form-data; boundary={BOUNDARY}"}))
            except httpx.HTTPError as exc:
                outcome.append(exc)

        sender = threading.Thread(target=send)
        sender.start()
        staging = server.store / ".staging"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the server has written part of the upload
            files = list(staging.glob("*/upload-file"))
            if files and files[0].stat().st_size >= 20 * CHUNK:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the upload never reached the server's staging folder")
        server.kill()
        resume.set()
        sender.join(120)
        assert isinstance(outcome[0], httpx.HTTPError)  # the upload died with the server
        assert list(staging.iterdir())  # debris of the half upload is on disk...

        server.start()
        assert list(staging.iterdir()) == []  # ...and start-up removed it
        versions = server.store / "models/clf/versions"
        assert sorted(p.name for p in versions.iterdir()) == ["1.json", "2.json"]
        records = [json.loads(p.read_text()) for p in (server.store / "models").glob("*/versions/*.json")]
        blobs = {p.name for p in (server.store / "blobs").iterdir()}
        assert blobs == {r["sha256"] for r in records}  # no blob of the half upload
        assert answers(server, inputs) == before  # identical bytes, every version
        listed = httpx.get(f"{server.url}/models", timeout=10).json()["models"]
        assert {m["name"]: m["versions"] for m in listed} == {"clf": [1, 2], "multi": [1]}
    finally:
        server.stop()
