#!/usr/bin/env bash
# Builds the FROM-scratch images of deploy/docker: every binary static
# (CGO_ENABLED=0), Consul and Jaeger from the Go module proxy (scripts/tool.sh),
# images tagged mesh/NAME:dev. No image is pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local CGO_ENABLED=0
out=.cache/static
mkdir -p "$out"
go build -ldflags "$(scripts/ldflags.sh)" -o "$out/" ./cmd/meshd ./cmd/meshctl ./examples/echo ./examples/kv ./deploy/pause
consul=$(scripts/tool.sh consul)
jaeger=$(scripts/tool.sh jaeger)

image() { # image NAME BINARY...
  local name=$1 ctx
  shift
  ctx=$(mktemp -d)
  mkdir "$ctx/bin"
  cp "deploy/docker/Dockerfile.$name" "$ctx/Dockerfile"
  cp "$out/meshctl" "$@" "$ctx/bin/"
  docker build -q -t "mesh/$name:dev" "$ctx" >/dev/null
  rm -rf "$ctx"
  echo "built mesh/$name:dev"
}
image meshd "$out/meshd"
image pause "$out/pause"
image examples "$out/echo" "$out/kv"
cp "$consul" "$out/consul" && image consul "$out/consul"
cp "$jaeger" "$out/jaeger" && image jaeger "$out/jaeger"
