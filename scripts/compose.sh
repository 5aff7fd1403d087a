#!/usr/bin/env bash
# Starts or stops deploy/compose.yaml with whichever compose tool the machine
# has (docker-compose v1 or docker compose v2).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v docker-compose >/dev/null 2>&1; then dc=(docker-compose); else dc=(docker compose); fi
dc+=(-p mesh -f deploy/compose.yaml)
# The ACL policies, tokens and intentions of deploy/compose.yaml (its x-acl
# tokens), written through consul1's CLI once the servers have a leader.
# Each is created once: a second `up` finds them there.
bootstrap() {
  local out
  consul() { "${dc[@]}" exec -T consul1 /consul "$@" 2>&1; }
  once() { out=$(consul "$@") || { grep -qE 'already exists|already in use|more than once' <<<"$out" || { echo "$out" >&2; return 1; }; }; }
  for _ in $(seq 120); do consul acl token read -self >/dev/null && break; sleep 1; done
  once acl policy create -name meshd -rules 'service_prefix "" { policy = "read" intentions = "read" }
node_prefix "" { policy = "read" }
key_prefix "mesh/" { policy = "read" }
service "meshd" { policy = "write" }'
  once acl token create -secret 2f6e8a41-3b5c-4d7e-8f90-a1b2c3d4e5f6 -policy-name meshd -description "meshd (all hosts)"
  local name secret
  for pair in echo:6b1e2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d front:7c2f3d4e-5f6a-4b7c-9d8e-0f1a2b3c4d5e kv:9e4a5b6c-7d8e-4f9a-8b0c-1d2e3f4a5b6c; do
    name=${pair%%:*} secret=${pair#*:}
    once acl policy create -name "$name" -rules "service \"$name\" { policy = \"write\" }
service_prefix \"\" { policy = \"read\" }"
    once acl token create -secret "$secret" -policy-name "$name" -description "$name"
    once intention create -allow '*' "$name"
    once intention create -allow anonymous "$name" # callers that prove no name (meshctl without --as): * covers proven ones only
  done
}

case ${1:-up} in
  up)
    "${dc[@]}" up -d
    echo "writing ACL policies, tokens and intentions..."
    bootstrap
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
