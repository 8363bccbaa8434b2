#!/usr/bin/env bash
# Re-vendor the asciinema player the review console (`kubectl aexec ui`) serves.
#
# Usage: plugin/ui/vendor.sh [OUT_DIR]   (default: plugin/ui/vendor, next to this script)
#
# Installs exactly what package-lock.json pins (`npm ci --ignore-scripts`, so no package code
# runs) in a temporary copy of package.json and the lock, never in the source tree, and copies
# the three files the console uses into OUT_DIR. CI runs it into a scratch directory and
# compares with the committed plugin/ui/vendor (drift check):
#
#   plugin/ui/vendor.sh "$tmp" && diff -r "$tmp" plugin/ui/vendor
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/vendor}"

work="$(mktemp -d "${TMPDIR:-/tmp}/aexec-ui-vendor.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cp "$here/package.json" "$here/package-lock.json" "$work/"
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)

pkg="$work/node_modules/asciinema-player"
mkdir -p "$out"
cp "$pkg/dist/bundle/asciinema-player.min.js" "$out/asciinema-player.min.js"
cp "$pkg/dist/bundle/asciinema-player.css" "$out/asciinema-player.css"
cp "$pkg/LICENSE" "$out/asciinema-player.LICENSE"

version="$(node -p 'require(process.argv[1]).version' "$pkg/package.json")"
echo "vendored asciinema-player $version into $out" >&2
