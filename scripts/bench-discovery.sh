#!/usr/bin/env bash
# What following Consul costs as the catalog and the fleet grow: a real
# Consul agent with S services x 3 instances, K meshd processes each using 10
# of them, 100 health flips at 5 per second (integration BenchmarkDiscovery).
# Prints one table row per size.
#   SERVICES=100,1000,10000 MESHDS=10,50 (the defaults)
#   MESHD=path/to/meshd     measures another meshd binary (e.g. an older commit's)
#   MESHD_ARGS="--consul-reads cached"   more meshd arguments
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
scripts/tool.sh consul >/dev/null
out=$(mktemp)
MESH_BENCH_SERVICES=${SERVICES:-100,1000,10000} MESH_BENCH_MESHDS=${MESHDS:-10,50} MESH_BENCH_MESHD=${MESHD:-} MESH_BENCH_MESHD_ARGS=${MESHD_ARGS:-} \
  go test -tags integration -run '^$' -bench BenchmarkDiscovery -benchtime 1x -timeout 90m ./integration | tee "$out"
echo
awk '
function metric(name,   i) { for (i = 2; i < NF; i++) if ($(i+1) == name) return $i; return "-" }
BEGIN {
  print "| services | meshds | Consul CPU per flip (idle Consul per s) | each meshd: CPU per flip | bytes from Consul per flip | flip → routing p50 / p99 | meshd RSS | missed |"
  print "|---|---|---|---|---|---|---|---|"
}
/^BenchmarkDiscovery\// {
  split($1, p, "/"); sub(/services=/, "", p[2]); sub(/meshds=/, "", p[3]); sub(/-[0-9]+$/, "", p[3])
  printf "| %s | %s | %.1f ms (%.0f ms) | %.3f ms | %.0f B | %.0f / %.0f ms | %.0f MiB | %s |\n", p[2], p[3], metric("consul-ms/flip"), metric("consul-idle-ms/s"),
    metric("meshd-ms/flip"), metric("meshd-B/flip"), metric("p50-ms"), metric("p99-ms"), metric("meshd-MiB"), metric("missed")
}' "$out"
rm -f "$out"
