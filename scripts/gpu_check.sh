#!/usr/bin/env bash
# Where CUDA is present: run the GPU-marked tests and a short served-vs-in-process benchmark
# on the GPU (about 3 minutes). Sets up .venv with the CUDA torch build that pip picks
# (no CPU constraint) unless .venv already has a CUDA-enabled torch.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if ! .venv/bin/python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  SCRIPTSERVE_CONSTRAINTS= scripts/setup_env.sh test
fi
.venv/bin/python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
.venv/bin/python -m pytest -q -m gpu tests/serving/test_gpu.py
.venv/bin/python scripts/bench.py --device cuda --models seed_mlp,deep_mlp --concurrency 1,32 --duration 8
