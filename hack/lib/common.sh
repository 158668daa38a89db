# Shared helpers for hack/ scripts. Source it; it sets no options of the caller.
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_ROOT=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=versions.sh
. "$HACK_DIR/lib/versions.sh"

# Everything built or downloaded lives here, outside the repo, keyed by version.
SEALTUNE_CACHE=${SEALTUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sealtune}
BIN_CACHE=$SEALTUNE_CACHE/bin

log() { printf '[sealtune %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Where a running cluster keeps its state (PKI, kubeconfig, data, logs, pids).
SEALTUNE_STATE=${SEALTUNE_STATE:-/tmp/sealtune-cluster}
# A non-loopback address the API server advertises; added to lo, so no traffic leaves the host.
SEALTUNE_API_IP=${SEALTUNE_API_IP:-10.200.0.1}
SEALTUNE_API_PORT=${SEALTUNE_API_PORT:-6443}
SEALTUNE_ETCD_PORT=${SEALTUNE_ETCD_PORT:-2379}
SEALTUNE_BAO_PORT=${SEALTUNE_BAO_PORT:-8200}
SEALTUNE_KCM_PORT=${SEALTUNE_KCM_PORT:-10257}
SEALTUNE_SCHEDULER_PORT=${SEALTUNE_SCHEDULER_PORT:-10259}
# kube-controller-manager's --controllers. hack/bench/operator_create.py --without-pods wants the
# job and endpoint slice controllers off ('*,bootstrapsigner,tokencleaner,-job,-endpointslice'):
# its windows then hold the creates without the control plane's work that follows them.
SEALTUNE_KCM_CONTROLLERS=${SEALTUNE_KCM_CONTROLLERS:-*,bootstrapsigner,tokencleaner}
SERVICE_CIDR=10.96.0.0/16
SERVICE_API_IP=10.96.0.1

# Addresses on the loopback device (the API server's, the real nodes').
# (Not `ip ... | grep -q`: with pipefail, grep's early exit can fail the pipeline.)
lo_has() { local a; a=$(ip -o addr show dev lo); [[ $a == *" $1/32 "* ]]; }
lo_add() { lo_has "$1" || ip addr add "$1/32" dev lo; }
lo_del() { if lo_has "$1"; then ip addr del "$1/32" dev lo; fi; }
