"""Shared fixtures: settings on a temp store, an in-process client, archives, a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support import fakes
from tests.support.api import TOKEN, wait_ready
from tests.support.server import LiveServer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        model_store=tmp_path / "store",
        admin_token=TOKEN,
        device="cpu",
        install_example=False,
        gc_freeze=False,
        trial_load=False,  # a process start per upload; real servers (LiveServer) keep it on
        grpc_port=0,  # off: in-process tests share the machine; gRPC tests pick a free port
        model_hosts="inline",  # a process per version; real servers and tests/hosting host them
    )


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


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    with LiveServer(tmp_path / "live-store", token=TOKEN) as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/system/ starts real server processes: mark it slow."""
    for item in items:
        if "/tests/system/" in str(item.path):
            item.add_marker(pytest.mark.slow)
