#!/usr/bin/env bash
# Runs mesh's call benchmarks, with tchannel-go measured in the same run as the
# reference, and prints three tables of figures and ratios: direct calls
# (client/BenchmarkDirectCall), meshd hops in one process
# (internal/meshd/BenchmarkHop, with BenchmarkHopFloor: what a relay that only
# copies bytes adds in the same process) and hops across processes
# (integration/BenchmarkHopProcesses: caller, meshds and server each a process),
# and what this machine charges for the steps a hop is made of (internal/outbox
# BenchmarkPrices).
# BENCHTIME=5s for steadier figures; COUNT=3 to average repeated runs.
# On a 2-core machine client and server share the cores: compare ratios from
# one run, not absolute numbers across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
# metric NAME is the value a benchmark line gives for NAME, in every table's awk.
metric='function metric(name,   i) { for (i = 2; i < NF; i++) if ($(i+1) == name) return $i; return 0 }'
out=$(mktemp)
go test -run '^$' -bench 'BenchmarkDirectCall|BenchmarkHop' -benchmem -benchtime "${BENCHTIME:-3s}" \
  -count "${COUNT:-1}" ./client ./internal/meshd | tee "$out"
echo
awk "$metric"'
/^Benchmark(DirectCall|Hop|HopFloor)\// {
  name = $1; sub(/-[0-9]+$/, "", name); split(name, p, "/")
  if (p[1] == "BenchmarkDirectCall") { key = p[2] SUBSEP p[3] "/" p[4] } else { key = p[2] SUBSEP p[3] }
  n[key]++; ns[key] += $3; cps[key] += metric("calls/s"); cpu[key] += metric("cpu-ns/op")
  p50[key] += metric("p50-µs"); p99[key] += metric("p99-µs"); al[key] += metric("allocs/op")
}
function avg(a, k) { return a[k] / n[k] }
END {
  split("c=1/body=1KiB c=64/body=1KiB c=512/body=1KiB c=64/body=100KiB", cases, " ")
  print "Direct calls, mesh vs tchannel-go (ratio = mesh / tchannel-go):"
  print "| case | mesh calls/s | tchannel-go calls/s | throughput ratio | mesh CPU µs/call | tchannel-go CPU µs/call | CPU ratio | allocs/op |"
  print "|---|---|---|---|---|---|---|---|"
  for (i = 1; i <= 4; i++) {
    m = "mesh" SUBSEP cases[i]; t = "tchannel-go" SUBSEP cases[i]
    if (!n[m] || !n[t]) continue
    printf "| %s | %.0f | %.0f | %.2fx | %.1f | %.1f | %.2fx | %.0f / %.0f |\n", cases[i], avg(cps, m), avg(cps, t),
      avg(cps, m) / avg(cps, t), avg(cpu, m) / 1000, avg(cpu, t) / 1000, avg(cpu, m) / avg(cpu, t), avg(al, m), avg(al, t)
  }
  print ""
  print "Hops, 1 KiB (kept = throughput / the same stack direct over TCP; added = p50 minus its p50):"
  print "| path | c | calls/s | kept | p50 µs | p99 µs | added p50 µs |"
  print "|---|---|---|---|---|---|---|"
  npaths = split("mesh-direct mesh-direct-unix mesh-1hop mesh-1hop-unix mesh-1hop-opsoff mesh-2hop tchannel-direct tchannel-relay", paths, " ")
  nloads = split("1 64 512", loads, " ")
  for (l = 1; l <= nloads; l++) {
    c = loads[l]
    for (i = 1; i <= npaths; i++) {
      k = paths[i] SUBSEP "c=" c; if (!n[k]) continue
      base = (paths[i] ~ /^mesh/ ? "mesh-direct" : "tchannel-direct") SUBSEP "c=" c
      printf "| %s | %d | %.0f | %.0f%% | %.0f | %.0f | %+.0f |\n", paths[i], c, avg(cps, k),
        100 * avg(cps, k) / avg(cps, base), avg(p50, k), avg(p99, k), avg(p50, k) - avg(p50, base)
    }
  }
  print ""
  print "The floor at one caller (BenchmarkHopFloor: 1 KiB through a relay that only copies bytes, between plain Go"
  print "sockets, between the SDK and an SDK server, between tchannel-go and tchannel-go), and each stack with its own relay between"
  print "its own ends (BenchmarkHop): µs per call; over = what that relay adds beyond what the byte copier adds:"
  print "| ends | network | direct | byte copier | adds | its relay | adds | over |"
  print "|---|---|---|---|---|---|---|---|"
  nfloor = split("echo echo sdk sdk tchannel", endsOf, " "); split("tcp unix tcp unix tcp", netOf, " ")
  split("- - mesh-direct mesh-direct-unix tchannel-direct", dOf, " "); split("- - mesh-1hop mesh-1hop-unix tchannel-relay", hOf, " ")
  for (i = 1; i <= nfloor; i++) {
    e = netOf[i] "-" endsOf[i] SUBSEP "c=1"; er = netOf[i] "-" endsOf[i] "-relay" SUBSEP "c=1"
    if (!n[e] || !n[er]) continue
    d = dOf[i] SUBSEP "c=1"; h = hOf[i] SUBSEP "c=1"; own = "-"; over = "-"; ownAdd = "-"
    if (n[d] && n[h]) {
      own = sprintf("%.1f", avg(ns, h) / 1000); ownAdd = sprintf("%+.1f", (avg(ns, h) - avg(ns, d)) / 1000)
      over = sprintf("%+.1f", ((avg(ns, h) - avg(ns, d)) - (avg(ns, er) - avg(ns, e))) / 1000)
    }
    printf "| %s | %s | %.1f | %.1f | %+.1f | %s | %s | %s |\n", endsOf[i], netOf[i], avg(ns, e) / 1000,
      avg(ns, er) / 1000, (avg(ns, er) - avg(ns, e)) / 1000, own, ownAdd, over
  }
  print ""
  print "The ops view (mesh_calls_total per edge, history, dashboard) on vs off (--ops-view), 1 hop, 1 KiB; CPU of the"
  print "whole process (caller, meshd, server) per call, and the CPU the hop adds (minus mesh-direct); target: at most 3% more:"
  print "| c | CPU µs/call on | off | change | hop CPU µs/call on | off | change | allocs/op on / off |"
  print "|---|---|---|---|---|---|---|---|"
  for (l = 1; l <= nloads; l++) {
    c = loads[l]
    on = "mesh-1hop" SUBSEP "c=" c; off = "mesh-1hop-opsoff" SUBSEP "c=" c; d = "mesh-direct" SUBSEP "c=" c
    if (!n[on] || !n[off] || !n[d]) continue
    hon = avg(cpu, on) - avg(cpu, d); hoff = avg(cpu, off) - avg(cpu, d)
    printf "| %d | %.1f | %.1f | %+.1f%% | %.1f | %.1f | %+.1f%% | %.0f / %.0f |\n", c, avg(cpu, on) / 1000, avg(cpu, off) / 1000,
      100 * (avg(cpu, on) / avg(cpu, off) - 1), hon / 1000, hoff / 1000, 100 * (hon / hoff - 1), avg(al, on), avg(al, off)
  }
}' "$out"

