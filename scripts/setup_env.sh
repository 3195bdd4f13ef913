#!/usr/bin/env bash
# Create .venv at the project root (if missing) and install ScriptServe into it.
# Usage: scripts/setup_env.sh [extras]   e.g. scripts/setup_env.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
py=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$py" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# Constraints pin the CPU torch wheel; set SCRIPTSERVE_CONSTRAINTS= to let pip choose (e.g. CUDA).
constraints=${SCRIPTSERVE_CONSTRAINTS-constraints-cpu.txt}
args=(-q)
[[ -n $constraints ]] && args+=(-c "$constraints")
target="."
[[ -n $extras ]] && target=".[$extras]"
stamp=".venv/.installed-${extras:-base}"
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  .venv/bin/pip install "${args[@]}" -e "$target"
  touch "$stamp"
fi
