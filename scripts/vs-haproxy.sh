#!/usr/bin/env bash
# Compares meshd's gRPC hop with HAProxy's (issue 25's cost target),
# alternating the two round by round in one session: on a small, noisy
# machine only same-session ratios mean anything.
#
#   scripts/vs-haproxy.sh [-c CALLERS] [-r ROUNDS] [-d SECONDS]
#
# meshd is built from the working tree; HAProxy is Debian's
# (scripts/debian.sh haproxy=haproxy). A stock gRPC client (benchpeer
# grpc-bench, one HTTP/2 connection) calls a stock gRPC server (grpcpeer)
# through meshd (--grpc-servers) and through HAProxy relaying h2c, 1 KiB
# calls in a closed loop. Prints calls/s and the CPU per call of the proxy,
# the client and the server, read from /proc over the middle of each run.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

conc=32 rounds=3 secs=5
while getopts "c:r:d:" o; do
	case $o in
	c) conc=$OPTARG ;;
	r) rounds=$OPTARG ;;
	d) secs=$OPTARG ;;
	*) sed -n '2,13p' "$0"; exit 2 ;;
	esac
done
[ -x /usr/sbin/haproxy ] || { echo "no HAProxy: scripts/debian.sh haproxy=haproxy" >&2; exit 2; }

bin=.cache/ab
mkdir -p "$bin"
go build -o "$bin/" ./cmd/meshd ./internal/benchpeer ./internal/grpcpeer
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

server=127.0.0.1:$(free)
"$bin/grpcpeer" server "$server" g1 >/dev/null 2>&1 &
server_pid=$!
pids+=($server_pid)
cfg=$(mktemp)
for round in $(seq "$rounds"); do
	for side in meshd haproxy; do
		listen=127.0.0.1:$(free)
		if [ $side = meshd ]; then
			"$bin/meshd" --listen "$listen" --admin off --consul off --grpc-servers "words=$server" --grpc-check-every 200ms >/dev/null 2>&1 &
		else
			printf 'global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend grpc\n  bind %s proto h2\n  default_backend server\nbackend server\n  server s1 %s proto h2\n' "$listen" "$server" >"$cfg"
			/usr/sbin/haproxy -f "$cfg" >/dev/null 2>&1 &
		fi
		proxy=$!
		pids+=($proxy)
		until "$bin/grpcpeer" call "$listen" x rpc-service=words timeout=1s 2>/dev/null | grep -q '"OK"'; do sleep 0.1; done
		"$bin/benchpeer" grpc-bench "$listen" "$conc" "${secs}s" 1s >"$bin/vs.json" &
		caller=$!
		sleep 1.5
		p0=$(cpu $proxy) s0=$(cpu $server_pid) c0=$(cpu $caller) t0=$(date +%s.%N)
		sleep $((secs - 2))
		p1=$(cpu $proxy) s1=$(cpu $server_pid) c1=$(cpu $caller) t1=$(date +%s.%N)
		wait $caller
		python3 - "$bin/vs.json" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
cps = r.get("calls_per_second") or r.get("throughput")
n = cps * ($t1 - $t0)
us = lambda ticks: ticks / $tick * 1e6 / n
print("round $round  %-7s c=$conc  %7.0f calls/s  proxy %5.1f  client %5.1f  server %5.1f  all %6.1f µs/call"
      % ("$side", cps, us($p1 - $p0), us($c1 - $c0), us($s1 - $s0), us($p1 - $p0 + $c1 - $c0 + $s1 - $s0)))
PY
		kill $proxy
		wait $proxy 2>/dev/null || true
	done
done
rm -f "$cfg"
