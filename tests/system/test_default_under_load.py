"""Pin, rollback and unpin under 32 concurrent clients on a real server: no request fails,
and every answer comes from the version that was the default at some moment of its request."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import fakes
from tests.support.api import TOKEN
from tests.support.server import LiveServer

pytestmark = pytest.mark.slow
X = {"inputs": [[0.25] * 320]}
CLIENTS = 32


@dataclass
class Change:
    sent: float
    answered: float
    before: int
    after: int


def allowed(changes: list[Change], first: int, sent: float, answered: float) -> set[int]:
    """The defaults in force at any moment between ``sent`` and ``answered``."""
    state, out = first, set()
    for c in changes:
        if c.answered <= sent:
            state = c.after
        elif c.sent < answered:  # the change overlaps the request: either side may answer
            out |= {c.before, c.after}
    return out | {state}


def test_pin_rollback_unpin_under_load(tmp_path: Path):
    archive = fakes.save("classifier", tmp_path)
    with LiveServer(tmp_path / "store", token=TOKEN, SCRIPTSERVE_REQUEST_TIMEOUT_S="600") as server:
        for _ in range(3):
            assert server.upload("m", archive).status_code == 201
        answers: list[tuple[float, float, int, int | None]] = []
        changes: list[Change] = []

        async def client(http: httpx.AsyncClient, stop: asyncio.Event) -> None:
            while not stop.is_set() and len(answers) < 20_000:
                sent = time.monotonic()
                r = await http.post("/models/m/predict", json=X)
                version = r.json().get("version") if r.status_code == 200 else None
                answers.append((sent, time.monotonic(), r.status_code, version))

        async def change(http: httpx.AsyncClient, method: str, path: str, **kw) -> None:
            seen = len(answers)
            while len(answers) < seen + 50:  # let some answers through at each default
                await asyncio.sleep(0.01)
            sent = time.monotonic()
            r = await http.request(method, path, headers=server.auth, **kw)
            assert r.status_code == 200, r.text
            body = r.json()
            changes.append(Change(sent, time.monotonic(), body["previous_default"],
                                  body["default_version"]))

        async def main() -> None:
            stop = asyncio.Event()
            limits = httpx.Limits(max_connections=CLIENTS + 2)
            async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as http:
                tasks = [asyncio.create_task(client(http, stop)) for _ in range(CLIENTS)]
                await change(http, "PUT", "/models/m/default", json={"version": 1})
                await change(http, "PUT", "/models/m/default", json={"version": 3})
                await change(http, "POST", "/models/m/rollback")
                await change(http, "DELETE", "/models/m/default")
                await change(http, "POST", "/models/m/rollback")
                await change(http, "PUT", "/models/m/default", json={"version": 1})
                seen = len(answers)
                while len(answers) < seen + 50:
                    await asyncio.sleep(0.01)
                stop.set()
                await asyncio.gather(*tasks)

        asyncio.run(asyncio.wait_for(main(), 600))

    assert [(c.before, c.after) for c in changes] == [(3, 1), (1, 3), (3, 2), (2, 3), (3, 2), (2, 1)]
    failed = [a for a in answers if a[2] != 200]
    assert not failed, failed[:5]
    wrong = [a for a in answers if a[3] not in allowed(changes, 3, a[0], a[1])]
    assert not wrong, wrong[:5]
    assert {a[3] for a in answers} == {1, 2, 3}
    print(f"{len(answers)} requests from {CLIENTS} clients across {len(changes)} default changes: "
          "0 failed, each answered by a version that was the default during the request")
