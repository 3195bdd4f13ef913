#!/usr/bin/env bash
# Set up .venv (first run) and serve on 127.0.0.1:8000. An empty store gets the tutorial's
# classifier as model `classifier`, so `POST /models/classifier/predict` answers at once.
# Any SCRIPTSERVE_* variable passes through (see README, Configuration).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
export SCRIPTSERVE_INSTALL_EXAMPLE=${SCRIPTSERVE_INSTALL_EXAMPLE:-true}
exec .venv/bin/scriptserve serve "$@"
