"""Entry point of isolated task processes: ``python -m app.sandbox.child TASK``.

Reads ``payload.json`` from the working directory, runs the task, writes ``result.json``
(``{"ok": true, ...}`` or ``{"ok": false, "reason": ..., "message": ...}``). Tasks register
in ``TASKS``; each takes the payload dict and returns a JSON-ready dict.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.errors import exception_line
from app.sandbox.process import PAYLOAD_FILE, RESULT_FILE

Task = Callable[[dict[str, Any]], dict[str, Any]]


class TaskFailure(Exception):
    """A task's expected failure, reported with a reason word and a message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _echo(payload: dict[str, Any]) -> dict[str, Any]:
    """A trivial task for tests of the isolation itself."""
    return {"echo": payload}


TASKS: dict[str, str | Task] = {
    "echo": _echo,
    "compile": "app.compiler.task:compile_task",
    "trial_load": "app.intake.trial:run_trial",
}


def _resolve(task: str | Task) -> Task:
    if callable(task):
        return task
    module, _, name = task.partition(":")
    return getattr(__import__(module, fromlist=[name]), name)


def main(argv: list[str]) -> int:
    name = argv[1] if len(argv) > 1 else ""
    out = Path(RESULT_FILE)
    try:
        if name not in TASKS:
            raise TaskFailure("unknown_task", f"unknown task {name!r}")
        payload = json.loads(Path(PAYLOAD_FILE).read_text())
        result = {"ok": True, **_resolve(TASKS[name])(payload)}
    except TaskFailure as exc:
        result = {"ok": False, "reason": exc.reason, "message": exc.message}
    except MemoryError:
        result = {"ok": False, "reason": "memory_limit", "message": "the task ran out of memory"}
    except Exception as exc:  # report, do not crash: the parent turns this into a 422
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exception_line(exc, 480)}"
        reason = "memory_limit" if "allocate" in message or "bad_alloc" in message else "failed"
        result = {"ok": False, "reason": reason, "message": message}
    out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    # Run the importable copy of this module: tasks raise ``app.sandbox.child.TaskFailure``, which is
    # not the class this ``__main__`` copy defines.
    from app.sandbox.child import main as _main

    sys.exit(_main(sys.argv))
