#!/usr/bin/env bash
# Runs the direct-call benchmarks (mesh and tchannel-go in the same run) and
# prints a table of mesh/tchannel-go ratios. Pass BENCHTIME=5s for steadier
# figures; COUNT=3 to repeat.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
out=$(mktemp)
go test -run '^$' -bench 'BenchmarkDirectCall' -benchmem -benchtime "${BENCHTIME:-3s}" -count "${COUNT:-1}" ./client | tee "$out"
echo
awk '
/^BenchmarkDirectCall\// {
  split($1, p, "/"); impl = p[2]; cas = p[3] "/" p[4]; sub(/-[0-9]+$/, "", cas)
  for (i = 2; i <= NF; i++) {
    if ($(i+1) == "calls/s") cps[impl, cas] += $i
    if ($(i+1) == "cpu-ns/op") cpu[impl, cas] += $i
    if ($(i+1) == "allocs/op") al[impl, cas] += $i
  }
  n[impl, cas]++
  if (!(cas in seen)) { seen[cas] = 1; order[++k] = cas }
}
END {
  printf "| case | mesh calls/s | tchannel-go calls/s | throughput ratio | mesh CPU µs/call | tchannel-go CPU µs/call | CPU ratio | allocs/op mesh / tchannel-go |\n"
  printf "|---|---|---|---|---|---|---|---|\n"
  for (j = 1; j <= k; j++) {
    c = order[j]; m = n["mesh", c]; t = n["tchannel-go", c]
    if (!m || !t) continue
    printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx | %.0f / %.0f |\n", c,
      cps["mesh", c]/m, cps["tchannel-go", c]/t, (cps["mesh", c]/m)/(cps["tchannel-go", c]/t),
      cpu["mesh", c]/m/1000, cpu["tchannel-go", c]/t/1000, (cpu["mesh", c]/m)/(cpu["tchannel-go", c]/t),
      al["mesh", c]/m, al["tchannel-go", c]/t
  }
}' "$out"
