#!/usr/bin/env bash
# Regenerate app/grpc/proto/open_inference_pb2.py(i) from open_inference.proto.
# The generated files are committed: serving needs only grpcio and protobuf, not grpcio-tools.
# Generated with grpcio-tools 1.75.1 (protobuf 6.31 gencode), which runs on protobuf 6 and 7
# (tritonclient 2.73 needs protobuf < 7). Usage: scripts/gen_grpc.sh [python with grpcio-tools]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-.venv/bin/python}
"$py" -m grpc_tools.protoc -I app/grpc/proto --python_out=app/grpc/proto --pyi_out=app/grpc/proto \
  app/grpc/proto/open_inference.proto
