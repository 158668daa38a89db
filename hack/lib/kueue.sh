#!/usr/bin/env bash
# Kueue as a host process against the local API server, the way Kueue's own integration tests
# run it: its CRDs and webhooks installed from the same module version (hack/lib/binaries.sh
# keeps them beside the binary), its own identity (user system:kueue, a client certificate of
# the local PKI, bound to Kueue's manager ClusterRole), webhooks served on 127.0.0.1 with a
# certificate of the cluster CA. Sourced by controlplane.sh: start_kueue, kueue_installed.
#
# Only the batch/job integration is on, and its webhooks see only Jobs that name a queue
# (kueue.x-k8s.io/queue-name), so a Kueue that is down blocks queued work, never the rest.
# Kueue reads its metrics certificate from a fixed path, /etc/kueue/metrics/certs: it runs in a
# mount namespace of its own whose /etc is an overlay, the host's /etc below and the state
# directory's certificate above, so the host's /etc is never written.
set -euo pipefail

KUEUE_DIR=$SEALTUNE_STATE/kueue
KUEUE_BIN=$BIN_CACHE/kueue-$KUEUE_VERSION
KUEUE_USER=system:kueue
KUEUE_WEBHOOK_PORT=${SEALTUNE_KUEUE_WEBHOOK_PORT:-9444}
KUEUE_METRICS_PORT=${SEALTUNE_KUEUE_METRICS_PORT:-9445}
KUEUE_HEALTH_PORT=${SEALTUNE_KUEUE_HEALTH_PORT:-9446}

_kueue_config() {
  cat <<YAML
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
namespace: kueue-system
health:
  healthProbeBindAddress: 127.0.0.1:$KUEUE_HEALTH_PORT
metrics:
  bindAddress: 127.0.0.1:$KUEUE_METRICS_PORT
webhook:
  host: 127.0.0.1
  port: $KUEUE_WEBHOOK_PORT
  certDir: $KUEUE_DIR/webhook
leaderElection:
  leaderElect: false
# The built-in rotator keeps certificates in a Secret for a Service name, and can hang at start.
internalCertManagement:
  enable: false
manageJobsWithoutQueueName: false
integrations:
  frameworks: ["batch/job"]
  # The operator finds a job's Workload by the labels of its batch Job.
  labelKeysToCopy:
    - sealtune.dev/finetunejob
    - sealtune.dev/finetunejob-namespace
    - sealtune.dev/finetunejob-uid
YAML
}

# Kueue's webhook manifests, pointed at this process: only the Job and Kueue-object webhooks,
# the Job ones only for Jobs that name a queue.
_kueue_webhooks() {
  local ca
  ca=$(base64 -w0 <"$PKI/ca.crt")
  kubectl_admin create --dry-run=client -o json -f "$KUEUE_BIN/webhooks.yaml" |
    python3 -c '
import json, sys
ca, port = sys.argv[1], sys.argv[2]
text, at, configs = sys.stdin.read(), 0, []
decoder = json.JSONDecoder()
while text[at:].strip():  # kubectl prints one JSON document per object
    config, at = decoder.raw_decode(text, len(text) - len(text[at:].lstrip()))
    configs.append(config)
for config in configs:
    config["metadata"]["name"] = "kueue-" + config["metadata"]["name"]
    kept = []
    for hook in config["webhooks"]:
        groups = {g for rule in hook["rules"] for g in rule["apiGroups"]}
        resources = {r for rule in hook["rules"] for r in rule["resources"]}
        if groups == {"batch"} and resources == {"jobs"}:
            hook["objectSelector"] = {"matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]}
        elif groups != {"kueue.x-k8s.io"}:
            continue
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{port}{path}", "caBundle": ca}
        kept.append(hook)
    config["webhooks"] = kept
json.dump({"apiVersion": "v1", "kind": "List", "items": configs}, sys.stdout)
' "$ca" "$KUEUE_WEBHOOK_PORT"
}

# Kueue's API and identity in the cluster (idempotent).
kueue_installed() {
  kubectl_admin apply --server-side --force-conflicts -f "$KUEUE_BIN/crd" >/dev/null
  kubectl_admin wait --for condition=established --timeout=60s -f "$KUEUE_BIN/crd" >/dev/null
  kubectl_admin create namespace kueue-system --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
  sed 's/name: manager-role/name: kueue-manager-role/' "$KUEUE_BIN/role.yaml" | kubectl_admin apply -f - >/dev/null
  kubectl_admin create clusterrolebinding kueue-manager --clusterrole=kueue-manager-role \
    --user="$KUEUE_USER" --dry-run=client -o yaml | kubectl_admin apply -f - >/dev/null
  _kueue_webhooks | kubectl_admin apply -f - >/dev/null
}

start_kueue() {
  build_kueue
  mkdir -p "$KUEUE_DIR"; chmod 700 "$KUEUE_DIR"
  issue "$KUEUE_DIR/webhook" tls /CN=kueue-webhook serverAuth IP:127.0.0.1
  issue "$KUEUE_DIR/etc/upper/kueue/metrics/certs" tls /CN=kueue-metrics serverAuth IP:127.0.0.1
  mkdir -p "$KUEUE_DIR/etc/work"
  client_cert kueue "$KUEUE_USER"
  kubeconfig "$KUEUE_DIR/kubeconfig" kueue
  _kueue_config >"$KUEUE_DIR/config.yaml"
  kueue_installed
  # shellcheck disable=SC2016  # $1 is the inner shell's
  daemon kueue unshare --mount --propagation private sh -c \
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc && shift && exec "$@"' \
    kueue "$KUEUE_DIR/etc" "$KUEUE_BIN/kueue" --config "$KUEUE_DIR/config.yaml" \
    --kubeconfig "$KUEUE_DIR/kubeconfig" --feature-gates VisibilityOnDemand=false,MultiKueue=false
  wait_for kueue 120 curl -fsS "http://127.0.0.1:$KUEUE_HEALTH_PORT/readyz"
}
