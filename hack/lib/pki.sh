#!/usr/bin/env bash
# Certificates and keys for the local control plane, made with openssl into $SEALTUNE_STATE/pki.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PKI=$SEALTUNE_STATE/pki

# client_cert NAME CN [ORG]: a client certificate signed by the cluster CA.
client_cert() {
  local name=$1 cn=$2 org=${3:-}
  local subj="/CN=$cn"
  [ -n "$org" ] && subj="/O=$org$subj"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 30 -out "$PKI/$name.crt" \
    -extfile <(printf 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n') 2>/dev/null
}

serving_cert() {
  local name=$1 cn=$2 sans=$3
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -subj "/CN=$cn" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 30 -out "$PKI/$name.crt" \
    -extfile <(printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$sans") 2>/dev/null
}

# kubeconfig FILE CERT_NAME: a kubeconfig authenticating with the named client certificate.
kubeconfig() {
  local file=$1 name=$2
  cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: sealtune-local
  cluster:
    server: https://$SEALTUNE_API_IP:$SEALTUNE_API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: sealtune-local
  context: {cluster: sealtune-local, user: $name}
current-context: sealtune-local
YAML
}

make_pki() {
  [ -f "$PKI/.complete" ] && return 0
  rm -rf "$PKI"; mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 -subj "/CN=sealtune-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  serving_cert apiserver kube-apiserver \
    "IP:$SEALTUNE_API_IP,IP:127.0.0.1,IP:$SERVICE_API_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  client_cert admin sealtune-admin system:masters
  client_cert controller-manager system:kube-controller-manager
  client_cert scheduler system:kube-scheduler
  client_cert kwok kwok-controller system:masters
  client_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  rm -f "$PKI"/*.csr
  for name in admin controller-manager scheduler kwok; do
    kubeconfig "$SEALTUNE_STATE/$name.kubeconfig" "$name"
  done
  cp "$SEALTUNE_STATE/admin.kubeconfig" "$SEALTUNE_STATE/kubeconfig"
  touch "$PKI/.complete"
}
