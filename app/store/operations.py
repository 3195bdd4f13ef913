"""Operation records in the store: ``operations/<id>.json``, one record per operation.

The only records that are overwritten (each write replaces the whole record), so a reader on
any server sharing the store sees a whole record or the previous one. Records older than a
day are removed when a server prepares the store. No torch here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from typing import Any

from app.store.backend import Backend

log = logging.getLogger(__name__)

PREFIX = "operations/"
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
KEEP_S = 24 * 3600


def _gone(owner: str, host: str) -> bool:
    """Whether the server process that owns an operation has stopped."""
    owner_host, _, pid = owner.rpartition(":")
    if owner_host != host or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True  # an earlier process with this pid (a container's pid 1 after a restart)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class OperationLog:
    """Where operation records live."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def prepare(self, host: str) -> None:
        """Drop day-old records; fail unfinished ones whose server process on this host is gone
        (owners are ``host:pid``; another machine's operations are its own business)."""
        now = time.time()
        for key in self.backend.keys(PREFIX):
            record = self._load(key)
            if record is None or now - float(record.get("updated_at", 0)) > KEEP_S:
                self.backend.delete(key)
            elif record.get("state") == "running" and _gone(str(record.get("owner", "")), host):
                record.update(state="failed", updated_at=now, error={
                    "status": 503, "code": "interrupted",
                    "message": "the server stopped before this operation finished; nothing was "
                               "stored, upload again",
                })
                self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        self.backend.put(f"{PREFIX}{record['id']}.json", json.dumps(record).encode())

    def read(self, op_id: str) -> dict[str, Any] | None:
        if not ID_PATTERN.match(op_id):
            return None
        return self._load(f"{PREFIX}{op_id}.json")

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        records = [r for k in self.backend.keys(PREFIX) if (r := self._load(k)) is not None]
        records.sort(key=lambda r: float(r.get("created_at", 0)), reverse=True)
        return records[:limit]

    def _load(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self.backend.get(key)
            record = json.loads(raw) if raw is not None else None
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable operation record %s: %s", key, exc)
            return None
        return record if isinstance(record, dict) else None
