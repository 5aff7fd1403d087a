# mesh: common tasks. `make test` is what CI runs (see .ci/run).
export GOTOOLCHAIN := local

.PHONY: run run-consul test bench bench-tracing bench-trust bench-discovery build fuzz consul jaeger images up down

# Quick start: a meshd with the example services on this host, and calls to them.
run:
	./scripts/quickstart.sh

# The same with a real Consul agent as the registry.
run-consul:
	CONSUL=1 ./scripts/quickstart.sh

build:
	go build -ldflags "$$(scripts/ldflags.sh)" -o bin/ ./cmd/... ./examples/...

# Every suite: static checks, unit + interop tests under -race, fuzz smoke runs.
test:
	./scripts/test.sh

# Call benchmarks, mesh vs tchannel-go in one run: direct, hops in one process, hops across processes.
bench:
	./scripts/bench.sh

# What tracing costs (off, 1%, 100% sampling), over alternating rounds.
bench-tracing:
	./scripts/bench-tracing.sh

# What mTLS between hosts and per-call intentions cost, over alternating rounds.
bench-trust:
	./scripts/bench-trust.sh

# What following Consul costs: S services x K meshds, health flips (SERVICES=..., MESHDS=..., MESHD=...).
bench-discovery:
	./scripts/bench-discovery.sh

# Long fuzz runs of the frame decoder, a live connection, a meshd with a service behind it and its gRPC side (FUZZTIME=10m).
fuzz:
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $${FUZZTIME:-10m} -timeout 0 ./frame
	go test -run '^$$' -fuzz '^FuzzConn$$' -fuzztime $${FUZZTIME:-10m} -timeout 0 ./internal/conn
	go test -run '^$$' -fuzz '^FuzzMeshd$$' -fuzztime $${FUZZTIME:-10m} -fuzzminimizetime 2s -timeout 0 ./internal/meshd
	go test -run '^$$' -fuzz '^FuzzGRPCConn$$' -fuzztime $${FUZZTIME:-10m} -fuzzminimizetime 2s -timeout 0 ./internal/meshd
	go test -run '^$$' -fuzz '^FuzzUpstream$$' -fuzztime $${FUZZTIME:-10m} -timeout 0 ./internal/grpcgate
	go test -run '^$$' -fuzz '^FuzzHeaderReader$$' -fuzztime $${FUZZTIME:-10m} -timeout 0 ./internal/grpcgate

# A real Consul agent built from the Go module proxy, in .cache/bin.
consul:
	./scripts/tool.sh consul

# Jaeger v2 built from the Go module proxy, in .cache/bin: Zipkin v2 API on
# 127.0.0.1:9411, UI and query API on :16686.
jaeger:
	./scripts/tool.sh jaeger

# FROM-scratch images of meshd, the examples, Consul and Jaeger (deploy/docker).
images:
	./scripts/images.sh

# A three-host mesh in containers (deploy/compose.yaml); down removes it.
up: images
	./scripts/compose.sh up

down:
	./scripts/compose.sh down
