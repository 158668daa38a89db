"""Real nodes run sealtune's own images: kubelet + containerd + runc, CoreDNS, kube-proxy.

Needs the fixtures `kubeconfig`, `kubectl`, `namespace` (tests/conftest.py) and `real_nodes`
(a session fixture returning tests.e2e.realnodes.ensure_real_nodes(kubeconfig)). The last
test takes the nodes down, checks that nothing of theirs is left, and brings them back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import realnodes

pytestmark = pytest.mark.e2e

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

RESTRICTED_POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}
# Real nodes only (kwok's fake nodes run nothing), whichever of them the scheduler picks.
REAL_NODE_SELECTOR = {"sealtune.dev/real-node": "true"}
REAL_NODE_TOLERATIONS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sealtune.dev/confidential", "operator": "Exists", "effect": "NoSchedule"},
]


def apply(kubectl: Kubectl, namespace: str, *objects: dict[str, Any]) -> None:
    body = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(body))


def get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
    result: dict[str, Any] = json.loads(out)
    return result


def wait_pod(
    kubectl: Kubectl, namespace: str, name: str, phases: set[str], timeout: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pod = get(kubectl, namespace, "pod", name)
        phase = pod.get("status", {}).get("phase")
        if phase in phases:
            return pod
        if phase in {"Failed", "Succeeded"} or time.monotonic() > deadline:
            events = kubectl("get", "events", "-n", namespace, check=False).stdout
            raise AssertionError(f"pod {name} is {phase}, wanted {phases}:\n{pod.get('status')}\n{events}")
        time.sleep(0.25)


def record_timing(kubeconfig: str, what: str, seconds: float) -> None:
    """Keeps measured times beside the cluster's logs (hack/cluster down keeps logs)."""
    path = Path(kubeconfig).resolve().parent / "logs" / "e2e-timings.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"what": what, "seconds": round(seconds, 2), "at": time.time()}) + "\n")
    print(f"timing: {what}: {seconds:.2f} s")


@pytest.fixture
def restricted_namespace(kubectl: Kubectl, namespace: str) -> str:
    kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    )
    return namespace


# --- a restricted pod runs the trainer image ---------------------------------------------------

INIT_SCRIPT = """
import os
with open("/run/sealtune/secrets/credentials", "w") as f:
    f.write("from-the-init-container")
print("init: wrote credentials into the memory volume")
"""

MAIN_SCRIPT = """
import importlib.util, json, os, sys, time
import sealtune_trainer
mounts = [line.split() for line in open("/proc/mounts")]
secret_mount = next(m for m in mounts if m[1] == "/run/sealtune/secrets")
options = dict(o.partition("=")[::2] for o in secret_mount[3].split(","))
result = {
    "uid": os.getuid(),
    "secret_fstype": secret_mount[2],
    "secret_size": options.get("size"),
    "secret": open("/run/sealtune/secrets/credentials").read(),
    "config": json.load(open("/etc/sealtune/config.json")),
    "token_present": os.path.getsize("/var/run/secrets/tokens/vault/token") > 0,
    "trainer_package": os.path.dirname(sealtune_trainer.__file__),
    "has": {m: importlib.util.find_spec(m) is not None
            for m in ("torch", "transformers", "peft", "deepspeed", "opacus", "safetensors")},
    "root_writable": os.access("/", os.W_OK),
}
open("/dev/termination-log", "w").write(json.dumps(result))
print("trainer-e2e: checks done, waiting for release", flush=True)
deadline = time.time() + 300
while not os.path.exists("/tmp/release") and time.time() < deadline:
    time.sleep(0.2)
print("trainer-e2e: released", flush=True)
"""


def token_review(kubectl: Kubectl, token: str, audience: str) -> dict[str, Any]:
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": [audience]},
    }
    created = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review)).stdout
    status: dict[str, Any] = json.loads(created)["status"]
    return status


