#!/usr/bin/env bash
# Measures what tracing costs the two-hop path (SDK -> meshd -> meshd -> SDK
# server, 1 KiB, 64 callers; internal/meshd BenchmarkTracing): ROUNDS rounds
# (default 12) of off, 1% and 100% sampling (spans in proto3, the default,
# and in JSON) in turn, each run in its own
# process, then the mean calls/s of each setting against off and the median
# of the rounds' own ratios. On a shared 2-core VM single runs vary by ±10%:
# only many rounds give a figure.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
bin=$(mktemp)
out=$(mktemp)
trap 'rm -f "$bin" "$out"' EXIT
go test -c -o "$bin" ./internal/meshd
for _ in $(seq "${ROUNDS:-12}"); do
  for setting in off 'sample=1%' 'sample=100%' 'json-sample=100%'; do
    "$bin" -test.run '^$' -test.bench "^BenchmarkTracing$/^$setting\$" -test.benchtime "${BENCHTIME:-3s}" -test.benchmem |
      awk '/^BenchmarkTracing/ { for (i = 2; i < NF; i++) { if ($(i+1) == "calls/s") c = $i; if ($(i+1) == "cpu-ns/op") u = $i }
                                 name = $1; sub(/-[0-9]+$/, "", name); sub(/.*\//, "", name); print name, c, u }' | tee -a "$out"
  done
done
echo
awk '
{ n[$1]++; cps[$1] += $2; cpu[$1] += $3 }
$1 == "off" { off = $2 }
$1 != "off" { r[$1, ++m[$1]] = $2 / off }
END {
  print "| sampling | calls/s (mean) | vs off (mean) | vs off (median round) | CPU µs/call |"
  print "|---|---|---|---|---|"
  split("off sample=1% sample=100% json-sample=100%", s, " ")
  for (i = 1; i <= 4; i++) {
    k = s[i]; if (!n[k]) continue
    med = "—"
    if (k != "off") {
      # insertion sort of this setting'"'"'s ratios, then the middle
      for (a = 1; a <= m[k]; a++) v[a] = r[k, a]
      for (a = 2; a <= m[k]; a++) { x = v[a]; b = a - 1; while (b >= 1 && v[b] > x) { v[b+1] = v[b]; b-- } v[b+1] = x }
      mid = (m[k] % 2) ? v[(m[k]+1)/2] : (v[m[k]/2] + v[m[k]/2+1]) / 2
      med = sprintf("%+.1f%%", (mid - 1) * 100)
    }
    vs = (k == "off") ? "—" : sprintf("%+.1f%%", (cps[k] / n[k] / (cps["off"] / n["off"]) - 1) * 100)
    printf "| %s | %.0f | %s | %s | %.1f |\n", k, cps[k] / n[k], vs, med, cpu[k] / n[k] / 1000
  }
}' "$out"
