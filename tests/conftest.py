"""Shared fixtures: settings on a temp store, an in-process client, archives, a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests import fakes
from tests.server import LiveServer

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        model_store=tmp_path / "store",
        admin_token=TOKEN,
        device="cpu",
        install_example=False,
        gc_freeze=False,
        trial_load=False,  # a process start per upload; real servers (LiveServer) keep it on
    )


def wait_ready(client: TestClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("server did not become ready")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fake model, scripted and saved once per test session."""
    folder = tmp_path_factory.mktemp("archives")
    return {name: fakes.save(name, folder) for name in fakes.BUILDERS}


def upload(client, name: str, path: Path, **fields) -> object:
    """POST /models with the admin token."""
    data = {"name": name, **{k: str(v) for k, v in fields.items()}}
    with open(path, "rb") as fh:
        return client.post("/models", data=data, files={"file": (path.name, fh)}, headers=AUTH)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "live-store", token=TOKEN) as server:
        yield server
