#!/usr/bin/env bash
# Container entrypoint: read token secrets from files (the Docker `*_FILE` convention), then
# exec the command (PID 1 stays the server, so SIGTERM reaches uvicorn's graceful shutdown).
#   SCRIPTSERVE_ADMIN_TOKEN_FILE=/run/secrets/admin_token      -> SCRIPTSERVE_ADMIN_TOKEN
#   SCRIPTSERVE_INFERENCE_TOKEN_FILE=/run/secrets/infer_token  -> SCRIPTSERVE_INFERENCE_TOKEN
set -euo pipefail
for var in SCRIPTSERVE_ADMIN_TOKEN SCRIPTSERVE_INFERENCE_TOKEN; do
  file_var=${var}_FILE
  file=${!file_var:-}
  [[ -n $file ]] || continue
  if [[ -n ${!var:-} ]]; then
    echo "docker-entrypoint: set $var or $file_var, not both" >&2
    exit 64
  fi
  if [[ ! -r $file ]]; then
    echo "docker-entrypoint: $file_var=$file is not a readable file (uid $(id -u) must read it)" >&2
    exit 64
  fi
  token=$(tr -d '\r\n' <"$file")
  if [[ -z $token ]]; then
    echo "docker-entrypoint: $file_var=$file is empty" >&2
    exit 64
  fi
  export "$var=$token"
  unset "$file_var" token
done
exec "$@"
