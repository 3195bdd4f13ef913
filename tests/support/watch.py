"""A watcher thread for system tests: /health latency and a healthy model's predictions,
sampled throughout a test (what "the server stays up" means, measured)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx


class Watch:
    """Poll ``/health`` and predict on ``model`` every ``period_s`` until stopped."""

    def __init__(self, url: str, model: str | None, inputs: list, period_s: float = 0.05) -> None:
        self.url, self.model, self.inputs, self.period_s = url, model, inputs, period_s
        self.health_max_s = 0.0
        self.health_checks = 0
        self.predict_max_s = 0.0
        self.failures: list[str] = []
        self.predictions = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        print(f"/health max {self.health_max_s * 1000:.1f} ms over {self.health_checks} checks; "
              f"{self.model} predictions max {self.predict_max_s * 1000:.1f} ms over {self.predictions}")

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.is_set():
                start = time.monotonic()
                try:
                    ok = http.get(f"{self.url}/health").status_code == 200
                except httpx.HTTPError as exc:
                    ok, _ = False, exc
                took = time.monotonic() - start
                self.health_checks += 1
                self.health_max_s = max(self.health_max_s, took)
                if not ok:
                    self.failures.append("health")
                if self.model is None:  # health only (a server still loading)
                    self._stop.wait(self.period_s)
                    continue
                start = time.monotonic()
                try:
                    r = http.post(f"{self.url}/models/{self.model}/predict", json={"inputs": self.inputs})
                    if r.status_code != 200:
                        self.failures.append(f"predict {r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"predict: {exc}")
                self.predict_max_s = max(self.predict_max_s, time.monotonic() - start)
                self.predictions += 1
                self._stop.wait(self.period_s)

    def check(self, health_limit_s: float = 0.1) -> None:
        """Every health check and prediction succeeded; health answered within the limit."""
        assert self.failures == [], self.failures[:5]
        assert self.health_checks > 0 and (self.predictions > 0 or self.model is None)
        assert self.health_max_s < health_limit_s, f"/health took {self.health_max_s:.3f} s"


def cpu_ticks(pid: int) -> int:
    """User plus system CPU time of a process so far, in clock ticks (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
