#!/usr/bin/env bash
# Set up .venv with the test extras (first run) and run the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k batching -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh test
.venv/bin/ruff check app tests scripts
exec .venv/bin/python -m pytest "$@"