def test_restricted_trainer_pod_on_real_node(
    real_nodes: dict[str, Any], kubectl: Kubectl, restricted_namespace: str, kubeconfig: str
) -> None:
    ns = restricted_namespace
    trainer = real_nodes["images"]["trainer"]
    container_base = {
        "image": trainer,
        "imagePullPolicy": "Never",
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trainer"},
        "spec": {
            "serviceAccountName": "trainer",
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "nodeSelector": REAL_NODE_SELECTOR,
            "tolerations": REAL_NODE_TOLERATIONS,
            "securityContext": RESTRICTED_POD_SECURITY,
            "initContainers": [
                {
                    **container_base,
                    "name": "fetch-secrets",
                    "command": ["python3", "-c", INIT_SCRIPT],
                    "volumeMounts": [{"name": "secrets", "mountPath": "/run/sealtune/secrets"}],
                }
            ],
            "containers": [
                {
                    **container_base,
                    "name": "trainer",
                    "command": ["python3", "-c", MAIN_SCRIPT],
                    "terminationMessagePolicy": "File",
                    "volumeMounts": [
                        {"name": "secrets", "mountPath": "/run/sealtune/secrets", "readOnly": True},
                        {"name": "config", "mountPath": "/etc/sealtune", "readOnly": True},
                        {
                            "name": "vault-token",
                            "mountPath": "/var/run/secrets/tokens/vault",
                            "readOnly": True,
                        },
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "secrets", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                {"name": "config", "configMap": {"name": "trainer-config"}},
                {
                    "name": "vault-token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": "vault",
                                    "expirationSeconds": 600,
                                    "path": "token",
                                }
                            }
                        ]
                    },
                },
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        },
    }
    apply(
        kubectl,
        ns,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "trainer"}},
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "trainer-config"},
            "data": {"config.json": json.dumps({"method": "lora", "rank": 16})},
        },
    )
    start = time.monotonic()
    apply(kubectl, ns, pod)
    running = wait_pod(kubectl, ns, "trainer", {"Running"})
    elapsed = time.monotonic() - start
    record_timing(kubeconfig, "kubectl apply -> Running (restricted trainer pod, real node)", elapsed)
    assert running["spec"]["nodeName"] in real_nodes["names"]

    # The projected token: audience vault, accepted by a TokenReview for that audience only.
    token_path = "/var/run/secrets/tokens/vault/token"
    token = kubectl("exec", "-n", ns, "trainer", "-c", "trainer", "--", "cat", token_path).stdout
    status = token_review(kubectl, token.strip(), "vault")
    assert status["authenticated"] is True, status
    assert status["user"]["username"] == f"system:serviceaccount:{ns}:trainer"
    assert status["audiences"] == ["vault"]
    other = token_review(kubectl, token.strip(), "https://kubernetes.default.svc.cluster.local")
    assert not other.get("authenticated"), "a token for audience vault must not pass elsewhere"

    kubectl("exec", "-n", ns, "trainer", "-c", "trainer", "--", "python3", "-c", "open('/tmp/release', 'w')")
    done = wait_pod(kubectl, ns, "trainer", {"Succeeded"}, timeout=120)
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    result = json.loads(terminated["message"])
    assert result["secret_fstype"] == "tmpfs", result
    assert result["secret_size"] == "1024k", result  # the emptyDir's sizeLimit, 1Mi
    assert result["secret"] == "from-the-init-container"
    assert result["config"] == {"method": "lora", "rank": 16}
    assert result["token_present"] is True
    assert result["uid"] == 65532
    assert result["root_writable"] is False
    assert result["trainer_package"].endswith("site-packages/sealtune_trainer")
    assert all(result["has"].values()), result["has"]

    init_logs = kubectl("logs", "-n", ns, "trainer", "-c", "fetch-secrets").stdout
    assert "wrote credentials into the memory volume" in init_logs
    logs = kubectl("logs", "-n", ns, "trainer", "-c", "trainer").stdout
    assert "trainer-e2e: checks done" in logs and "trainer-e2e: released" in logs
    assert "from-the-init-container" not in logs


# --- an Indexed Job's pods meet through DNS; a ClusterIP Service by name --------------------------

WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, threading, time
    index = int(os.environ["JOB_COMPLETION_INDEX"])
    peer = 1 - index
    ns = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read() if os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace") else os.environ["NS"]
    heard = set()

    def serve():
        srv = socket.create_server(("0.0.0.0", 29500))
        while True:
            conn, addr = srv.accept()
            with conn:
                heard.add(conn.recv(16).decode())
                conn.sendall(str(index).encode())

    threading.Thread(target=serve, daemon=True).start()

    def call(host, port, deadline):
        last = None
        while time.time() < deadline:
            try:
                addr = socket.gethostbyname(host)
                with socket.create_connection((addr, port), timeout=3) as s:
                    s.sendall(str(index).encode())
                    return addr, s.recv(16).decode()
            except OSError as e:
                last = repr(e)
                time.sleep(0.5)
        raise SystemExit(f"{host}:{port}: {last}")

    deadline = time.time() + 240
    peer_name = f"rdzv-{peer}.workers.{ns}.svc.cluster.local"
    peer_addr, peer_said = call(peer_name, 29500, deadline)
    svc_addr, svc_said = call("rdzv-leader", 29400, deadline)
    while str(peer) not in heard and time.time() < deadline:
        time.sleep(0.2)
    result = {
        "index": index, "hostname": socket.gethostname(), "fqdn": socket.getfqdn(),
        "my_ip": socket.gethostbyname(socket.gethostname()),
        "peer_name": peer_name, "peer_addr": peer_addr, "peer_said": peer_said,
        "service_addr": svc_addr, "service_said": svc_said, "heard": sorted(heard),
        "resolv": open("/etc/resolv.conf").read(),
    }
    open("/dev/termination-log", "w").write(json.dumps(result))
    print(json.dumps(result), flush=True)
    # Stay up a moment so the peer's last calls through the Service still find us.
    time.sleep(3)
    """
)


NAMESPACE_FIELD = {"fieldPath": "metadata.namespace"}


def test_indexed_job_rendezvous_over_pod_dns_and_cluster_ip(
    real_nodes: dict[str, Any], kubectl: Kubectl, namespace: str
) -> None:
    ns = namespace
    labels = {"app": "rdzv"}
    spread: dict[str, Any] = {}
    if len(real_nodes["names"]) >= 2:
        spread = {
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
                    ]
                }
            }
        }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "rdzv"},
        "spec": {
            "completionMode": "Indexed",
            "completions": 2,
            "parallelism": 2,
            "backoffLimit": 0,
            "activeDeadlineSeconds": 400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "subdomain": "workers",
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "nodeSelector": REAL_NODE_SELECTOR,
                    "tolerations": REAL_NODE_TOLERATIONS,
                    "securityContext": RESTRICTED_POD_SECURITY,
                    **spread,
                    "containers": [
                        {
                            "name": "worker",
                            "image": real_nodes["images"]["trainer"],
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", WORKER_SCRIPT],
                            "env": [{"name": "NS", "valueFrom": {"fieldRef": NAMESPACE_FIELD}}],
                            "ports": [{"containerPort": 29500, "name": "rdzv"}],
                            "securityContext": RESTRICTED_CONTAINER_SECURITY,
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        }
                    ],
                },
            },
        },
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "workers"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": labels,
            "ports": [{"name": "rdzv", "port": 29500}],
        },
    }
    leader = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "rdzv-leader"},
        "spec": {
            "selector": {**labels, "batch.kubernetes.io/job-completion-index": "0"},
            "ports": [{"name": "rdzv", "port": 29400, "targetPort": 29500}],
        },
    }
    apply(kubectl, ns, headless, leader, job)
    waited = kubectl("wait", "-n", ns, "--for=condition=Complete", "job/rdzv", "--timeout=360s", check=False)
    pods = json.loads(kubectl("get", "pods", "-n", ns, "-l", "app=rdzv", "-o", "json").stdout)["items"]
    if waited.returncode != 0:
        logs = kubectl("logs", "-n", ns, "-l", "app=rdzv", "--tail=20", check=False).stdout
        pytest.fail(f"job rdzv did not complete: {waited.stderr}\n{logs}\n{[p['status'] for p in pods]}")
    assert len(pods) == 2
    results = {}
    for pod in pods:
        assert pod["spec"]["nodeName"] in real_nodes["names"]
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        result = json.loads(terminated["message"])
        result["node"] = pod["spec"]["nodeName"]
        result["pod_ip"] = pod["status"]["podIP"]
        results[result["index"]] = result
    leader_ip = get(kubectl, ns, "service", "rdzv-leader")["spec"]["clusterIP"]
    for index, result in results.items():
        peer = results[1 - index]
        # torchrun's shape: each worker finds the other by its stable pod DNS name.
        assert result["hostname"] == f"rdzv-{index}"
        assert result["peer_addr"] == peer["pod_ip"], result
        assert result["peer_said"] == str(1 - index)
        assert str(1 - index) in result["heard"]
        # The ClusterIP Service by name: CoreDNS answers, kube-proxy forwards to index 0.
        assert result["service_addr"] == leader_ip
        assert result["service_said"] == "0"
        assert f"nameserver {real_nodes['clusterDNS']}" in result["resolv"]
        assert f"search {ns}.svc.cluster.local" in result["resolv"]
    if len(real_nodes["names"]) >= 2:
        assert results[0]["node"] != results[1]["node"], "the two workers should sit on two nodes"


# --- the confidential RuntimeClass lands on the confidential real node only -------------------------

CC_SCRIPT = "import time; print('confidential pod up', flush=True); time.sleep(600)"


def cc_pod(name: str, real_nodes: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "runtimeClassName": real_nodes["runtimeHandler"],
            # Real nodes only: the kwok confidential pool matches the RuntimeClass as well.
            "nodeSelector": REAL_NODE_SELECTOR,
            # The RuntimeClass adds the confidential toleration; GPU nodes are tainted too.
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED_POD_SECURITY,
            "containers": [
                {
                    "name": "main",
                    "image": real_nodes["images"]["trainer"],
                    "imagePullPolicy": "Never",
                    "command": ["python3", "-c", CC_SCRIPT],
                    "securityContext": RESTRICTED_CONTAINER_SECURITY,
                    "resources": {"limits": {"nvidia.com/gpu": "1"}},
                }
            ],
        },
    }


@pytest.fixture
def uncordon(kubectl: Kubectl, real_nodes: dict[str, Any]) -> Iterator[None]:
    yield
    kubectl("uncordon", real_nodes["confidential"], check=False)


def test_confidential_runtime_class_lands_on_confidential_real_node(
    real_nodes: dict[str, Any], kubectl: Kubectl, namespace: str, uncordon: None
) -> None:
    ns = namespace
    handler = real_nodes["runtimeHandler"]
    rc = json.loads(kubectl("get", "runtimeclass", handler, "-o", "json").stdout)
    assert rc["handler"] == handler
    cc = real_nodes["confidential"]
    node = json.loads(kubectl("get", "node", cc, "-o", "json").stdout)
    assert node["metadata"]["labels"]["nvidia.com/cc.ready.state"] == "true"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] != "0"
    assert "simulated" in node["metadata"]["annotations"]["sealtune.dev/confidential-compute"]

    names = ["cc-a", "cc-b"]
    apply(kubectl, ns, *(cc_pod(n, real_nodes) for n in names))
    for n in names:
        pod = wait_pod(kubectl, ns, n, {"Running"})
        assert pod["spec"]["nodeName"] == cc, f"{n} landed on {pod['spec']['nodeName']}"
        # The RuntimeClass admission plugin copied its scheduling into the pod.
        assert pod["spec"]["nodeSelector"]["nvidia.com/cc.ready.state"] == "true"
    # The sandbox really ran under the confidential handler of that node's containerd.
    info = next(n for n in real_nodes["nodes"] if n["name"] == cc)
    sandboxes = subprocess.run(
        ["ctr", "--address", info["containerdSocket"], "-n", "k8s.io", "containers", "ls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert real_nodes["images"]["pause"] in sandboxes
    assert "confidential pod up" in kubectl("logs", "-n", ns, "cc-a").stdout

    kubectl("cordon", cc)
    apply(kubectl, ns, cc_pod("cc-pending", real_nodes))
    deadline = time.monotonic() + 60
    scheduled: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = get(kubectl, ns, "pod", "cc-pending")
        conds = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}
        scheduled = conds.get("PodScheduled", {})
        if scheduled.get("reason") == "Unschedulable":
            break
        time.sleep(0.5)
    assert scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable", scheduled
    assert "unschedulable" in scheduled["message"], scheduled["message"]
    time.sleep(3)
    pod = get(kubectl, ns, "pod", "cc-pending")
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    selector = "involvedObject.name=cc-pending"
    events = kubectl("get", "events", "-n", ns, "--field-selector", selector, "-o", "json").stdout
    assert any(e["reason"] == "FailedScheduling" for e in json.loads(events)["items"])


# --- down leaves nothing behind, even after a crash; then up again (warm) --------------------------

OUR_CHAINS = r"(KUBE-|CNI-|SEALTUNE-)"


def leftovers(info: dict[str, Any]) -> dict[str, list[str]]:
    roots = (info["nodesRoot"], info["nodesRun"])
    found: dict[str, list[str]] = {
        "processes": [],
        "mounts": [],
        "interfaces": [],
        "addresses": [],
        "iptables": [],
        "cgroups": [],
    }
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            exe = os.readlink(proc / "exe")
        except OSError:
            continue
        base = os.path.basename(exe)
        if (
            any(r + "/" in cmd for r in roots)
            or base in {"kubelet", "kube-proxy", "coredns"}
            or (base.startswith("containerd") and any(r in cmd for r in roots))
        ):
            found["processes"].append(f"{proc.name} {cmd[:160]}")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if any(target == r or target.startswith(r + "/") for r in roots) or "/kubelet/pods/" in target:
            found["mounts"].append(target)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    for line in links.splitlines():
        name = line.split(": ")[1].split("@")[0]
        if re.fullmatch(r"st-br\d+", name) or "master st-br" in line:
            found["interfaces"].append(name)
    addrs = subprocess.run(
        ["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    ).stdout
    for n in info["nodes"]:
        if f" {n['ip']}/32 " in addrs:
            found["addresses"].append(n["ip"])
    if " 10.200.0.10/32 " in addrs:
        found["addresses"].append("10.200.0.10")
    for ipt in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run(
                [ipt, "-w", "-t", table, "-S"], capture_output=True, text=True, check=True
            ).stdout
            found["iptables"] += [
                f"{ipt} {table}: {r}" for r in rules.splitlines() if re.search(OUR_CHAINS, r)
            ]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        if (hierarchy / "sealtune").exists():
            found["cgroups"].append(str(hierarchy / "sealtune"))
    return {k: v for k, v in found.items() if v}


def test_down_leaves_nothing_even_after_a_crash_then_up_again(
    real_nodes: dict[str, Any], kubectl: Kubectl, namespace: str, kubeconfig: str
) -> None:
    # Something running on every node, so there are sandboxes, mounts and veths to clean.
    pods = []
    for i, name in enumerate(real_nodes["names"]):
        pod = cc_pod(f"busy-{i}", real_nodes)
        del pod["spec"]["runtimeClassName"]
        pod["spec"]["nodeName"] = name
        pod["spec"]["tolerations"] = REAL_NODE_TOLERATIONS
        pod["spec"]["containers"][0]["resources"] = {}
        pod["spec"]["volumes"] = [{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "mem", "mountPath": "/mem"}]
        pods.append(pod)
    apply(kubectl, namespace, *pods)
    for pod in pods:
        wait_pod(kubectl, namespace, pod["metadata"]["name"], {"Running"})

    # A crash: kubelets and containerds die at once, shims and containers stay behind.
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(proc / "exe"))
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if exe in {"kubelet", "containerd"} and real_nodes["nodesRoot"] in cmd:
            os.kill(int(proc.name), 9)
    time.sleep(1)
    assert leftovers(real_nodes), "the crash should have left shims, mounts and bridges"

    down = realnodes.nodes_sh(kubeconfig, "down")
    assert down.returncode == 0, down.stderr
    assert leftovers(real_nodes) == {}

    # Down twice is fine; up again is a warm start (images are cached, nothing is built).
    assert realnodes.nodes_sh(kubeconfig, "down").returncode == 0
    seconds = realnodes.bring_up(kubeconfig, len(real_nodes["names"]))
    record_timing(kubeconfig, f"warm start of {len(real_nodes['names'])} real node(s)", seconds)
    for name in real_nodes["names"]:
        ready = kubectl("get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
        assert ready.stdout == "True"
