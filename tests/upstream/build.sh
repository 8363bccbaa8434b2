#!/usr/bin/env bash
# Builds the upstream binaries of the local control plane from their Go modules into a cache
# outside the repository, keyed by version: $AEXEC_CACHE/bin/<name>-<version>.
#
#   tests/upstream/build.sh [component...]   (default: all of them)
#
# Why throw-away modules: k8s.io/kubernetes and etcd cannot be `go install`ed because their
# go.mod files carry replace directives; a scratch module that requires them (plus, for k/k, a
# replace for every staging module it pins at v0.0.0) is the known way to build them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${AEXEC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-aexec}
bin=$cache/bin
work=$cache/build
mkdir -p "$bin" "$work"
export GOFLAGS=${GOFLAGS:--buildvcs=false}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export CGO_ENABLED=0

die() { echo "build.sh: $*" >&2; exit 1; }
command -v go >/dev/null || die "the Go toolchain is missing: install Go 1.25 or newer (https://go.dev/doc/install) and put 'go' on PATH"

# Runs `go build -v` and turns its one-line-per-package output into a heartbeat, so a cold
# build of several minutes shows it is moving.
go_build() { # name out pkg [ldflags]
  local name=$1 out=$2 pkg=$3 ldflags=${4:-} n=0 start=$SECONDS log=$work/$1.log
  echo "  compiling $name (cold builds take minutes; log: $log)"
  if ! go build -v -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg" 2>"$log.pkgs" >"$log"; then
    tail -n 30 "$log.pkgs" >&2
    die "compiling $name failed (full log: $log.pkgs)"
  fi &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15
    n=$(wc -l <"$log.pkgs" 2>/dev/null || echo 0)
    kill -0 "$pid" 2>/dev/null && echo "    ... $name: $n packages compiled, $((SECONDS - start))s"
  done
  wait "$pid" || exit 1
  mv "$out.tmp" "$out"
  echo "  built $out in $((SECONDS - start))s"
}

# A scratch module under $work/<dir> that requires <module>@<version>.
scratch() { # dir module version
  local dir=$work/$1
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  go mod init "aexec-build/$1" >/dev/null 2>&1
  echo "  fetching $2@$3 and its dependencies"
}

