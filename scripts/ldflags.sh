#!/usr/bin/env bash
# Prints the -ldflags that link the checkout's commit into mesh's binaries
# (meshd --version, meshctl --version); nothing outside a git checkout.
cd "$(dirname "$0")/.."
if commit=$(git rev-parse HEAD 2>/dev/null); then
  echo "-X github.com/meshrpc/mesh/internal/version.Commit=$commit"
fi
