"""What tests of the HTTP API share: the admin token, waiting for readiness, uploading."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_ready(client: TestClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("server did not become ready")


def upload(client, name: str, path: Path, **fields) -> object:
    """POST /models with the admin token."""
    data = {"name": name, **{k: str(v) for k, v in fields.items()}}
    with open(path, "rb") as fh:
        return client.post("/models", data=data, files={"file": (path.name, fh)}, headers=AUTH)
