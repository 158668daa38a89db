#!/usr/bin/env bash
# Storage for pods on the real nodes, as a cluster without a network filesystem has it: static
# local PersistentVolumes under the StorageClass sealtune-local (no provisioner, binding
# WaitForFirstConsumer, so a claim binds when the scheduler places its first pod on a node the
# volume's affinity allows). Pods mount claims, never hostPath.
#
#   hack/lib/volumes.sh class                  (re)apply the StorageClass sealtune-local
#   hack/lib/volumes.sh make NAME NAMESPACE CLAIM NODE[,NODE...] [SIZE]
#                                              a directory for volume NAME on the host, owned by
#                                              the trainer's uid; the PV NAME on it, pre-bound
#                                              to claim NAMESPACE/CLAIM; and that claim. Prints
#                                              the directory. Idempotent.
#   hack/lib/volumes.sh path NAME              the directory of volume NAME
#   hack/lib/volumes.sh own NAME               hand what an admin wrote there to the pods' uid
#   hack/lib/volumes.sh remove NAME...         the PVs, their claims and their directories
#
# The real nodes share this host's filesystem, so a volume whose affinity names several nodes
# is one directory that pods on any of them mount: a shared (NFS-like) volume, which a
# multi-node job needs for its data, base model and checkpoints. Directories live under
# $SEALTUNE_VOLUMES_ROOT (default /var/lib/sealtune/volumes) and outlive the nodes, like disks.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/common.sh"

VOLUMES_ROOT=${SEALTUNE_VOLUMES_ROOT:-/var/lib/sealtune/volumes}
STORAGE_CLASS=sealtune-local
# The trainer (and operator) images run as this uid and gid; it writes outputs and checkpoints.
POD_UID=65532

kubectl_admin() { "$BIN_CACHE/kubernetes-$KUBE_VERSION/kubectl" --kubeconfig "$SEALTUNE_STATE/kubeconfig" "$@"; }

cmd_class() {
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  labels: {sealtune.dev/real-nodes: "true"}
  annotations:
    description: "Static local volumes on sealtune's real nodes (hack/lib/volumes.sh makes them)"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
# A local volume's data is the admin's: deleting a claim never deletes the directory.
reclaimPolicy: Retain
YAML
}

_name_ok() { [[ $1 =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "volume name '$1' must be a DNS label"; }

cmd_path() { _name_ok "$1"; echo "$VOLUMES_ROOT/$1"; }

cmd_make() {
  [ $# -ge 4 ] || die "usage: volumes.sh make NAME NAMESPACE CLAIM NODE[,NODE...] [SIZE]"
  local name=$1 namespace=$2 claim=$3 nodes=$4 size=${5:-1Gi} dir node values="" mode=ReadWriteOnce
  _name_ok "$name"
  dir=$VOLUMES_ROOT/$name
  # 0755: the admin (root) writes data and models here, pods read them; outputs are the pods'.
  install -d -m 0755 -o "$POD_UID" -g "$POD_UID" "$dir"
  for node in ${nodes//,/ }; do values+="${values:+, }\"$node\""; done
  # One directory mounted from several nodes is what ReadWriteMany means.
  [[ $nodes == *,* ]] && mode=ReadWriteMany
  cmd_class
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $name
  labels: {sealtune.dev/real-nodes: "true"}
spec:
  storageClassName: $STORAGE_CLASS
  capacity: {storage: $size}
  accessModes: [$mode]
  persistentVolumeReclaimPolicy: Retain
  volumeMode: Filesystem
  local: {path: "$dir"}
  # Pre-bound: only this claim may take the volume.
  claimRef: {namespace: $namespace, name: $claim}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$values]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $claim
  namespace: $namespace
spec:
  storageClassName: $STORAGE_CLASS
  accessModes: [$mode]
  resources:
    requests: {storage: $size}
YAML
  echo "$dir"
}

cmd_own() { _name_ok "$1"; chown -R "$POD_UID:$POD_UID" "$VOLUMES_ROOT/$1"; }

cmd_remove() {
  local name claim
  for name in "$@"; do
    _name_ok "$name"
    # The objects only while the API server answers; the directory in any case.
    claim=$(kubectl_admin get pv "$name" -o jsonpath='{.spec.claimRef.namespace}/{.spec.claimRef.name}' 2>/dev/null || true)
    if [ -n "$claim" ] && [ "$claim" != / ]; then
      kubectl_admin delete pvc "${claim#*/}" -n "${claim%%/*}" --ignore-not-found --wait=false >/dev/null || true
    fi
    # A claim in use keeps its volume (the pvc-protection finalizer) until its pods are gone.
    kubectl_admin delete pv "$name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    rm -rf "${VOLUMES_ROOT:?}/$name"
  done
  rmdir "$VOLUMES_ROOT" 2>/dev/null || true
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    class) cmd_class ;;
    make) cmd_make "$@" ;;
    path) cmd_path "$@" ;;
    own) cmd_own "$@" ;;
    remove) cmd_remove "$@" ;;
    *) sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
}

main "$@"