# The scratch module every Kubernetes component is built in: one module, so the node
# components reuse the Go build cache kube-apiserver filled (most packages are shared).
kubernetes_module() {
  local v=$KUBERNETES_VERSION dir=$work/kubernetes-$KUBERNETES_VERSION
  local staging=v0.${v#v1.}
  if [ -f "$dir/go.mod" ] && [ -f "$dir/.ready" ]; then cd "$dir"; return; fi
  scratch "kubernetes-$v" k8s.io/kubernetes "$v"
  go mod edit -require "k8s.io/kubernetes@$v"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$v from the Go module proxy"
  # Every staging module k/k pins at v0.0.0 is published at v0.<minor>.<patch>.
  local m
  for m in $(awk '$2 == "v0.0.0" && $1 ~ /^k8s.io\// {print $1}' "$gomod" | sort -u); do
    go mod edit -replace "$m=$m@$staging"
  done
  local cmds=() c
  for c in kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy; do
    cmds+=("k8s.io/kubernetes/cmd/$c@$v")
  done
  go get "${cmds[@]}" >/dev/null 2>"$work/kubernetes-get.log" ||
    { tail -n 20 "$work/kubernetes-get.log" >&2; die "go get k8s.io/kubernetes@$v failed"; }
  touch .ready
}

kube_ldflags() {
  local v=$KUBERNETES_VERSION minor=${KUBERNETES_VERSION#v1.}
  minor=${minor%%.*}
  echo "-X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/component-base/version.gitTreeState=clean"
}

# kube-apiserver and kubectl: the control plane of every test.
build_kubernetes() {
  local v=$KUBERNETES_VERSION c
  for c in kube-apiserver kubectl; do
    [ -x "$bin/$c-$v" ] && continue
    kubernetes_module
    go_build "$c" "$bin/$c-$v" "k8s.io/kubernetes/cmd/$c" "$(kube_ldflags)"
  done
}

# The real node and the controllers around it (tests whose names start with real_node_):
# kubelet, kube-controller-manager, kube-scheduler, kube-proxy, and the pause binary every
# pod's sandbox runs (one C file in the k8s.io/kubernetes module, linked statically).
build_node() {
  local v=$KUBERNETES_VERSION c
  for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do
    [ -x "$bin/$c-$v" ] && continue
    kubernetes_module
    go_build "$c" "$bin/$c-$v" "k8s.io/kubernetes/cmd/$c" "$(kube_ldflags)"
  done
  if [ ! -x "$bin/pause-$v" ]; then
    command -v gcc >/dev/null || die "gcc is missing (it builds the pause binary): apt-get install gcc libc6-dev"
    local src
    src=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
    [ -f "$src/build/pause/linux/pause.c" ] || die "build/pause/linux/pause.c is not in k8s.io/kubernetes@$v"
    gcc -Os -static -Wall -Werror -DVERSION="$v-aexec" -o "$bin/pause-$v.tmp" "$src/build/pause/linux/pause.c" ||
      die "compiling pause.c failed (static linking needs libc6-dev)"
    mv "$bin/pause-$v.tmp" "$bin/pause-$v"
    echo "  built $bin/pause-$v"
  fi
}

build_simple() { # name module version pkg [ldflags]
  local name=$1 module=$2 v=$3 pkg=$4 ld=${5:-}
  [ -x "$bin/$name-$v" ] && return
  scratch "$name-$v" "$module" "$v"
  go get "$pkg@$v" >/dev/null 2>"$work/$name-get.log" ||
    { tail -n 20 "$work/$name-get.log" >&2; die "go get $pkg@$v failed"; }
  go_build "$name" "$bin/$name-$v" "$pkg" "$ld"
}

build_etcd() { build_simple etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3; }
# kwok is built from a patched copy of its module (see the patch's header for why); the cache key
# carries the patch's hash so a changed patch rebuilds it.
kwok_key() { echo "$KWOK_VERSION-$(sha256sum "$here/kwok-$KWOK_VERSION-local-exec.patch" | cut -c1-12)"; }
build_kwok() {
  local v=$KWOK_VERSION key patch=$here/kwok-$KWOK_VERSION-local-exec.patch
  key=$(kwok_key)
  [ -x "$bin/kwok-$key" ] && [ -d "$bin/kwok-$key-stages" ] && return
  local dir=$work/kwok-$key
  echo "  fetching sigs.k8s.io/kwok@$v"
  local src
  src=$(cd "$work" && go mod download -json "sigs.k8s.io/kwok@$v" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -d "$src" ] || die "could not download sigs.k8s.io/kwok@$v from the Go module proxy"
  rm -rf "$dir" && cp -r "$src" "$dir" && chmod -R u+w "$dir" && cd "$dir"
  patch -s -p1 <"$patch" || die "applying $patch to kwok $v failed"
  go_build kwok "$bin/kwok-$key" ./cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$v"
  # The lifecycle stages (node Ready, pod Running) ship as YAML in the module, not in the binary.
  rm -rf "$bin/kwok-$key-stages" && cp -r kustomize/stage "$bin/kwok-$key-stages"
}
build_minio() { build_simple minio github.com/minio/minio "$MINIO_VERSION" github.com/minio/minio; }
build_helm() { build_simple helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"; }
# asciinema's own CLI, the reference player and converter for the recordings' format; a Rust
# crate, built with cargo from crates.io (its dependencies locked by the crate). Unoptimised
# (--debug): the tests convert a few small files, and its release profile takes 3.4 minutes of
# a cold run on 2 cores.
build_asciinema() {
  local v=$ASCIINEMA_VERSION out=$bin/asciinema-$ASCIINEMA_VERSION start=$SECONDS
  [ -x "$out" ] && return
  command -v cargo >/dev/null || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
  echo "  compiling asciinema $v from crates.io (cold build takes a few minutes; log: $work/asciinema.log)"
  if ! CARGO_TARGET_DIR=$work/asciinema-target cargo install --locked --force --debug asciinema \
    --version "$v" --root "$work/asciinema-$v" >"$work/asciinema.log" 2>&1; then
    tail -n 30 "$work/asciinema.log" >&2
    die "compiling asciinema failed (full log: $work/asciinema.log)"
  fi
  cp "$work/asciinema-$v/bin/asciinema" "$out.tmp" && mv "$out.tmp" "$out" ||
    die "installing $out failed"
  rm -rf "$work/asciinema-target" "$work/asciinema-$v"
  echo "  built $out in $((SECONDS - start))s"
}
# krew is run as a kubectl plugin (`kubectl krew`) by the packaging test; krew's own manifest
# validator (the check krew-index runs on every plugin submission) by the release tests. They
# share krew's module, so the validator mostly reuses the Go build cache.
build_krew() {
  build_simple krew sigs.k8s.io/krew "$KREW_VERSION" sigs.k8s.io/krew/cmd/krew \
    "-X sigs.k8s.io/krew/internal/version.gitTag=$KREW_VERSION"
  build_simple validate-krew-manifest sigs.k8s.io/krew "$KREW_VERSION" sigs.k8s.io/krew/cmd/validate-krew-manifest
}

# `build.sh --paths` prints NAME=PATH lines for the test environment to read.
if [ "${1:-}" = "--paths" ]; then
  echo "etcd=$bin/etcd-$ETCD_VERSION"
  echo "kube-apiserver=$bin/kube-apiserver-$KUBERNETES_VERSION"
  echo "kubectl=$bin/kubectl-$KUBERNETES_VERSION"
  echo "kwok=$bin/kwok-$(kwok_key)"
  echo "kwok-stages=$bin/kwok-$(kwok_key)-stages"
  echo "minio=$bin/minio-$MINIO_VERSION"
  echo "helm=$bin/helm-$HELM_VERSION"
  echo "asciinema=$bin/asciinema-$ASCIINEMA_VERSION"
  echo "krew=$bin/krew-$KREW_VERSION"
  echo "validate-krew-manifest=$bin/validate-krew-manifest-$KREW_VERSION"
  for c in kubelet kube-controller-manager kube-scheduler kube-proxy pause; do
    echo "$c=$bin/$c-$KUBERNETES_VERSION"
  done
  exit 0
fi

# `node` (the real node's components) is built only when asked for: ./dev test asks for it
# after the rest, so the kwok suites' binaries are ready first.
all=(etcd kubernetes kwok minio asciinema helm krew)
known="etcd kubernetes node kwok minio helm asciinema krew"
want=("$@")
[ ${#want[@]} -gt 0 ] || want=("${all[@]}")
# Names are checked before waiting for another build's lock.
for c in "${want[@]}"; do
  [[ " $known " == *" $c "* ]] || die "unknown component '$c' (known: $known)"
done

# One build at a time per cache: two builds of one component would replace each other's files.
if command -v flock >/dev/null; then
  exec 9>"$cache/build.lock"
  if ! flock -n 9; then
    echo "  another build of the upstream binaries is running; waiting for it ($cache/build.lock)"
    flock 9
  fi
fi

i=0
for c in "${want[@]}"; do
  i=$((i + 1))
  echo "[$i/${#want[@]}] $c"
  (build_"$c")
done
echo "upstream binaries ready in $bin"
