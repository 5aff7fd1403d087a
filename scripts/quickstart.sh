#!/usr/bin/env bash
# Quick start: builds mesh, starts a meshd on this host with the example echo
# and kv services advertised to it, and shows meshctl calls answering. With
# CONSUL=1 it first starts a real Consul dev agent (built from the module
# proxy) and meshd registers there; otherwise meshd uses its embedded registry.
# Stays up until Ctrl-C (or exits after the demo with ONCE=1).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
mkdir -p bin .cache/run
go build -ldflags "$(scripts/ldflags.sh)" -o bin/ ./cmd/... ./examples/...
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

consul_flag=(--consul off)
if [ "${CONSUL:-0}" = 1 ]; then
  consul=$(scripts/tool.sh consul)
  "$consul" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -dns-port -1 -grpc-port -1 -log-level warn \
    >.cache/run/consul.log 2>&1 & pids+=($!)
  for _ in $(seq 100); do "$consul" catalog services >/dev/null 2>&1 && break; sleep 0.1; done
  consul_flag=(--consul 127.0.0.1:8500 --peer-listen 127.0.0.1:21302) # the host listener, mTLS from the agent's CA
  echo "consul: http://127.0.0.1:8500/ui (log .cache/run/consul.log)"
fi

bin/meshd "${consul_flag[@]}" --listen 127.0.0.1:21300 --admin 127.0.0.1:21301 >.cache/run/meshd.log 2>&1 & meshd=$!; pids+=($meshd)
# Ready when this meshd answers; if it exited (a port taken by another meshd,
# say), stop here rather than demo against whatever holds the port.
for _ in $(seq 100); do
  if ! kill -0 "$meshd" 2>/dev/null; then
    echo "meshd did not start:" >&2; cat .cache/run/meshd.log >&2; exit 1
  fi
  bin/meshctl status >/dev/null 2>&1 && sleep 0.2 && kill -0 "$meshd" 2>/dev/null && break; sleep 0.1
done
kill -0 "$meshd" 2>/dev/null || { echo "meshd did not start:" >&2; cat .cache/run/meshd.log >&2; exit 1; }
bin/echo --via 127.0.0.1:21300 >.cache/run/echo.log 2>&1 & pids+=($!)
bin/kv --via 127.0.0.1:21300 >.cache/run/kv.log 2>&1 & pids+=($!)
for _ in $(seq 100); do bin/meshctl services 2>/dev/null | grep -q '"kv"' && bin/meshctl services | grep -q '"echo"' && break; sleep 0.1; done

show() { echo "\$ $*"; "$@"; echo; }
show bin/meshctl services
show bin/meshctl call echo echo 'hello, mesh'
show bin/meshctl call kv put '{"key":"greeting","value":"hi"}'
show bin/meshctl call kv get '{"key":"greeting"}'
show bin/meshctl instances kv
echo "dashboard: http://127.0.0.1:21301/   meshd admin: http://127.0.0.1:21301/status   logs: .cache/run/"
if [ "${ONCE:-0}" = 1 ]; then exit 0; fi
echo "mesh is up; try 'bin/meshctl call kv list'. Ctrl-C stops it."
wait
