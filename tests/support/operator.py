"""The operator as tests run it: the real `sealtune-operator` in a subprocess against the
local cluster, with its log in a file the tests can read (and scan for secrets)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.cluster import LocalCluster
from tests.support.tools import render

WEBHOOK_PORT = 9443


KUEUE_USER = "system:kueue"


class OperatorProcess:
    def __init__(
        self, cluster: LocalCluster, log_path: Path, kubeconfig: Path | None = None, **settings: str
    ) -> None:
        self.cluster = cluster
        self.log_path = log_path
        self.kubeconfig = kubeconfig or cluster.kubeconfig
        """Whose credentials it runs with: the cluster admin's unless a test gives others."""
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def audit_path(self) -> Path:
        """Where it writes its audit log."""
        return self.log_path.with_name("audit.jsonl")

    def env(self) -> dict[str, str]:
        # Credentials come from --kubeconfig alone, as a user would run it.
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env.setdefault(
            "SEALTUNE_WEBHOOK_ADDRESS", self.cluster.kubeconfig_server.split("//")[1].split(":")[0]
        )
        env.setdefault("SEALTUNE_WEBHOOK_PORT", str(WEBHOOK_PORT))
        env.setdefault("SEALTUNE_AUDIT_PATH", str(self.audit_path))
        # The local cluster's Kueue (hack/lib/kueue.sh) unsuspends the Jobs it admits.
        env.setdefault("SEALTUNE_JOB_WRITERS", KUEUE_USER)
        env.update({f"SEALTUNE_{k.upper()}": v for k, v in self.settings.items()})
        return env

    def install_webhook_configuration(self) -> None:
        """What installing the chart does for the webhook, as the admin: its configuration, which
        the operator only patches. A test that deleted it gets it back here."""
        name = self.env().get("SEALTUNE_WEBHOOK_CONFIGURATION", "validate.sealtune.dev")
        if self.cluster.kubectl("get", "validatingwebhookconfiguration", name, check=False).returncode:
            (config,) = render("--set", f"fullnameOverride={name}", "--show-only", "templates/webhook.yaml")
            self.cluster.kubectl("create", "-f", "-", input=json.dumps(config))

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        if self.env().get("SEALTUNE_WEBHOOK_ADDRESS"):
            self.install_webhook_configuration()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sealtune.handlers", "--kubeconfig", str(self.kubeconfig)],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1
        self.wait_until_serving(offset)

    def wait_until_serving(self, offset: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        # Without a webhook (SEALTUNE_WEBHOOK_ADDRESS empty), kopf's login is the last step of start.
        webhook = self.env().get("SEALTUNE_WEBHOOK_ADDRESS")
        marker = "Registered the admission webhook" if webhook else "Initial authentication has finished"
        while marker not in self.log_path.read_text(errors="replace")[offset:]:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"the operator exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start serving:\n{self.log_tail()}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no cleanup handler runs, as in a node crash."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def with_vault(cluster: LocalCluster, directory: Path, **settings: str) -> OperatorProcess:
    """An operator that logs in to OpenBao as the operator's ServiceAccount (no root token),
    with the audience-bound token a projected volume would hold, written to ``directory``."""
    account = ("sealtune-operator", "-n", "sealtune-system")
    token = cluster.kubectl("create", "token", *account, "--audience", "vault", "--duration", "2h")
    (directory / "jwt").write_text(token.stdout.strip())
    return OperatorProcess(
        cluster,
        directory / "operator.log",
        vault_address=cluster.vault_addr,
        vault_jwt_path=str(directory / "jwt"),
        **settings,
    )


def chart_rbac(account: str = "sealtune-operator") -> list[dict[str, Any]]:
    """The chart's RBAC (release sealtune-tests in sealtune-system, without the webhook; the
    demo's release is sealtune), bound to the ServiceAccount the cluster scripts make for the
    operator (and Vault's role names)."""
    return render(
        "--set", f"serviceAccount.name={account}", "--set", "webhook.enabled=false",
        "--show-only", "templates/rbac.yaml",
        release="sealtune-tests",
    )  # fmt: skip


def token_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig (mode 0600) that authenticates as a ServiceAccount, with a token an API
    TokenRequest issued, as a pod's would be."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        **admin,
        "users": [{"name": account, "user": {"token": token.strip()}}],
        "contexts": [
            {"name": account, "context": {"cluster": admin["clusters"][0]["name"], "user": account}}
        ],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def rbac_refusals(log: str) -> list[str]:
    """The lines of an operator's log where RBAC refused it something (``... is forbidden: User
    "..." cannot ...``, or kopf's "not enough permissions"). Admission's refusals are not among
    them: other tests' objects, left to the namespace controller, may draw those."""
    return [
        line
        for line in log.splitlines()
        if re.search(r'is forbidden: User "[^"]*" cannot ', line) or "not enough permissions" in line.lower()
    ]
