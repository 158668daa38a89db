#!/usr/bin/env bash
# Certificates and keys for the local control plane, made with openssl into $SEALTUNE_STATE/pki.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PKI=$SEALTUNE_STATE/pki

# issue DIR NAME SUBJECT EKU [SANS]: DIR/NAME.key and DIR/NAME.crt signed by the cluster CA;
# kept when DIR already holds a certificate this CA signed.
issue() {
  local dir=$1 name=$2 subj=$3 eku=$4 sans=${5:-}
  [ -f "$dir/$name.crt" ] && openssl verify -CAfile "$PKI/ca.crt" "$dir/$name.crt" >/dev/null 2>&1 && return 0
  mkdir -p "$dir"; chmod 700 "$dir"
  local ext="keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=$eku\n"
  [ -n "$sans" ] && ext+="subjectAltName=$sans\n"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
  # shellcheck disable=SC2059
  openssl x509 -req -in "$dir/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -CAserial "$dir/ca.srl" -days 30 -out "$dir/$name.crt" \
    -extfile <(printf "$ext") 2>/dev/null
  rm -f "$dir/$name.csr"
}

# client_cert NAME CN [ORG]: a client certificate for a control-plane component.
client_cert() {
  local name=$1 cn=$2 org=${3:-}
  issue "$PKI" "$name" "${org:+/O=$org}/CN=$cn" clientAuth
}

# kubeconfig FILE NAME [DIR]: a kubeconfig authenticating with DIR/NAME.crt (DIR defaults to $PKI).
kubeconfig() {
  local file=$1 name=$2 dir=${3:-$PKI}
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
    client-certificate: $dir/$name.crt
    client-key: $dir/$name.key
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
  issue "$PKI" apiserver /CN=kube-apiserver serverAuth \
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
