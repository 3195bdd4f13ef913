"""What no error body may contain: stack traces, filesystem paths, interpreter internals."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

MARKERS = ("Traceback", 'File "/', "site-packages", "frame #", "Exception raised from",
           ".py\", line", "/usr/lib", "/root/", "/home/")


def assert_no_leak(body: str, store: Path) -> None:
    """Fail if ``body`` shows a stack trace or a path of this machine."""
    paths = {str(Path(store).resolve()), str(Path(store).resolve().parent), sys.prefix,
             os.getcwd(), str(Path(tempfile.gettempdir()) / "")}
    for marker in (*MARKERS, *paths):
        assert marker not in body, f"error body leaks {marker!r}: {body[:500]}"
