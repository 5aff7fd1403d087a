#!/usr/bin/env bash
# Compares two builds of meshd on one hop, alternating them round by round in
# one session: on a small, noisy machine only same-session ratios mean
# anything (single runs of make bench vary by ±15%).
#
#   scripts/ab.sh [-p grpc|tchannel] [-c CALLERS] [-r ROUNDS] [-d SECONDS] REV_A REV_B
#
# REV_A and REV_B are git revisions (a commit, a branch, HEAD~2; "." is the
# working tree), or, with -p grpc, "haproxy": Debian's HAProxy relaying h2c
# in meshd's place (issue 25's comparison; scripts/debian.sh haproxy=haproxy).
# The caller and the server are built from the working tree:
# gRPC's is benchpeer grpc-bench against grpcpeer (meshd --grpc-servers),
# TChannel's meshctl bench against examples/echo behind meshd. Each round
# runs both builds, 1 KiB calls in a closed loop; CPU is read from /proc over
# the middle of the run. Prints calls/s and CPU per call of the proxy (meshd
# or HAProxy), the caller, the server and all three.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local

proto=grpc conc=32 rounds=3 secs=5
while getopts "p:c:r:d:" o; do
	case $o in
	p) proto=$OPTARG ;;
	c) conc=$OPTARG ;;
	r) rounds=$OPTARG ;;
	d) secs=$OPTARG ;;
	*) sed -n '2,15p' "$0"; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || { sed -n '2,15p' "$0"; exit 2; }

bin=.cache/ab
mkdir -p "$bin"
go build -o "$bin/" ./cmd/meshctl ./examples/echo ./internal/benchpeer ./internal/grpcpeer
build() { # build REV NAME: meshd at REV into $bin/NAME
	if [ "$1" = haproxy ]; then
		[ "$proto" = grpc ] && [ -x /usr/sbin/haproxy ] || { echo "haproxy: with -p grpc, once scripts/debian.sh haproxy=haproxy ran" >&2; exit 2; }
		return
	fi
	if [ "$1" = . ]; then
		go build -o "$bin/$2" ./cmd/meshd
		return
	fi
	local tree
	tree=$(mktemp -d)
	git worktree add -q --detach "$tree" "$1"
	(cd "$tree" && go build -o "$OLDPWD/$bin/$2" ./cmd/meshd)
	git worktree remove --force "$tree"
}
build "$1" meshd-a
build "$2" meshd-b

tick=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

server=127.0.0.1:$(free)
if [ "$proto" = grpc ]; then
	"$bin/grpcpeer" server "$server" g1 >/dev/null 2>&1 &
	pids+=($!)
	server_pid=$!
fi

for round in $(seq "$rounds"); do
	for side in a b; do
		rev=$1
		[ $side = b ] && rev=$2
		listen=127.0.0.1:$(free)
		if [ "$rev" = haproxy ]; then
			printf 'global\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend grpc\n  bind %s proto h2\n  default_backend server\nbackend server\n  server s1 %s proto h2\n' "$listen" "$server" >"$bin/haproxy.cfg"
			/usr/sbin/haproxy -f "$bin/haproxy.cfg" >/dev/null 2>&1 &
			meshd=$! # the proxy, measured in meshd's place
		elif [ "$proto" = grpc ]; then
			"$bin/meshd-$side" --listen "$listen" --admin off --consul off --grpc-servers "words=$server" --grpc-check-every 200ms >/dev/null 2>&1 &
			meshd=$!
		fi
		if [ "$proto" = grpc ]; then
			until "$bin/grpcpeer" call "$listen" x rpc-service=words timeout=1s 2>/dev/null | grep -q '"OK"'; do sleep 0.1; done
			"$bin/benchpeer" grpc-bench "$listen" "$conc" "${secs}s" 1s >"$bin/out.json" &
		else
			"$bin/meshd-$side" --listen "$listen" --admin off --consul off >/dev/null 2>&1 &
			meshd=$!
			"$bin/echo" --via "$listen" >/dev/null 2>&1 &
			server_pid=$!
			body=$(head -c 1024 /dev/zero | tr '\0' x)
			until "$bin/meshctl" call echo echo "$body" --raw --via "$listen" --timeout 1s >/dev/null 2>&1; do sleep 0.1; done
			"$bin/meshctl" bench echo echo "$body" --via "$listen" -c "$conc" -d "${secs}s" --warmup 1s -o json >"$bin/out.json" &
		fi
		caller=$!
		sleep 1.5
		m0=$(cpu $meshd) s0=$(cpu $server_pid) c0=$(cpu $caller) t0=$(date +%s.%N)
		sleep $((secs - 2))
		m1=$(cpu $meshd) s1=$(cpu $server_pid) c1=$(cpu $caller) t1=$(date +%s.%N)
		wait $caller
		python3 - "$bin/out.json" <<EOF
import json, sys
r = json.load(open(sys.argv[1]))
cps = r.get("calls_per_second") or r.get("throughput")
n = cps * ($t1 - $t0)
us = lambda ticks: ticks / $tick * 1e6 / n
print("round $round  $side ($rev)  c=$conc  %8.0f calls/s  µs/call: proxy %6.1f  caller %6.1f  server %6.1f  all %6.1f  errors %d"
      % (cps, us($m1 - $m0), us($c1 - $c0), us($s1 - $s0), us(($m1 - $m0) + ($s1 - $s0) + ($c1 - $c0)), r.get("errors", 0)))
EOF
		kill $meshd
		[ "$proto" = grpc ] || kill $server_pid
		wait $meshd 2>/dev/null || true
	done
done
