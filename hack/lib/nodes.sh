#!/usr/bin/env bash
# Real nodes beside the control plane: each a kubelet (built from the pinned Kubernetes
# modules) with its own containerd (Debian), runc, CNI bridge and pod CIDR, plus one CoreDNS
# and one kube-proxy for the host. Pods on these nodes run sealtune's own images for real.
#
#   hack/lib/nodes.sh up [N]      start N real nodes (default 1: the confidential one); idempotent
#   hack/lib/nodes.sh down [--purge]  remove every process, sandbox, container, mount,
#                                 interface, iptables chain and cgroup `up` made, also after
#                                 an interrupted run; --purge also drops the nodes' image stores
#   hack/lib/nodes.sh status      what runs; exits non-zero when a node is missing
#   hack/lib/nodes.sh info        the JSON that tests read (nodes, addresses, image refs)
#
# Environment: SEALTUNE_REAL_NODES (N when not given), SEALTUNE_REAL_CC_NODES (how many of
# them are confidential, default 1), SEALTUNE_REAL_REGION (default eu-west-1),
# SEALTUNE_REAL_NODE_LABELS (extra k=v,k=v on every real node), SEALTUNE_REAL_GPUS (the
# nvidia.com/gpu capacity a confidential node advertises, default 8), SEALTUNE_NODE_IMAGES
# (which images to build and import, default "pause operator trainer").
#
# The confidential node SIMULATES confidential compute. It carries the labels the NVIDIA GPU
# operator sets in CC mode, advertises nvidia.com/gpu through the node status API, and its
# containerd has a runtime handler named like the confidential RuntimeClass's
# (kata-qemu-nvidia-gpu-tdx), but that handler runs plain runc: this VM has no TDX or
# SEV-SNP CPU and no GPU, so there is nothing to attest. What it proves locally is placement
# and the pod contract (RuntimeClass, selectors, taints, extended resources); in production
# the handler is Kata Containers running each pod in a TDX or SEV-SNP guest.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/common.sh"
# shellcheck source=nodes-versions.sh
. "$HERE/nodes-versions.sh"
# shellcheck source=pki.sh
. "$HERE/pki.sh"

KUBE_BIN=$BIN_CACHE/kubernetes-$KUBE_VERSION
COREDNS_BIN=$BIN_CACHE/coredns-$COREDNS_VERSION/coredns
# Persistent per-node data (kubelet root, containerd root with its imported images).
NODES_ROOT=${SEALTUNE_NODES_ROOT:-/var/lib/sealtune/nodes}
# Runtime state (containerd state and sockets, network namespaces, pids): gone at reboot.
NODES_RUN=${SEALTUNE_NODES_RUN:-/run/sealtune/nodes}
NODES_LOGS=$SEALTUNE_STATE/logs/nodes
ADMIN_KUBECONFIG=$SEALTUNE_STATE/kubeconfig
CNI_BIN_DIR=${SEALTUNE_CNI_BIN_DIR:-/usr/lib/cni}

# Addressing. Everything is on lo or on bridges this script creates: no traffic leaves the host.
NODE_IP_PREFIX=10.200.0          # node n gets 10.200.0.(10+n)/32 on lo
DNS_IP=$NODE_IP_PREFIX.10        # CoreDNS listens here (on lo); Service kube-dns fronts it
CLUSTER_DNS=10.96.0.10           # the kube-dns Service's ClusterIP
CLUSTER_DOMAIN=cluster.local
POD_CIDR=10.244.0.0/16           # node n gets 10.244.n.0/24 on bridge st-br<n>
MAX_NODES=40
CC_HANDLER=kata-qemu-nvidia-gpu-tdx
SIMULATED_NOTE="simulated: runtime handler $CC_HANDLER runs runc on this VM (no TDX/SEV-SNP CPU, no GPU); production runs Kata with TDX or SEV-SNP"

