#!/usr/bin/env bash
# Packages kubectl aexec for krew: builds the release binaries (or takes built ones), makes the
# archive for one platform (this machine's by default), and renders the krew manifest
# (plugins/aexec.yaml) with the sha256 of every platform archive present in the output directory.
# `./dev release` calls it once per platform with cross-compiled binaries.
#
#   plugin/package.sh [--binary-dir DIR] [--platform OS/ARCH] [--out DIR] [--version vX.Y.Z]
#
#   --binary-dir DIR  take kubectl-aexec and kubectl_complete-aexec from DIR instead of building
#                     them with `cargo build --release` (the tests pass target/debug)
#   --platform OS/ARCH  the platform the binaries are for: linux/amd64, linux/arm64,
#                     darwin/amd64, darwin/arm64, windows/amd64 (default: this machine's;
#                     windows binaries end in .exe and go in a .zip, the others in a .tar.gz)
#   --out DIR         where the archive and aexec.yaml go (default: dist/)
#   --version V       the release version (default: v + the workspace version)
#
# Then, offline: kubectl krew install --manifest=dist/aexec.yaml --archive=dist/<archive>
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "package.sh: $*" >&2; exit 1; }

bindir="" out="$root/dist" version="" platform=""
while [ $# -gt 0 ]; do
  case $1 in
    --binary-dir) bindir=${2:?--binary-dir needs a directory}; shift 2 ;;
    --platform) platform=${2:?--platform needs OS/ARCH, like linux/arm64}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --version) version=${2:?--version needs a version like v0.1.0}; shift 2 ;;
    -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$version" ] || version=v$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || die "version '$version' is not like v1.2.3"

# The krew platforms this manifest knows (kubectl's own release platforms).
known="linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64"
host=""
case $(uname -s)/$(uname -m) in
  Linux/x86_64) host=linux/amd64 ;; Linux/aarch64) host=linux/arm64 ;;
  Darwin/x86_64) host=darwin/amd64 ;; Darwin/arm64) host=darwin/arm64 ;;
esac
if [ -z "$platform" ]; then
  [ -n "$host" ] || die "unsupported machine $(uname -s)/$(uname -m): pass --platform and --binary-dir"
  platform=$host
fi
[[ " $known " == *" $platform "* ]] || die "unknown platform '$platform' (known: $known)"
os=${platform%/*} arch=${platform#*/}
exe=""
[ "$os" = windows ] && exe=.exe
[ -z "$bindir" ] && [ "$platform" != "$host" ] &&
  die "building for $platform needs cross-compiled binaries: pass --binary-dir (./dev release builds them)"

if [ -z "$bindir" ]; then
  echo "building kubectl-aexec (release)"
  (cd "$root" && cargo build --release --locked -q -p kubectl-aexec)
  bindir=${CARGO_TARGET_DIR:-$root/target}/release
fi
bins=(kubectl-aexec$exe kubectl_complete-aexec$exe)
for b in "${bins[@]}"; do
  [ -f "$bindir/$b" ] || die "$bindir/$b is missing: build it (cargo build -p kubectl-aexec) or omit --binary-dir"
done

mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "${bins[@]/#/$bindir/}" "$root/README.md" "$root/LICENSE" "$stage/"
chmod 0755 "${bins[@]/#/$stage/}"
if [ "$os" = windows ]; then
  # krew reads .zip archives; Python's zipfile module writes them (no zip program needed).
  archive=kubectl-aexec_${version}_${os}_${arch}.zip
  (cd "$stage" && python3 -m zipfile -c "$out/$archive.tmp" "${bins[@]}" README.md LICENSE) ||
    die "could not write $archive (python3's zipfile)"
else
  archive=kubectl-aexec_${version}_${os}_${arch}.tar.gz
  tar -C "$stage" -czf "$out/$archive.tmp" "${bins[@]}" README.md LICENSE
fi
mv "$out/$archive.tmp" "$out/$archive"

sha() { if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1; }

# Render: fill in the version and each platform's sha256; drop the platform entries (from one
# "  - selector:" line to the next) whose archive is not in $out.
subst=(-e "s/{{VERSION}}/$version/g")
platforms=()
for p in linux_amd64 linux_arm64 darwin_amd64 darwin_arm64 windows_amd64; do
  a=$out/kubectl-aexec_${version}_$p.tar.gz
  [ "${p%_*}" = windows ] && a=$out/kubectl-aexec_${version}_$p.zip
  if [ -f "$a" ]; then
    subst+=(-e "s/{{SHA256_$p}}/$(sha "$a")/g")
    platforms+=("$p")
  fi
done
awk -v keep=" ${platforms[*]} " '
  /^  - selector:/ { inblock = 1; block = $0 "\n"; next }
  inblock && /^  [^ -]|^[^ ]/ { inblock = 0 }
  inblock {
    block = block $0 "\n"
    if (match($0, /\{\{SHA256_[a-z]+_[a-z0-9]+\}\}/)) { p = substr($0, RSTART + 9, RLENGTH - 11); skip = index(keep, " " p " ") == 0 }
    if ($0 ~ /^    bin:/) { if (!skip) printf "%s", block; inblock = 0; skip = 0 }
    next
  }
  { print }
' "$root/plugins/aexec.yaml" | sed "${subst[@]}" | grep -v '^# ' >"$out/aexec.yaml.tmp"
grep -q '{{' "$out/aexec.yaml.tmp" && die "unfilled placeholders left in the manifest"
mv "$out/aexec.yaml.tmp" "$out/aexec.yaml"
echo "archive:  $out/$archive ($(sha "$out/$archive"))"
echo "manifest: $out/aexec.yaml (platforms: ${platforms[*]})"
echo "install:  kubectl krew install --manifest=$out/aexec.yaml --archive=$out/$archive"