# What this machine charges for the steps of a relayed message (a read that
# finds the socket empty, a write and a read of 1 KiB, a round trip through
# Go's poller, a goroutine hand-off: internal/outbox BenchmarkPrices): a hop
# adds at least a round trip's steps to each call, so the in-process hop
# figures above read against these. PRICES=0 skips it.
if [ "${PRICES:-1}" != 0 ]; then
  echo
  go test -run '^$' -bench 'BenchmarkPrices' -benchtime 20000x -count "${COUNT:-1}" ./internal/outbox | awk "$metric"'
  /^BenchmarkPrices\// {
    name = $1; sub(/-[0-9]+$/, "", name); split(name, p, "/"); k = p[2] SUBSEP p[3]
    n[k]++; ns[k] += $3; wr[k] += metric("write-ns"); rd[k] += metric("read-ns"); ho += metric("ns/hand-off"); nho += (p[2] == "hand-off")
  }
  END {
    print "What this machine charges, µs (BenchmarkPrices; a hop adds at least a round trip of these steps to a call):"
    print "| network | read of an empty socket | write 1 KiB | read 1 KiB | round trip 1 KiB (2 of each, 2 poller wake-ups) |"
    print "|---|---|---|---|---|"
    split("tcp unix", nets, " ")
    for (i = 1; i <= 2; i++) {
      e = nets[i] SUBSEP "read-empty"; w = nets[i] SUBSEP "write-read-1KiB"; r = nets[i] SUBSEP "round-trip-1KiB"
      if (!n[e] || !n[w] || !n[r]) continue
      printf "| %s | %.2f | %.2f | %.2f | %.1f |\n", nets[i], ns[e] / n[e] / 1000, wr[w] / n[w] / 1000, rd[w] / n[w] / 1000, ns[r] / n[r] / 1000
    }
    if (nho) printf "A goroutine hand-off on a channel: %.2f µs\n", ho / nho / 1000
  }'
