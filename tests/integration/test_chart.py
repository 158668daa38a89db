"""The Helm chart: lint and render clean; its alerts fire in promtool's unit tests; `helm install`
into the real control plane makes its objects; and the real operator, run with a token of the
chart's ServiceAccount (so with exactly the chart's RBAC), completes a job and is refused what the
chart does not grant. Its metrics endpoint passes `promtool check metrics`."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.support.cluster import LocalCluster
from tests.support.kube import apply, get, wait_for, workload_of
from tests.support.objects import domain_with_claims, finetune_job, kwok_runtime
from tests.support.operator import OperatorProcess, rbac_refusals, token_kubeconfig
from tests.support.tools import CHART, free_port, render, run, tool


def test_lint_and_template_are_clean() -> None:
    out = run(tool("helm"), "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render()}
    assert kinds >= {
        ("ServiceAccount", "t-sealtune"),
        ("ClusterRole", "t-sealtune"),
        ("ClusterRoleBinding", "t-sealtune"),
        ("Role", "t-sealtune"),
        ("RoleBinding", "t-sealtune"),
        ("Deployment", "t-sealtune"),
        ("Service", "t-sealtune-metrics"),
        ("Service", "t-sealtune-webhook"),
        ("NetworkPolicy", "t-sealtune"),
        ("ConfigMap", "t-sealtune-dashboard"),
        ("ClusterKopfPeering", "t-sealtune"),
        ("PodDisruptionBudget", "t-sealtune"),
        ("ValidatingWebhookConfiguration", "t-sealtune"),
    }
    assert not any(kind in ("ServiceMonitor", "PrometheusRule") for kind, _ in kinds)
    optional = render(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true"
    )
    rule = next(d for d in optional if d["kind"] == "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert rule["spec"] == alerts, "the PrometheusRule ships files/alerts.yaml as it is"
    assert any(d["kind"] == "ServiceMonitor" for d in optional)
    json.loads(next(d for d in render() if d["kind"] == "ConfigMap")["data"]["sealtune.json"])


def test_the_deployment_is_restricted_and_highly_available() -> None:
    deployment = next(d for d in render() if d["kind"] == "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert set(container["resources"]) == {"requests", "limits"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SEALTUNE_PEERING_NAME"] == "t-sealtune"
    assert env["SEALTUNE_WEBHOOK_SERVICE"] == "t-sealtune-webhook"
    assert container["livenessProbe"]["httpGet"]["port"] == "healthz"
    assert {"name": "healthz", "containerPort": int(env["SEALTUNE_LIVENESS_PORT"])} in container["ports"]


def test_every_rbac_rule_says_why() -> None:
    """Each rule in the RBAC template comes right after a comment that justifies it."""
    lines = [line.strip() for line in (CHART / "templates" / "rbac.yaml").read_text().splitlines()]
    rules = [n for n, line in enumerate(lines) if line.startswith("- apiGroups:")]
    assert len(rules) >= 15
    for number in rules:
        assert lines[number - 1].startswith("#"), f"the rule at line {number + 1} says not why"


def test_alert_rules_fire_in_promtool_unit_tests() -> None:
    promtool = tool("promtool")
    assert "SUCCESS" in run(promtool, "check", "rules", str(CHART / "files" / "alerts.yaml"))
    assert "SUCCESS" in run(promtool, "test", "rules", str(CHART / "tests" / "alerts_test.yaml"))
    tested = set(re.findall(r"alertname: (\w+)", (CHART / "tests" / "alerts_test.yaml").read_text()))
    defined = set(re.findall(r"- alert: (\w+)", (CHART / "files" / "alerts.yaml").read_text()))
    assert tested == defined


@pytest.fixture
def release(
    cluster: LocalCluster, kubectl: Kubectl, crds_installed: None, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """The chart installed in a namespace of its own (its pods run on kwok nodes)."""
    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"st-{suffix}", f"sealtune-chart-{suffix}"
    kubectl("create", "namespace", namespace)
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    helm = [tool("helm"), "--kubeconfig", str(cluster.kubeconfig)]
    try:
        run(
            *helm, "install", name, str(CHART), "-n", namespace, "--wait", "--timeout", "180s",
            "--set", "nodeSelector.type=kwok",
            timeout=240,
        )  # fmt: skip
        yield {"name": name, "namespace": namespace, "fullname": f"{name}-sealtune"}
    finally:
        subprocess.run(
            [*helm, "uninstall", name, "-n", namespace, "--wait"],
            check=False,
            capture_output=True,
            timeout=120,
        )
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_installed_chart_runs_the_operator_with_exactly_its_permissions(
    cluster: LocalCluster, kubectl: Kubectl, release: dict[str, str], team_namespace: str, tmp_path: Path
) -> None:
    ns, fullname = release["namespace"], release["fullname"]
    # helm --wait counts the ReplicaSet's ready pods; the Deployment's status follows a moment later.
    wait_for(lambda: get(kubectl, "deployment", fullname, "-n", ns)["status"].get("readyReplicas") == 2, 30)
    for kind, name in (
        ("serviceaccount", fullname),
        ("service", f"{fullname}-metrics"),
        ("service", f"{fullname}-webhook"),
        ("networkpolicy", fullname),
        ("role", fullname),
        ("rolebinding", fullname),
        ("configmap", f"{fullname}-dashboard"),
        ("poddisruptionbudget", fullname),
    ):
        get(kubectl, kind, name, "-n", ns)
    for kind in ("clusterrole", "clusterrolebinding", "clusterkopfpeering"):
        get(kubectl, kind, fullname)

    config = token_kubeconfig(cluster, ns, fullname, tmp_path / "operator.kubeconfig")
    metrics_port = free_port()
    operator = OperatorProcess(
        cluster,
        tmp_path / "operator.log",
        kubeconfig=config,
        operator_namespace=ns,
        peering_name=fullname,
        webhook_configuration=fullname,
        webhook_port=str(free_port()),
        operator_metrics_port=str(metrics_port),
    )
    # Waits until the operator registered its webhook in the chart's configuration, patching it
    # by name: the only write on webhook configurations the chart grants.
    operator.start()
    try:
        (webhook,) = get(kubectl, "validatingwebhookconfiguration", fullname)["webhooks"]
        assert webhook["clientConfig"]["url"].endswith("/policy") and webhook["clientConfig"]["caBundle"]
        team = team_namespace
        apply(
            kubectl,
            *domain_with_claims(f"{team}-d", team),
            finetune_job("charted", team, f"{team}-d", podMetadata=kwok_runtime(60)),
        )

        def running() -> dict[str, Any] | None:
            status = get(kubectl, "ftj", "charted", "-n", team).get("status") or {}
            conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
            return status if conditions.get("Running") == "True" else None

        wait_for(running, timeout=120)
        work = workload_of(kubectl, team, "charted")
        for kind, name in (
            ("job", work.batch_job),
            ("serviceaccount", work.service_account),
            ("networkpolicy", work.network_policy),
            ("configmap", work.config_map),
            ("service", work.service),
        ):
            get(kubectl, kind, name, "-n", work.namespace)

        # The same token, outside the chart's grants: refused by the API server.
        as_operator = ["--kubeconfig", str(config)]
        for refused in (
            ("get", "secrets", "-n", "kube-system"),
            ("get", "secret", "sealtune-webhook-tls", "-n", team),
            ("delete", "node", "kwok-cpu-eu-west-1-0", "--dry-run=server"),
            ("delete", "pod", "worker", "-n", work.namespace, "--dry-run=server"),
            # Nothing in a workload namespace beyond the job's own objects: no binding that would
            # let a tenant in, no pod it could make to read the data.
            (
                "create",
                "rolebinding",
                "in",
                "--clusterrole=edit",
                "--user=x",
                "-n",
                work.namespace,
                "--dry-run=server",
            ),
            ("create", "secret", "generic", "s", "-n", work.namespace, "--dry-run=server"),
            # Another webhook configuration: pointing it elsewhere would switch its checks off.
            (
                "patch",
                "validatingwebhookconfiguration",
                "validate.sealtune.dev",
                "--type=merge",
                "--patch",
                '{"metadata": {"labels": {"x": "y"}}}',
                "--dry-run=server",
            ),
            (
                "create",
                "clusterrolebinding",
                "escalate",
                "--clusterrole=cluster-admin",
                "--user=x",
                "--dry-run=server",
            ),
        ):
            result = kubectl(*as_operator, *refused, check=False)
            assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (refused, result.stderr)

        # The real scrape of the running operator passes promtool, and shows the job.
        scrape = (
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        )
        lint = subprocess.run(
            [tool("promtool"), "check", "metrics"], input=scrape, capture_output=True, text=True, check=False
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        assert re.search(r'^sealtune_finetunejobs\{phase="Running"\} [1-9]', scrape, re.MULTILINE), scrape
    finally:
        operator.stop()
    log = operator.log_path.read_text(errors="replace")
    assert not rbac_refusals(log), operator.log_tail(80)


def test_tenant_roles_aggregate_and_grant_no_status_and_no_wildcard() -> None:
    """People's roles: viewer and tenant aggregate into the built-in roles; approver and domain
    admin do not; no rule grants a status subresource or a `*`; and a value turns them off."""
    roles = {
        d["metadata"]["name"].removeprefix("t-sealtune-"): d
        for d in render()
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] != "t-sealtune"
    }
    assert set(roles) == {"viewer", "tenant", "approver", "releaser", "domain-admin"}
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    aggregated = {
        name: {key.removeprefix(aggregate) for key, value in role["metadata"]["labels"].items()
               if key.startswith(aggregate) and value == "true"}
        for name, role in roles.items()
    }  # fmt: skip
    assert aggregated == {
        "viewer": {"view", "edit", "admin"},
        "tenant": {"edit", "admin"},
        "approver": set(),
        "releaser": set(),
        "domain-admin": set(),
    }
    for name, role in roles.items():
        for rule in role["rules"]:
            assert rule["apiGroups"] == ["sealtune.dev"], (name, rule)
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], (name, rule)
            assert not any(r.endswith("/status") for r in rule["resources"]), (name, rule)

    def grants(name: str) -> set[tuple[str, str]]:
        return {(r, v) for rule in roles[name]["rules"] for r in rule["resources"] for v in rule["verbs"]}

    reads = {(r, v) for r in ("finetunejobs", "modelartifacts") for v in ("get", "list", "watch")}
    assert grants("viewer") == reads
    assert grants("tenant") == {
        ("finetunejobs", v) for v in ("create", "update", "patch", "delete", "deletecollection")
    }
    # Patch, for the promotion: admission keeps spec and status out of it (test_trusted_results.py).
    assert grants("approver") == {
        *(("modelartifacts", v) for v in ("get", "list", "watch", "patch")),
        ("modelartifacts/promotion", "approve"),
        ("modelartifacts/promotion", "revoke"),
    }
    assert grants("releaser") == {
        *(("modelartifacts", v) for v in ("get", "list", "watch", "patch")),
        ("modelartifacts/promotion", "release"),
    }
    assert {r for r, _ in grants("domain-admin")} == {"datadomains"}
    assert not any(v in ("create", "update", "patch", "delete") for r, v in grants("viewer"))
    assert not any(v in ("create", "update", "delete") for r, v in grants("approver"))

    lines = [line.strip() for line in (CHART / "templates" / "tenant-roles.yaml").read_text().splitlines()]
    for number, line in enumerate(lines):
        if line.startswith("- apiGroups:"):
            assert lines[number - 1].startswith("#"), f"the rule at line {number + 1} says not why"

    off = render("--set", "tenantRoles.enabled=false")
    assert not any(d["kind"] == "ClusterRole" and d["metadata"]["name"] != "t-sealtune" for d in off)
