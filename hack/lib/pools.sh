#!/usr/bin/env bash
# Prints the kwok node pools sealtune targets, and the confidential RuntimeClass, as YAML.
#   pools.sh [GPU_NODES] [CC_NODES] [CPU_NODES_PER_REGION]
set -euo pipefail

gpu_nodes=${1:-${KWOK_GPU_NODES:-4}}
cc_nodes=${2:-${KWOK_CC_NODES:-2}}
cpu_nodes=${3:-${KWOK_CPU_NODES_PER_REGION:-2}}
gpus_per_node=${KWOK_GPUS_PER_NODE:-8}

# node NAME POOL REGION GPUS EXTRA_LABELS TAINTS_YAML
node() {
  local name=$1 pool=$2 region=$3 gpus=$4 labels=$5 taints=$6
  cat <<YAML
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/hostname: $name
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    sealtune.dev/pool: $pool
    topology.kubernetes.io/region: $region
    topology.kubernetes.io/zone: $region-a$labels
spec:
  taints:$taints
status:
  capacity: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "$gpus"}
  allocatable: {cpu: "64", memory: 512Gi, pods: "110", nvidia.com/gpu: "$gpus"}
YAML
}

gpu_taint='
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}'
cc_taint="$gpu_taint"'
  - {key: sealtune.dev/confidential, value: "true", effect: NoSchedule}'
cc_labels='
    nvidia.com/gpu.present: "true"
    nvidia.com/cc.capable: "true"
    nvidia.com/cc.mode.state: "on"
    nvidia.com/cc.ready.state: "true"'

regions=(eu-west-1 us-east-1)
for i in $(seq 0 $((gpu_nodes - 1))); do
  node "kwok-gpu-$i" gpu "${regions[$((i % 2))]}" "$gpus_per_node" '
    nvidia.com/gpu.present: "true"' "$gpu_taint"
done
for i in $(seq 0 $((cc_nodes - 1))); do
  node "kwok-cc-gpu-$i" confidential-gpu eu-west-1 "$gpus_per_node" "$cc_labels" "$cc_taint"
done
for region in "${regions[@]}"; do
  for i in $(seq 0 $((cpu_nodes - 1))); do
    node "kwok-cpu-$region-$i" cpu "$region" 0 "" " []"
  done
done

# The RuntimeClass admission plugin copies scheduling into every pod that names it, so such
# pods can only land on CC-ready nodes and tolerate their taint.
cat <<'YAML'
---
apiVersion: node.k8s.io/v1
kind: RuntimeClass
metadata:
  name: kata-qemu-nvidia-gpu-tdx
  labels: {sealtune.dev/confidential: "true"}
handler: kata-qemu-nvidia-gpu-tdx
scheduling:
  nodeSelector:
    nvidia.com/cc.ready.state: "true"
  tolerations:
  - {key: sealtune.dev/confidential, operator: Exists, effect: NoSchedule}
YAML
