#!/usr/bin/env bash
# Starts or stops deploy/compose.yaml with whichever compose tool the machine
# has (docker-compose v1 or docker compose v2).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v docker-compose >/dev/null 2>&1; then dc=(docker-compose); else dc=(docker compose); fi
dc+=(-p mesh -f deploy/compose.yaml)
case ${1:-up} in
  up)
    "${dc[@]}" up -d
    echo "waiting for the hosts' meshds to be healthy..."
    for i in 1 2 3; do
      for _ in $(seq 120); do
        id=$("${dc[@]}" ps -q "meshd$i" 2>/dev/null)
        [ -n "$id" ] && [ "$(docker inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ] && break
        sleep 1
      done
    done
    "${dc[@]}" ps
    cat <<MSG

mesh is up: meshd admin http://127.0.0.1:21311/status (host1), :21312 (host2), :21313 (host3)
            Jaeger UI  http://127.0.0.1:16686
try:        bin/meshctl call kv put '{"key":"a","value":"1"}' --via 127.0.0.1:21301
MSG
    ;;
  down) "${dc[@]}" down -v --remove-orphans ;;
  *) echo "usage: scripts/compose.sh up|down" >&2; exit 2 ;;
esac