fi

# Hops across processes (caller, meshd(s), server each a process; CPU and
# read/write system calls summed over all of them), then issue 22's
# 32-caller targets judged on pairs of runs (BenchmarkHopTargets: each hop
# run right after a direct one; HOP_ROUNDS pairs, default 5), and where one
# meshd's hop waits (BenchmarkHopTrace, its runtime trace). PROCESSES=0
# skips the three.
if [ "${PROCESSES:-1}" != 0 ]; then
  procs=$(mktemp)
  for round in $(seq "${COUNT:-1}"); do
    go test -tags integration -run '^$' -bench 'BenchmarkHopProcesses' -benchtime 1x -timeout 30m ./integration | tee -a "$procs"
  done
  echo
  awk "$metric"'
  /^BenchmarkHopProcesses\// {
    name = $1; sub(/-[0-9]+$/, "", name); split(name, p, "/"); key = p[2] SUBSEP p[3]
    n[key]++; cps[key] += metric("calls/s"); cpu[key] += metric("cpu-µs/call"); sys[key] += metric("syscalls/call")
    p50[key] += metric("p50-µs"); p99[key] += metric("p99-µs")
  }
  function avg(a, k) { return a[k] / n[k] }
  END {
    print "Hops across processes, 1 KiB (kept = throughput / the same stack direct; CPU and read/write syscalls per call summed over caller, meshd(s) and server):"
    print "| path | c | calls/s | kept | CPU µs/call | syscalls/call | p50 µs | p99 µs |"
    print "|---|---|---|---|---|---|---|---|"
    nc = split("1 32 64 256", cs, " ")
    np = split("mesh-direct mesh-1hop mesh-1hop-unix mesh-2hop-mtls mesh-2hop-mtls-unix mesh-2hop-plain-unix tchannel-direct tchannel-relay", paths, " ")
    for (j = 1; j <= nc; j++) {
      for (i = 1; i <= np; i++) {
        k = paths[i] SUBSEP "c=" cs[j]; if (!n[k]) continue
        base = (paths[i] ~ /^mesh/ ? "mesh-direct" : "tchannel-direct") SUBSEP "c=" cs[j]
        printf "| %s | %s | %.0f | %.0f%% | %.1f | %.1f | %.0f | %.0f |\n", paths[i], cs[j], avg(cps, k),
          100 * avg(cps, k) / avg(cps, base), avg(cpu, k), avg(sys, k), avg(p50, k), avg(p99, k)
      }
    }
  }' "$procs"
  echo
  targets=$(mktemp)
  go test -tags integration -run '^$' -bench 'BenchmarkHopTargets' -benchtime 1x -timeout 30m ./integration | tee "$targets"
  echo
  awk "$metric"'
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  /^BenchmarkHopTargets\// {
    name = $1; sub(/-[0-9]+$/, "", name); split(name, p, "/"); k = p[2] SUBSEP p[3]
    if (p[4] == "direct") { dcps[k] = metric("calls/s"); dcpu[k] = metric("cpu-µs/call"); next }
    if (!(k in dcps)) next
    n[p[2]]++; i = n[p[2]]
    kept[p[2], i] = 100 * metric("calls/s") / dcps[k]; added[p[2], i] = metric("cpu-µs/call") - dcpu[k]
    # CPUs kept busy: calls/s times CPU per call. A path that keeps them less
    # busy than direct loses throughput to idle time, not to work.
    dbusy[p[2], i] = dcps[k] * dcpu[k] / 1e6; busy[p[2], i] = metric("calls/s") * metric("cpu-µs/call") / 1e6
    list[p[2]] = list[p[2]] sprintf(" %.0f%%", kept[p[2], i])
  }
  END {
    print "The 32-caller targets on paired runs (BenchmarkHopTargets: each hop run right after a direct one; apps on meshd Unix socket):"
    print "| path | pairs | kept, each pair | median kept | target | median CPU µs/call added | target | CPUs busy, direct → hop (medians) |"
    print "|---|---|---|---|---|---|---|---|"
    np = split("mesh-1hop-unix mesh-2hop-mtls-unix", paths, " "); split("80% 65%", keptT, " "); split("12 -", cpuT, " ")
    for (j = 1; j <= np; j++) {
      path = paths[j]; m = n[path]; if (!m) continue
      for (i = 1; i <= m; i++) { ks[i] = kept[path, i]; as[i] = added[path, i]; db[i] = dbusy[path, i]; hb[i] = busy[path, i] }
      printf "| %s | %d |%s | %.0f%% | %s | %+.1f | %s | %.2f → %.2f |\n", path, m, list[path], median(ks, m), keptT[j], median(as, m), cpuT[j], median(db, m), median(hb, m)
    }
  }' "$targets"

  # Where one meshd's hop waits, from its runtime trace (BenchmarkHopTrace).
  echo
  waits=$(mktemp)
  go test -tags integration -run '^$' -bench 'BenchmarkHopTrace' -benchtime 1x -timeout 10m ./integration | tee "$waits"
  echo
  awk "$metric"'
  BEGIN {
    print "Where one meshd hop waits (BenchmarkHopTrace: meshd runtime trace, 2 s; per call; calls/s while traced):"
    print "| callers | calls/s | socket wake-ups | hand-offs | hand-off waits for the processor, p50 µs | processor idle | idle spells |"
    print "|---|---|---|---|---|---|---|"
  }
  /^BenchmarkHopTrace\// {
    c = $1; sub(/^BenchmarkHopTrace\/c=/, "", c); sub(/-[0-9]+$/, "", c)
    printf "| %s | %.0f | %.2f | %.2f | %.1f | %.0f%% | %.3f |\n", c, metric("calls/s"), metric("socket-wakes/call"),
      metric("handoffs/call"), metric("handoff-wait-p50-µs"), metric("idle-%"), metric("idle-spells/call")
  }' "$waits"
