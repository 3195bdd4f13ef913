#!/usr/bin/env bash
# Set up .venv with the test extras (first run), then ruff, mypy and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k batching -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh test
.venv/bin/ruff check app tests scripts
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
