"""Operation records in the store: ``<root>/.operations/<id>.json``, one file per operation.

Each write replaces the file atomically (temp file, fsync, rename), so a reader on any server
sharing the store sees a whole record or the previous one. Records older than a day are
removed when a server prepares the store. No torch here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OPERATIONS = ".operations"
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
KEEP_S = 24 * 3600


class OperationLog:
    """Where operation records live; whole-file writes only."""

    def __init__(self, root: Path) -> None:
        self.folder = Path(root) / OPERATIONS

    def prepare(self, owner: str) -> None:
        """Create the folder; drop day-old records; fail this owner's unfinished ones."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for path in self.folder.glob("*.json"):
            record = self._load(path)
            if record is None or now - float(record.get("updated_at", 0)) > KEEP_S:
                path.unlink(missing_ok=True)
            elif record.get("state") == "running" and record.get("owner") == owner:
                record.update(state="failed", updated_at=now, error={
                    "status": 503, "code": "interrupted",
                    "message": "the server stopped before this operation finished; nothing was "
                               "stored, upload again",
                })
                self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        target = self.folder / f"{record['id']}.json"
        temp = self.folder / f".{record['id']}.{uuid.uuid4().hex[:8]}"
        with open(temp, "w") as fh:
            json.dump(record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)

    def read(self, op_id: str) -> dict[str, Any] | None:
        if not ID_PATTERN.match(op_id):
            return None
        return self._load(self.folder / f"{op_id}.json")

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        records = [r for p in self.folder.glob("*.json") if (r := self._load(p)) is not None]
        records.sort(key=lambda r: float(r.get("created_at", 0)), reverse=True)
        return records[:limit]

    @staticmethod
    def _load(path: Path) -> dict[str, Any] | None:
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable operation record %s: %s", path.name, exc)
            return None
        return record if isinstance(record, dict) else None