fi

# The ops view's costs (docs/PERFORMANCE.md): counting a call on its edge,
# an hour of history at 1,000 services, and the dashboard's services view at
# 1,000 services in Chromium. OPSVIEW=0 skips them.
if [ "${OPSVIEW:-1}" != 0 ]; then
  echo
  echo "Ops view:"
  go test -run '^$' -bench "BenchmarkEdgeDone" -benchmem -benchtime 1000000x -cpu 1,2 ./internal/golden | grep -E "^Benchmark"
  go test -run "^$" -bench "BenchmarkHourOfHistory" -benchtime 1x ./internal/figures | grep -E "^Benchmark"
  scripts/debian.sh chromium=chromium >/dev/null
  go test -tags integration -run '^$' -bench 'BenchmarkDashboardServices' -benchtime 1x -timeout 10m ./integration | grep -E '^Benchmark|screenshot'
fi

# The tail (docs/ROUTING.md): three instances, one (or all) stalling 200 ms on
# 5% of its calls, 1,000 calls/s open loop for 30 s, hedging off vs on, with
# round robin and P2C; and what a zoned pick costs. TAIL=0 skips them (~5 min).
if [ "${TAIL:-1}" != 0 ]; then
  tail=$(mktemp)
  go test -run '^$' -bench 'BenchmarkHedging' -benchtime 1x -timeout 20m ./internal/meshd | tee "$tail"
  echo
  awk "$metric"'
  /^BenchmarkHedging\// {
    name = $1; sub(/-[0-9]+$/, "", name); split(name, p, "/"); mode = p[4]; sub(/hedging=/, "", mode); key = p[2] SUBSEP p[3]
    p99[key, mode] = metric("p99-ms"); p999[key, mode] = metric("p99.9-ms"); hedges[key, mode] = metric("hedges-%"); failed[key, mode] = metric("failed")
    keys[key] = 1
  }
  END {
    print "Hedging, 1,000 calls/s for 30 s, 3 instances (targets: p99 at least 5x lower with one slow; hedges at most the 5% budget):"
    print "| balancer | slow | p99 ms off | on | p99.9 ms off | on | p99 off/on | hedges % of calls | failed off / on |"
    print "|---|---|---|---|---|---|---|---|---|"
    split("round-robin p2c-peak-ewma", bals, " "); split("one-slow all-slow", slows, " ")
    for (i = 1; i <= 2; i++) for (j = 1; j <= 2; j++) {
      k = bals[i] SUBSEP slows[j]; if (!(k in keys)) continue
      printf "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1fx | %.1f | %d / %d |\n", bals[i], slows[j], p99[k, "off"], p99[k, "on"],
        p999[k, "off"], p999[k, "on"], p99[k, "off"] / (p99[k, "on"] > 0 ? p99[k, "on"] : 1), hedges[k, "on"], failed[k, "off"], failed[k, "on"]
    }
  }' "$tail"
  go test -run '^$' -bench 'BenchmarkRouteZones' -benchmem ./internal/routing | grep -E '^Benchmark'
