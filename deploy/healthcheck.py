#!/usr/bin/env python3
"""Container HEALTHCHECK: exit 0 when GET /ready answers 200 (every stored model loaded)."""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("SCRIPTSERVE_PORT", "8000")
url = f"http://127.0.0.1:{port}/ready"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
