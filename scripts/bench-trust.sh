#!/usr/bin/env bash
# What the host boundary's security costs a call through two meshds (64
# callers, 256 B; internal/meshd BenchmarkHostBoundary): ROUNDS rounds
# (default 6) of plaintext, mTLS and mTLS with 1,000 intentions, each run in
# its own process, in an order that rotates each round (the last run of a
# round measured up to 5% slower here, whichever it was), so the VM's drift
# hits all alike; then the
# mean calls/s of each against plaintext. Last, the per-call authorization
# check alone (internal/intentions BenchmarkDecide, 1,000 rules).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
bin=$(mktemp)
out=$(mktemp)
trap 'rm -f "$bin" "$out"' EXIT
go test -c -o "$bin" ./internal/meshd
modes=(plaintext mtls 'mtls+intentions')
for round in $(seq "${ROUNDS:-6}"); do
  for i in 0 1 2; do
    mode=${modes[$(((i + round) % 3))]}
    "$bin" -test.run '^$' -test.bench "^BenchmarkHostBoundary$/^${mode/+/\\+}\$" -test.benchtime "${BENCHTIME:-3s}" |
      awk '/^BenchmarkHostBoundary/ { for (i = 2; i < NF; i++) if ($(i+1) == "calls/s") c = $i
                                      name = $1; sub(/-[0-9]+$/, "", name); sub(/.*\//, "", name); print name, c }' | tee -a "$out"
  done
done
echo
awk '{ n[$1]++; s[$1] += $2 }
END {
  base = s["plaintext"] / n["plaintext"]
  print "| host boundary | calls/s (mean of " n["plaintext"] " rounds) | vs plaintext |"
  print "|---|---|---|"
  split("plaintext mtls mtls+intentions", k, " ")
  for (i = 1; i <= 3; i++) printf "| %s | %.0f | %.1f%% |\n", k[i], s[k[i]] / n[k[i]], 100 * s[k[i]] / n[k[i]] / base
}' "$out"
echo
go test -run '^$' -bench '^BenchmarkDecide$' -benchmem ./internal/intentions | grep '^Benchmark'
