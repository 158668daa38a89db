#!/usr/bin/env bash
# Installs the Debian packages that real nodes and image builds need, idempotently:
# nothing is fetched when every package is already installed, and `apt-get update`
# runs only when a package is missing and the package lists are absent or stale.
#   hack/lib/debs.sh [nodes|images|lint|all]...   (default: nodes images)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Real nodes: the container runtime, CNI plugins, and what kubelet and kube-proxy exec.
DEBS_NODES=(containerd runc containernetworking-plugins iptables conntrack ethtool
  socat iproute2 util-linux mount kmod procps)
# Images: buildah builds the Dockerfiles; skopeo copies them into an OCI layout;
# debootstrap makes the base image; a static C toolchain builds the pause binary.
DEBS_IMAGES=(buildah skopeo debootstrap gcc libc6-dev)
# Linters for hack/ and the Dockerfiles' shell.
DEBS_LINT=(shellcheck)

_missing() {
  local pkg status
  for pkg in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || echo "$pkg"
  done
}

# The package lists count as fresh for a day; an older or absent list is refreshed once.
_lists_fresh() {
  local newest
  newest=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit 2>/dev/null)
  [ -n "$newest" ]
}

install_debs() {
  local -a missing
  mapfile -t missing < <(_missing "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "root is needed to install: ${missing[*]}"
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if ! _lists_fresh; then
    log "apt-get update (package lists absent or older than a day)"
    "${apt[@]}" update >&2
  fi
  log "installing from Debian: ${missing[*]}"
  local start=$SECONDS
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2; then
    # A stale list names versions the mirror no longer has: refresh once and retry.
    "${apt[@]}" update >&2
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2
  fi
  log "installed ${#missing[@]} packages in $((SECONDS - start)) s"
  # Debian starts containerd's own service on install; sealtune runs one containerd per
  # node under its own root and socket, and the system one would only take memory.
  if [[ " ${missing[*]} " == *" containerd "* ]] && command -v systemctl >/dev/null \
    && systemctl is-active -q containerd 2>/dev/null; then
    systemctl disable --now containerd >&2 || true
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  [ $# -gt 0 ] || set -- nodes images
  pkgs=()
  for group in "$@"; do
    case $group in
      nodes) pkgs+=("${DEBS_NODES[@]}") ;;
      images) pkgs+=("${DEBS_IMAGES[@]}") ;;
      lint) pkgs+=("${DEBS_LINT[@]}") ;;
      all) pkgs+=("${DEBS_NODES[@]}" "${DEBS_IMAGES[@]}" "${DEBS_LINT[@]}") ;;
      *) die "unknown group $group (nodes, images, lint, all)" ;;
    esac
  done
  install_debs "${pkgs[@]}"
fi