kubectl_admin() { "$KUBE_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# --- naming ---------------------------------------------------------------------------
cc_count() { echo "${SEALTUNE_REAL_CC_NODES:-1}"; }
# node_name N: confidential nodes first (real-cc-gpu-0, ...), then real-cpu-0, ...
node_name() {
  local n=$1 cc
  cc=$(cc_count)
  if [ "$n" -le "$cc" ]; then echo "real-cc-gpu-$((n - 1))"; else echo "real-cpu-$((n - cc - 1))"; fi
}
is_cc() { [ "$1" -le "$(cc_count)" ]; }
node_ip() { echo "$NODE_IP_PREFIX.$((10 + $1))"; }
node_bridge() { echo "st-br$1"; }
node_subnet() { echo "10.244.$1.0/24"; }
node_dir() { echo "$NODES_ROOT/$(node_name "$1")"; }
node_run() { echo "$NODES_RUN/$(node_name "$1")"; }
node_sock() { echo "$(node_run "$1")/containerd.sock"; }

# Node indexes that have state on this host (whatever N the last `up` used).
present_nodes() {
  local d
  for d in "$NODES_RUN"/*/index "$NODES_ROOT"/*/index; do
    [ -f "$d" ] && cat "$d"
  done | sort -un
}

# Node indexes started since the last `down`.
running_nodes() {
  local d
  for d in "$NODES_RUN"/*/index; do
    [ -f "$d" ] && cat "$d"
  done | sort -un
}

# --- processes ----------------------------------------------------------------------------
pidfile() { echo "$NODES_RUN/pids/$1.pid"; }
running() { local f; f=$(pidfile "$1"); [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

# daemon NAME CMD...: a process group of its own, output in $NODES_LOGS/NAME.log.
daemon() {
  local name=$1; shift
  mkdir -p "$NODES_RUN/pids" "$NODES_LOGS"
  setsid "$@" >>"$NODES_LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

stop_daemon() {
  local name=$1 f pid
  f=$(pidfile "$name")
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$f"
}

wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! running "$what"; then
      log "$what not ready after $((limit - deadline + SECONDS)) s; last log lines:"
      tail -n 25 "$NODES_LOGS/$what.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

# Certificates and kubeconfigs come from pki.sh (issue, kubeconfig), signed by the cluster CA.

# --- host networking: addresses, sysctls, the pods' egress guard ------------------------------

# Values this script changes, saved once so that `down` puts them back.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables)
set_sysctls() {
  local k saved=$NODES_RUN/sysctl.orig
  mkdir -p "$NODES_RUN"
  if [ ! -f "$saved" ]; then
    for k in "${SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k" 2>/dev/null || echo)"; done >"$saved"
  fi
  # Pods on one bridge reach a ClusterIP that kube-proxy DNATs back onto the same bridge only
  # if bridged traffic passes iptables.
  for k in "${SYSCTLS[@]}"; do sysctl -qw "$k=1" || log "warning: cannot set $k"; done
}
restore_sysctls() {
  local saved=$NODES_RUN/sysctl.orig line
  [ -f "$saved" ] || return 0
  while IFS= read -r line; do
    if [ -n "${line#*=}" ]; then sysctl -qw "$line" 2>/dev/null || true; fi
  done <"$saved"
  rm -f "$saved"
}

# Pods may talk to pods, Services and this host; nothing they send is forwarded anywhere else
# (the bridges do not masquerade, and this chain rejects the rest).
EGRESS_CHAIN=SEALTUNE-POD-EGRESS
egress_guard() {
  iptables -w -N "$EGRESS_CHAIN" 2>/dev/null || iptables -w -F "$EGRESS_CHAIN"
  iptables -w -A "$EGRESS_CHAIN" -d "$POD_CIDR" -j RETURN
  iptables -w -A "$EGRESS_CHAIN" -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
  iptables -w -A "$EGRESS_CHAIN" -j REJECT --reject-with icmp-net-prohibited
  # First in FORWARD, ahead of the chains kube-proxy inserts there.
  while iptables -w -D FORWARD -s "$POD_CIDR" -j "$EGRESS_CHAIN" 2>/dev/null; do :; done
  iptables -w -I FORWARD 1 -s "$POD_CIDR" -j "$EGRESS_CHAIN"
}

# --- cgroups (v1 here): each kubelet gets /sealtune/<node> in every hierarchy ------------------
cgroup_hierarchies() {
  awk '$3 == "cgroup" {print $2}' /proc/mounts
}
# Removal also covers the cgroup2 "unified" mount, where runc mirrors the tree.
all_cgroup_mounts() {
  awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts
}
make_cgroup() {
  local rel=$1 h d
  for h in $(cgroup_hierarchies); do
    d=$h
    for part in ${rel//\// }; do
      d=$d/$part
      if [ ! -d "$d" ]; then
        mkdir "$d"
        # A new cpuset cgroup starts with no CPUs or memory nodes: inherit the parent's.
        if [ -f "$d/cpuset.cpus" ]; then
          cat "$(dirname "$d")/cpuset.cpus" >"$d/cpuset.cpus"
          cat "$(dirname "$d")/cpuset.mems" >"$d/cpuset.mems"
        fi
      fi
    done
  done
}
# Kills every process in our cgroups, then removes them bottom-up.
remove_cgroups() {
  local h d pid
  for h in $(all_cgroup_mounts); do
    [ -d "$h/sealtune" ] || continue
    for pid in $(find "$h/sealtune" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  sleep 0.2
  for h in $(all_cgroup_mounts); do
    [ -d "$h/sealtune" ] || continue
    find "$h/sealtune" -depth -type d -print0 | while IFS= read -r -d '' d; do
      rmdir "$d" 2>/dev/null || true
    done
  done
}

# --- containerd, one per node ------------------------------------------------------------------
containerd_config() {
  local n=$1 dir run pause_ref
  dir=$(node_dir "$n"); run=$(node_run "$n"); pause_ref=$2
  local runc_opts='
            BinaryName = "/usr/sbin/runc"
            SystemdCgroup = false'
  cat <<TOML
# containerd for real node $(node_name "$n"), written by hack/lib/nodes.sh.
version = 2
root = "$dir/containerd"
state = "$run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Built here from hack/lib/pause.c: no image can be pulled on this machine.
  sandbox_image = "$pause_ref"
  # No CAP_SYS_RESOURCE in this VM: without this runc fails with
  # "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  # Network namespaces under this node's state directory, so \`down\` finds them.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_tls_streaming = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]$runc_opts
TOML
  if is_cc "$n"; then
    cat <<TOML
    # SIMULATED confidential runtime: the handler name of RuntimeClass $CC_HANDLER, but runc.
    # In production this is Kata Containers (io.containerd.kata-qemu-nvidia-gpu-tdx.v2)
    # running the pod in a TDX or SEV-SNP guest with the GPU in CC mode.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$CC_HANDLER]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.$CC_HANDLER.options]$runc_opts
TOML
  fi
  cat <<TOML
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$dir/cni"
    max_conf_num = 1
TOML
}

cni_config() {
  local n=$1
  cat <<JSON
{
  "cniVersion": "1.0.0",
  "name": "sealtune-$(node_name "$n")",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$(node_bridge "$n")",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$(node_subnet "$n")"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$(node_run "$n")/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

ctr_n() { local sock=$1; shift; ctr --address "$sock" --namespace k8s.io "$@"; }

start_containerd() {
  local n=$1 name dir run
  name=$(node_name "$n"); dir=$(node_dir "$n"); run=$(node_run "$n")
  running "containerd-$name" && return 0
  mkdir -p "$dir/cni" "$dir/containerd" "$run"
  echo "$n" >"$dir/index"; echo "$n" >"$run/index"
  containerd_config "$n" "$3" >"$dir/containerd.toml"
  cni_config "$n" >"$dir/cni/10-sealtune.conflist"
  daemon "containerd-$name" containerd --config "$dir/containerd.toml"
  wait_for "containerd-$name" 60 ctr_n "$(node_sock "$n")" version
}

# --- kubelet ---------------------------------------------------------------------------------------
kubelet_config() {
  local n=$1 name ip dir taints=""
  name=$(node_name "$n"); ip=$(node_ip "$n"); dir=$(node_dir "$n")
  if is_cc "$n"; then
    taints='
registerWithTaints:
- {key: nvidia.com/gpu, value: present, effect: NoSchedule}
- {key: sealtune.dev/confidential, value: "true", effect: NoSchedule}'
  fi
  cat <<YAML
# kubelet for real node $name, written by hack/lib/nodes.sh.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This VM has cgroup v1 (/sys/fs/cgroup is a tmpfs of v1 hierarchies).
failCgroupV1: false
cgroupDriver: cgroupfs
# Every kubelet on this host has its own cgroup subtree.
cgroupRoot: /sealtune/$name
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: $ip
healthzPort: 10248
tlsCertFile: $dir/pki/kubelet-serving.crt
tlsPrivateKeyFile: $dir/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$CLUSTER_DNS]
resolvConf: $dir/resolv.conf
containerRuntimeEndpoint: unix://$(node_sock "$n")
podLogsDir: $dir/pod-logs
failSwapOn: false
# The images here cannot be pulled again: never garbage-collect them, and do not evict on
# the disk use that image builds cause on this shared machine.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
nodeStatusUpdateFrequency: 10s
maxPods: 110
$taints
YAML
}

node_labels() {
  local n=$1 region=${SEALTUNE_REAL_REGION:-eu-west-1}
  local labels="sealtune.dev/real-node=true,topology.kubernetes.io/region=$region,topology.kubernetes.io/zone=$region-a"
  if is_cc "$n"; then
    # What the NVIDIA GPU operator sets on a node whose GPUs are in confidential-compute mode.
    labels+=",sealtune.dev/pool=confidential-gpu,nvidia.com/gpu.present=true,nvidia.com/cc.capable=true"
    labels+=",nvidia.com/cc.mode.state=on,nvidia.com/cc.ready.state=true,sealtune.dev/confidential-simulated=true"
  else
    labels+=",sealtune.dev/pool=cpu"
  fi
  [ -n "${SEALTUNE_REAL_NODE_LABELS:-}" ] && labels+=",$SEALTUNE_REAL_NODE_LABELS"
  echo "$labels"
}

start_kubelet() {
  local n=$1 name ip dir
  name=$(node_name "$n"); ip=$(node_ip "$n"); dir=$(node_dir "$n")
  running "kubelet-$name" && return 0
  issue "$dir/pki" kubelet-client "/O=system:nodes/CN=system:node:$name" clientAuth
  issue "$dir/pki" kubelet-serving "/O=system:nodes/CN=system:node:$name" serverAuth "IP:$ip,DNS:$name"
  kubeconfig "$dir/kubelet.kubeconfig" kubelet-client "$dir/pki"
  # Pods with dnsPolicy Default get this; nothing resolves outside the cluster.
  echo "nameserver $DNS_IP" >"$dir/resolv.conf"
  kubelet_config "$n" >"$dir/kubelet.yaml"
  mkdir -p "$dir/kubelet" "$dir/pod-logs"
  # The kubelet keeps its device-plugin socket and checkpoint at a fixed path; `down` removes
  # that directory if it was this script that brought it into being.
  if [ ! -d /var/lib/kubelet ]; then mkdir -p /var/lib/kubelet; touch /var/lib/kubelet/.sealtune-created; fi
  make_cgroup "sealtune/$name"
  daemon "kubelet-$name" "$KUBE_BIN/kubelet" --config "$dir/kubelet.yaml" \
    --kubeconfig "$dir/kubelet.kubeconfig" --root-dir "$dir/kubelet" --cert-dir "$dir/pki" \
    --hostname-override "$name" --node-ip "$ip" --node-labels "$(node_labels "$n")" --v 1
}

node_ready() {
  [ "$(kubectl_admin get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# nvidia.com/gpu through the node status API, the documented way to advertise an extended
# resource; the kubelet may reset it when it re-registers, so this runs after every start.
advertise_gpus() {
  local name=$1 gpus=${SEALTUNE_REAL_GPUS:-8}
  kubectl_admin patch node "$name" --subresource=status --type=json \
    -p "[{\"op\": \"add\", \"path\": \"/status/capacity/nvidia.com~1gpu\", \"value\": \"$gpus\"}]" >/dev/null
  kubectl_admin annotate --overwrite node "$name" "sealtune.dev/confidential-compute=$SIMULATED_NOTE" >/dev/null
  local deadline=$((SECONDS + 60))
  until [ "$(kubectl_admin get node "$name" -o jsonpath='{.status.allocatable.nvidia\.com/gpu}')" = "$gpus" ]; do
    [ $SECONDS -lt $deadline ] || die "node $name does not show nvidia.com/gpu=$gpus as allocatable"
    sleep 1
  done
}

# --- CoreDNS and kube-proxy: one each for the host -------------------------------------------------
# All real nodes share the host's network namespace (their pods do not: each has its own),
# so the iptables rules of one kube-proxy serve every node's pods, exactly as N kube-proxies
# would, and N of them would fight over the same chains. Likewise one CoreDNS, reached through
# the kube-dns Service like the Deployment of a production cluster.
build_coredns() {
  [ -x "$COREDNS_BIN" ] && return 0
  # The cached_build and _go_install of binaries.sh (the lead's), in a process of their own.
  # shellcheck disable=SC2016
  bash -c '. "$1"; cached_build "$BIN_CACHE/coredns-$COREDNS_VERSION" _go_install "github.com/coredns/coredns@$COREDNS_VERSION"' \
    build-coredns "$HERE/binaries.sh"
}

COREDNS_RBAC='
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:sealtune:coredns", labels: {sealtune.dev/real-nodes: "true"}}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:sealtune:coredns", labels: {sealtune.dev/real-nodes: "true"}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:sealtune:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:sealtune:coredns"}'

kube_dns_objects() {
  cat <<YAML
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS, sealtune.dev/real-nodes: "true"}
spec:
  clusterIP: $CLUSTER_DNS
  ports:
  - {name: dns, port: 53, protocol: UDP, targetPort: 53}
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
# No selector: CoreDNS runs on the host at $DNS_IP, so its endpoints are given here.
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: sealtune.dev-hack-nodes
    sealtune.dev/real-nodes: "true"
addressType: IPv4
ports:
- {name: dns, port: 53, protocol: UDP}
- {name: dns-tcp, port: 53, protocol: TCP}
endpoints:
- addresses: ["$DNS_IP"]
  conditions: {ready: true}
YAML
}

start_coredns() {
  running coredns && return 0
  local dir=$NODES_RUN/coredns
  mkdir -p "$dir"
  lo_add "$DNS_IP"
  issue "$dir" coredns "/CN=system:sealtune:coredns" clientAuth
  kubeconfig "$dir/kubeconfig" coredns "$dir"
  echo "$COREDNS_RBAC" | kubectl_admin apply -f - >/dev/null
  # Cluster names only: there is no `forward`, so no query ever leaves this host.
  cat >"$dir/Corefile" <<COREFILE
.:53 {
    bind $DNS_IP
    errors
    health $DNS_IP:8080
    ready $DNS_IP:8181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $dir/kubeconfig sealtune-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
}
COREFILE
  daemon coredns "$COREDNS_BIN" -conf "$dir/Corefile"
  wait_for coredns 60 curl -fsS --max-time 2 "http://$DNS_IP:8181/ready"
  kube_dns_objects | kubectl_admin apply -f - >/dev/null
}

start_kube_proxy() {
  running kube-proxy && return 0
  local dir=$NODES_RUN/kube-proxy
  mkdir -p "$dir"
  # system:kube-proxy is bound to the built-in ClusterRole system:node-proxier.
  issue "$dir" kube-proxy "/CN=system:kube-proxy" clientAuth
  kubeconfig "$dir/kubeconfig" kube-proxy "$dir"
  cat >"$dir/config.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $dir/kubeconfig}
mode: iptables
# One kube-proxy for all real nodes (they share this network namespace); it names itself
# after the first.
hostnameOverride: $(node_name 1)
clusterCIDR: $POD_CIDR
detectLocalMode: ClusterCIDR
bindAddress: $DNS_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP_PREFIX.0/24"]
# Leave the host's conntrack table size alone.
conntrack: {maxPerCore: 0, min: 0}
YAML
  daemon kube-proxy "$KUBE_BIN/kube-proxy" --config "$dir/config.yaml" --v 1
  # /healthz stays 503 until its node exists; /livez says the rules are in sync.
  wait_for kube-proxy 60 curl -fsS --max-time 2 http://127.0.0.1:10256/livez
}

# --- up ---------------------------------------------------------------------------------------------
cmd_up() {
  local count=${1:-${SEALTUNE_REAL_NODES:-1}} start=$SECONDS n
  if [ "$count" -lt 1 ] || [ "$count" -gt "$MAX_NODES" ]; then die "node count must be 1..$MAX_NODES"; fi
  [ "$(id -u)" -eq 0 ] || die "real nodes need root (containerd, mounts, iptables)"
  if [ ! -f "$ADMIN_KUBECONFIG" ] || [ ! -f "$PKI/ca.key" ]; then
    die "no control plane at $SEALTUNE_STATE: run hack/cluster up first"
  fi
  kubectl_admin get --raw /readyz >/dev/null || die "the API server at $SEALTUNE_API_IP is not ready"
  [ -f "$KUBE_BIN/.complete" ] || die "Kubernetes binaries missing: hack/lib/binaries.sh kubernetes"

  bash "$HERE/debs.sh" nodes images
  build_coredns
  local images=${SEALTUNE_NODE_IMAGES:-pause operator trainer}
  # shellcheck disable=SC2086
  bash "$HERE/images.sh" build $images
  local pause_ref
  pause_ref=$(bash "$HERE/images.sh" refs | sed -n 's/^pause=//p')
  log "real nodes: images ready ($((SECONDS - start)) s)"

  mkdir -p "$NODES_RUN" "$NODES_ROOT" "$NODES_LOGS"
  set_sysctls
  egress_guard
  start_coredns
  for n in $(seq 1 "$count"); do
    lo_add "$(node_ip "$n")"
    start_containerd "$n" "" "$pause_ref"
    # Before the kubelet starts, so that pods find their images at once.
    # shellcheck disable=SC2086
    bash "$HERE/images.sh" import "$(node_sock "$n")" $images
    start_kubelet "$n"
  done
  # After the kubelets, which register the node kube-proxy names itself after.
  start_kube_proxy
  egress_guard
  for n in $(seq 1 "$count"); do
    local name
    name=$(node_name "$n")
    local deadline=$((SECONDS + 120))
    until node_ready "$name"; do
      if [ $SECONDS -ge $deadline ] || ! running "kubelet-$name"; then
        tail -n 30 "$NODES_LOGS/kubelet-$name.log" >&2 || true
        die "node $name not Ready"
      fi
      sleep 1
    done
    if is_cc "$n"; then
      advertise_gpus "$name"
      log "node $name Ready at $(node_ip "$n"): CONFIDENTIAL COMPUTE IS SIMULATED here ($SIMULATED_NOTE)"
    else
      log "node $name Ready at $(node_ip "$n")"
    fi
  done
  # Pods on these nodes mount claims of static local volumes (hack/lib/volumes.sh).
  bash "$HERE/volumes.sh" class
  cmd_info >"$NODES_RUN/info.json"
  log "real nodes up in $((SECONDS - start)) s: $count node(s); info in $NODES_RUN/info.json"
}

# --- info and status -----------------------------------------------------------------------------------
cmd_info() {
  local n first=1
  printf '{\n  "nodes": ['
  for n in $(running_nodes); do
    [ $first -eq 1 ] || printf ','
    first=0
    printf '\n    {"name": "%s", "ip": "%s", "podCIDR": "%s", "bridge": "%s", "confidential": %s, "containerdSocket": "%s", "kubeletRoot": "%s"}' \
      "$(node_name "$n")" "$(node_ip "$n")" "$(node_subnet "$n")" "$(node_bridge "$n")" \
      "$(is_cc "$n" && echo true || echo false)" "$(node_sock "$n")" "$(node_dir "$n")/kubelet"
  done
  printf '\n  ],\n  "images": {'
  first=1
  local line
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    [ $first -eq 1 ] || printf ','
    first=0
    printf '\n    "%s": "%s"' "${line%%=*}" "${line#*=}"
  done < <(bash "$HERE/images.sh" refs 2>/dev/null || true)
  printf '\n  },\n  "clusterDNS": "%s", "dnsAddress": "%s", "runtimeHandler": "%s",\n' "$CLUSTER_DNS" "$DNS_IP" "$CC_HANDLER"
  printf '  "nodesRoot": "%s", "nodesRun": "%s", "confidentialCompute": "%s"\n}\n' "$NODES_ROOT" "$NODES_RUN" "$SIMULATED_NOTE"
}

cmd_status() {
  local rc=0 c n
  for c in coredns kube-proxy; do
    if running "$c"; then echo "$c: running (pid $(cat "$(pidfile "$c")"))"; else echo "$c: stopped"; rc=1; fi
  done
  for n in $(present_nodes); do
    local name
    name=$(node_name "$n")
    for c in containerd kubelet; do
      if running "$c-$name"; then echo "$name $c: running"; else echo "$name $c: stopped"; rc=1; fi
    done
  done
  [ -n "$(present_nodes)" ] || { echo "no real nodes"; rc=1; }
  return $rc
}

# --- down ----------------------------------------------------------------------------------------------
# Processes whose command line names our directories (the kubelets, containerds, shims,
# CoreDNS and kube-proxy all do), whatever their pid files say.
our_pids() {
  local p cmd
  for p in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
    case $cmd in
      *"$NODES_ROOT/"* | *"$NODES_RUN/"*) echo "${p#/proc/}" ;;
    esac
  done
}

our_mounts() {
  awk '{print $2}' /proc/self/mounts | sed 's/\\040/ /g' \
    | grep -E "^($NODES_ROOT|$NODES_RUN)(/|$)" | sort -r || true
}

# Removes the node's containers and sandboxes through its containerd (started again for this
# if an interrupted run left it dead). Returns non-zero when that was not possible.
clean_containers() {
  local n=$1 name sock
  name=$(node_name "$n"); sock=$(node_sock "$n")
  [ -f "$(node_dir "$n")/containerd.toml" ] || return 0
  if ! running "containerd-$name"; then
    [ -d "$(node_dir "$n")/containerd" ] || return 0
    daemon "containerd-$name" containerd --config "$(node_dir "$n")/containerd.toml"
    wait_for "containerd-$name" 30 ctr_n "$sock" version || return 1
  fi
  local id
  for id in $(ctr_n "$sock" tasks ls -q 2>/dev/null); do
    ctr_n "$sock" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_n "$sock" tasks ls -q 2>/dev/null); do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      ctr_n "$sock" tasks delete -f "$id" >/dev/null 2>&1 && break
      sleep 0.3
    done
  done
  for id in $(ctr_n "$sock" containers ls -q 2>/dev/null); do
    ctr_n "$sock" containers delete "$id" >/dev/null 2>&1 || true
  done
  [ -z "$(ctr_n "$sock" containers ls -q 2>/dev/null)" ]
}

cmd_down() {
  local purge=0
  [ "${1:-}" = --purge ] && purge=1
  local n nodes name
  nodes=$(present_nodes)
  # The Node objects go first, while the API server may still be there.
  if [ -n "$nodes" ] && [ -f "$ADMIN_KUBECONFIG" ] && kubectl_admin get --raw /readyz >/dev/null 2>&1; then
    for n in $nodes; do
      kubectl_admin delete node "$(node_name "$n")" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    done
    kubectl_admin delete endpointslice -n kube-system kube-dns-host --ignore-not-found >/dev/null 2>&1 || true
  fi
  for n in $nodes; do stop_daemon "kubelet-$(node_name "$n")"; done
  stop_daemon kube-proxy
  stop_daemon coredns
  local wipe_images=$purge
  for n in $nodes; do
    name=$(node_name "$n")
    clean_containers "$n" || { log "containerd of $name could not clean up; its store is wiped"; wipe_images=1; }
    stop_daemon "containerd-$name"
    # Half-written blobs of an interrupted import (GBs for the trainer).
    rm -rf "$(node_dir "$n")/containerd/io.containerd.content.v1.content/ingest"
  done
  # Whatever escaped: shims, container processes, a kubelet without a pid file.
  local pid
  for pid in $(our_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  remove_cgroups
  local m
  while IFS= read -r m; do
    [ -n "$m" ] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done < <(our_mounts)

  # Network: bridges (their veths went with the pods' namespaces), addresses, iptables.
  local link
  for link in $(ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep -E '^st-br[0-9]+$' || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  for link in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//'); do
    # A veth left in the host whose peer was in a pod of ours (master is one of our bridges).
    local desc
    desc=$(ip -o link show "$link" 2>/dev/null || true)
    if [[ $desc == *"master st-br"* ]]; then ip link delete "$link" 2>/dev/null || true; fi
  done
  local i
  for i in $(seq 10 $((10 + MAX_NODES))); do lo_del "$NODE_IP_PREFIX.$i"; done
  clean_iptables
  conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
  conntrack -D -d "$POD_CIDR" >/dev/null 2>&1 || true
  restore_sysctls

  # Files: runtime state, kubelet roots, pod logs and the log symlinks the kubelets made.
  find /var/log/containers -maxdepth 1 -type l -lname "$NODES_ROOT/*" -delete 2>/dev/null || true
  rmdir /var/log/containers 2>/dev/null || true
  rm -rf "$NODES_RUN"
  for n in $nodes; do
    local dir
    dir=$(node_dir "$n")
    rm -rf "$dir/kubelet" "$dir/pod-logs" "$dir/pki"
    if [ "$wipe_images" -eq 1 ]; then rm -rf "$dir"; fi
  done
  # The kubelet keeps its device-plugin socket and checkpoint at a fixed path.
  if [ -f /var/lib/kubelet/.sealtune-created ]; then rm -rf /var/lib/kubelet; fi
  rmdir "$NODES_ROOT" 2>/dev/null || true
  log "real nodes down"
}

# iptables: kube-proxy's own cleanup, then every KUBE-*, CNI-* and SEALTUNE-* chain left
# (the kubelets' canaries, portmap's hostport chains, the egress guard).
clean_iptables() {
  if [ -x "$KUBE_BIN/kube-proxy" ]; then
    "$KUBE_BIN/kube-proxy" --cleanup --v 0 >/dev/null 2>&1 || true
  fi
  local ipt table
  for ipt in iptables ip6tables; do
    for table in filter nat mangle raw; do
      _clean_table "$ipt" "$table"
    done
  done
}
_clean_table() {
  local ipt=$1 table=$2 rule chain
  local ours='^(KUBE-|CNI-|SEALTUNE-)'
  # First the rules, in any chain, that jump to one of ours; iptables -S quotes comments
  # the way a shell reads them back.
  local rules
  rules=$("$ipt" -w -t "$table" -S 2>/dev/null | grep -E -- '^-A .* -j (KUBE-|CNI-|SEALTUNE-)' || true)
  while IFS= read -r rule; do
    [ -n "$rule" ] || continue
    eval "$ipt -w -t $table ${rule/-A/-D}" 2>/dev/null || true
  done <<<"$rules"
  for chain in $("$ipt" -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "$ours" || true); do
    "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
  done
  for chain in $("$ipt" -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" {print $2}' | grep -E "$ours" || true); do
    "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
  done
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status ;;
    info) cmd_info ;;
    *) sed -n '2,12s/^# \{0,1\}//p' "$0"; exit 2 ;;
  esac
}

main "$@"
