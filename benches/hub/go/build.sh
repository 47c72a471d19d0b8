#!/usr/bin/env bash
# Builds the Go comparison hub (main.go, seed's design, gorilla/websocket)
# offline into benches/hub/target/go-hub, using Debian's packaged Go and
# gorilla/websocket (GOPATH mode, no module download). Without Go it prints a
# SKIP line to stderr, builds nothing, and exits 0.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../target/go-hub"
gopath=/usr/share/gocode
if ! command -v go >/dev/null 2>&1; then
    echo "SKIP: go not installed (apt-get install golang-go golang-github-gorilla-websocket-dev)" >&2
    exit 0
fi
if [ ! -d "$gopath/src/github.com/gorilla/websocket" ]; then
    echo "SKIP: gorilla/websocket not found under $gopath (apt-get install golang-github-gorilla-websocket-dev)" >&2
    exit 0
fi
mkdir -p "$(dirname "$out")"
# Go's build cache stays outside the repository.
cache="${GOCACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/go-build}"
cd "$here"
GO111MODULE=off GOPATH="$gopath" GOCACHE="$cache" GOFLAGS= GOPROXY=off \
    go build -trimpath -o "$out" main.go
echo "built $out" >&2
