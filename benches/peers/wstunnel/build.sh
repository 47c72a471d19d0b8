#!/usr/bin/env bash
# Builds wstunnel (erebe/wstunnel) from a source snapshot into target/, for
# benches/tunnel/tunnel.sh. Nothing of wstunnel is committed: neither its
# source nor its binary.
#
# Usage: benches/peers/wstunnel/build.sh [GIT_DIR_OR_SOURCE_DIR]
#   GIT_DIR_OR_SOURCE_DIR  a bare git dir of github:erebe/wstunnel (the search
#                          tool's `fetch` gives /work/.mirror/erebe+wstunnel/repo)
#                          or an unpacked source tree. Default: $WSTUNNEL_SRC,
#                          else /work/.mirror/erebe+wstunnel/repo, else an
#                          already-unpacked target/peers/wstunnel/src.
# Output: target/peers/wstunnel/bin/wstunnel (and `--version` printed).
#
# It builds with wstunnel's own release profile (fat LTO, codegen-units=1):
# the binary its users run. aws-lc-rs is its default TLS backend; if that
# cannot build here (aws-lc-sys wants cmake or a C toolchain it cannot find),
# it falls back to its `ring` feature and says so.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
OUT="$ROOT/target/peers/wstunnel"
SRC="$OUT/src"
FROM="${1:-${WSTUNNEL_SRC:-/work/.mirror/erebe+wstunnel/repo}}"
mkdir -p "$OUT/bin"

if [ -d "$FROM" ] && git --git-dir="$FROM" rev-parse HEAD >/dev/null 2>&1; then
  rev="$(git --git-dir="$FROM" rev-parse HEAD)"
  if [ "$(cat "$OUT/rev" 2>/dev/null)" != "$rev" ]; then
    rm -rf "$SRC" && mkdir -p "$SRC"
    git --git-dir="$FROM" archive HEAD | tar -x -C "$SRC"
    echo "$rev" > "$OUT/rev"
  fi
  echo "wstunnel source: $FROM @ $rev"
elif [ -f "$FROM/Cargo.toml" ]; then
  rm -rf "$SRC" && mkdir -p "$SRC" && cp -a "$FROM/." "$SRC/"
  echo "wstunnel source: $FROM (tree)"
elif [ -f "$SRC/Cargo.toml" ]; then
  echo "wstunnel source: $SRC (already unpacked)"
else
  echo "no wstunnel source: fetch github:erebe/wstunnel and pass its git dir" >&2
  exit 1
fi

cd "$SRC"
export CARGO_TARGET_DIR="$OUT/cargo-target"
# --locked: its committed Cargo.lock, the versions its release uses.
if cargo build --release --locked -p wstunnel-cli; then
  feature="default (aws-lc-rs)"
else
  echo "default features failed to build; retrying with --no-default-features --features ring" >&2
  cargo build --release --locked -p wstunnel-cli --no-default-features --features ring
  feature="ring"
fi
cp "$CARGO_TARGET_DIR/release/wstunnel" "$OUT/bin/wstunnel"
echo "$feature" > "$OUT/bin/features"
"$OUT/bin/wstunnel" --version
echo "built $OUT/bin/wstunnel (TLS backend: $feature)"
