#!/usr/bin/env bash
# Builds an outside tool from the Go module proxy into .cache/bin (git-ignored)
# and prints its path. Binaries are static (CGO_ENABLED=0), so the same file
# runs in tests and in FROM-scratch container images. Each tool has its own wrapper module under tools/, so
# its dependencies stay out of mesh's go.mod. Built once; later runs reuse it.
#   scripts/tool.sh consul   -> a real Consul agent (hashicorp/consul v1.20.2)
#   scripts/tool.sh jaeger   -> Jaeger v2 (jaegertracing/jaeger v1.76.0): Zipkin API on :9411, UI on :16686
#   scripts/tool.sh grpcurl  -> grpcurl v1.9.3, the gRPC command-line client (calls from a .proto, no reflection)
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?usage: scripts/tool.sh consul}
bin=$PWD/.cache/bin/$name-static
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
case $name in
  consul) pkg=github.com/hashicorp/consul ;;
  jaeger) pkg=github.com/jaegertracing/jaeger/cmd/jaeger ;;
  grpcurl) pkg=github.com/fullstorydev/grpcurl/cmd/grpcurl ;;
  *) echo "unknown tool $name" >&2; exit 2 ;;
esac
mkdir -p .cache/bin
echo "building $name from the Go module proxy (a few minutes the first time)..." >&2
(cd "tools/$name" && CGO_ENABLED=0 GOTOOLCHAIN=local GONOSUMDB=github.com/hashicorp/consul GOSUMDB=off GOFLAGS=-mod=mod \
  go build -o "$bin.tmp" "$pkg") >&2
mv "$bin.tmp" "$bin"
echo "$bin"