fi

# gRPC across processes (docs/GRPC.md): a stock gRPC client and server
# direct, through meshd and through HAProxy relaying h2c; CPU summed over the
# processes. GRPC=0 skips it and the in-process figures below.
if [ "${GRPC:-1}" != 0 ]; then
  scripts/debian.sh haproxy=haproxy
  echo
  echo "gRPC across processes, 1 KiB (kept = throughput / direct; CPU and read/write syscalls per call summed over client, proxy and server):"
  go test -tags integration -run '^$' -bench 'BenchmarkGRPCProcesses' -benchtime 1x -timeout 30m ./integration | awk "$metric"'
  /^BenchmarkGRPCProcesses\// {
    name = $1; sub(/-[0-9]+$/, "", name); split(name, p, "/"); c = p[3]; sub(/c=/, "", c)
    cps[p[2], c] = metric("calls/s"); cpu[p[2], c] = metric("cpu-µs/call"); sys[p[2], c] = metric("syscalls/call")
    p50[p[2], c] = metric("p50-µs"); p99[p[2], c] = metric("p99-µs")
  }
  END {
    print "| path | c | calls/s | kept | CPU µs/call | the hop adds µs/call | syscalls/call | p50 µs | p99 µs |"
    print "|---|---|---|---|---|---|---|---|---|"
    split("1 32 256", cs, " "); split("grpc-direct grpc-meshd grpc-haproxy", ps, " ")
    for (j = 1; j <= 3; j++) for (i = 1; i <= 3; i++) {
      k = ps[i] SUBSEP cs[j]; d = "grpc-direct" SUBSEP cs[j]; if (!(k in cps) || !cps[d]) continue
      printf "| %s | %s | %.0f | %.0f%% | %.1f | %+.1f | %.1f | %.0f | %.0f |\n", ps[i], cs[j], cps[k], 100 * cps[k] / cps[d], cpu[k], cpu[k] - cpu[d], sys[k], p50[k], p99[k]
    }
  }'
fi

# gRPC through meshd (docs/GRPC.md), in one process: a stock gRPC client and
# server direct, through meshd to the server, and through meshd to an SDK
# proto service. GRPC=0 skips it.
if [ "${GRPC:-1}" != 0 ]; then
  echo
  echo "gRPC through meshd (one process, 1 KiB):"
  go test -run '^$' -bench 'BenchmarkGRPC' -benchmem -benchtime "${BENCHTIME:-3s}" ./internal/meshd | grep -E '^Benchmark'
fi
