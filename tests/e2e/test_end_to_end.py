"""sealtune's main path on the real nodes, as hack/demo runs it: an admin seals the shipped
knowledge base under a data key from Vault transit and makes a tiny base model; a restricted
DataDomain and a FineTuneJob go in; the operator (Vault-configured, with its ServiceAccount's
token) gets the trainer image onto the confidential real node, the init container delivers the
secrets into memory, the trainer trains, and the operator signs and publishes a ModelArtifact
that `sealtune verify` and the OpenSSF `model_signing verify` accept, and nothing else does.
Then two workers on the two real nodes train with DeepSpeed ZeRO-2 over gloo.

Needs the fixtures of tests/conftest.py, the real nodes (the `real_nodes` fixture) and OpenBao.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import yaml

from sealtune import signing
from sealtune.api.v1alpha1.modelartifact import FileDigest
from sealtune.names import (
    COMPLETION_INDEX_ANNOTATION,
    LABEL_JOB,
    LABEL_JOB_NAMESPACE,
    LABEL_JOB_UID,
    workload_namespace,
)
from tests.conftest import Kubectl
from tests.support import vaultdata, volumes
from tests.support.artifacts import flip_byte, model_signing_verify
from tests.support.cluster import REPO_ROOT, LocalCluster
from tests.support.identities import user_kubeconfig
from tests.support.kube import apply, get, pods_of, wait_condition, wait_for, workload_of
from tests.support.objects import data_domain, finetune_job, workload_namespace_object
from tests.support.operator import OperatorProcess, chart_rbac, rbac_refusals, token_kubeconfig
from tests.support.scan import find_secrets
from tests.support.tools import CHART, SEALTUNE, free_port, render, sealtune, tool

pytestmark = pytest.mark.e2e

KNOWLEDGE_BASE = REPO_ROOT / "hack" / "knowledge-base" / "data"
RUNTIME_CLASS = "kata-qemu-nvidia-gpu-tdx"
OPERATOR_NAMESPACE = "sealtune-system"
# Where pods on the real nodes reach OpenBao (it listens on this host's cluster address too).
POD_VAULT_ADDRESS = "http://10.200.0.1:8200"
REAL_NODE = {"key": "sealtune.dev/real-node", "operator": "In", "values": ["true"]}
NODE_TAINTS = [
    {"key": "sealtune.dev/confidential", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
]
TRACKER = "tracker"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
RELEASER, RELEASER_ROLE = "rita@e2e.example", "t-sealtune-releaser"
RELEASE = {
    "stages": ["Approved"],
    "destinations": [{"name": "review", "claimName": "outputs", "path": "releases"}],
}
"""A KV secret the confidential job declares (an experiment tracker's token, say)."""
# Tiny training, so each job takes a minute or two on two shared cores.
TRAINING = {"maxSteps": 40, "learningRate": "3e-3", "batchSize": 4, "maxSeqLength": 128, "precision": "fp32"}


@dataclass(frozen=True)
class Inputs:
    """What the admin prepared once for the module: the sealed data set and the base model."""

    data: Path
    data_digest: str
    wrapped_key: str
    transit_key: str
    model: Path
    model_digest: str


@dataclass(frozen=True)
class Env:
    operator: OperatorProcess
    namespaces: tuple[str, str]
    inputs: Inputs
    secrets: list[str]
    """Secret values met during the module; the scans look for every one."""


@pytest.fixture(scope="module")
def inputs(
    vault: hvac.Client, cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Inputs]:
    """The admin's part, with the admin CLI: the knowledge base sealed under a fresh data key
    from the domain's transit key, and a tiny random base model with its digest."""
    root = tmp_path_factory.mktemp("admin")
    key = f"e2e-kb-{uuid.uuid4().hex[:8]}"
    vault.secrets.transit.create_key(key, key_type="aes256-gcm96")
    env = {**os.environ, "VAULT_ADDR": cluster.vault_addr, "VAULT_TOKEN": cluster.vault_root_token}
    sealed = subprocess.run(
        [str(SEALTUNE), "dataset", "encrypt", "--transit-key", key, str(KNOWLEDGE_BASE), str(root / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    printed = yaml.safe_load(sealed.stdout)
    assert printed["wrappedDataKey"].startswith("vault:v1:")
    assert not list((root / "data").glob("*.jsonl")), "no plaintext may be written"
    model = subprocess.run(
        [sys.executable, "-m", "sealtune_trainer.tiny", str(root / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    yield Inputs(
        data=root / "data",
        data_digest=printed["manifestDigest"],
        wrapped_key=printed["wrappedDataKey"],
        transit_key=key,
        model=root / "model",
        # The digest is the last line: deepspeed, imported by transformers, prints too.
        model_digest=model.stdout.strip().splitlines()[-1],
    )
    vault.secrets.transit.update_key_configuration(key, deletion_allowed=True)
    vault.secrets.transit.delete_key(key)


@pytest.fixture(scope="module")
def env(
    cluster: LocalCluster,
    kubectl: Kubectl,
    vault: hvac.Client,
    crds_installed: None,
    real_nodes: dict[str, Any],
    inputs: Inputs,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Env]:
    """Three team namespaces (Pod Security "restricted") and the operator watching only them, as
    the chart deploys it: its ServiceAccount's token holds exactly the chart's RBAC, and it logs
    in to Vault with an audience-bound token of the same account, under the operator policy."""
    suffix = uuid.uuid4().hex[:6]
    namespaces = (f"e2e-cc-{suffix}", f"e2e-zero2-{suffix}", f"e2e-queue-{suffix}")
    for ns in namespaces:
        kubectl("create", "namespace", ns)
        kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    tmp = tmp_path_factory.mktemp("e2e-operator")
    rbac = json.dumps({"apiVersion": "v1", "kind": "List", "items": chart_rbac()})
    kubectl("apply", "-f", "-", input=rbac)
    identity = token_kubeconfig(cluster, OPERATOR_NAMESPACE, "sealtune-operator", tmp / "kubeconfig")
    jwt = kubectl(
        "create", "token", "sealtune-operator", "-n", OPERATOR_NAMESPACE, "--audience", "vault",
        "--duration", "2h",
    ).stdout.strip()  # fmt: skip
    (tmp / "jwt").write_text(jwt)
    operator = OperatorProcess(
        cluster,
        tmp / "operator.log",
        kubeconfig=identity,
        namespaces=",".join(namespaces),
        trainer_image=real_nodes["images"]["trainer"],
        vault_address=POD_VAULT_ADDRESS,
        vault_operator_address=cluster.vault_addr,
        vault_jwt_path=str(tmp / "jwt"),
        audit_path=str(tmp / "audit.jsonl"),
        operator_metrics_port=str(free_port()),
        # No admission webhook: the reconcile enforces the same policy, and this operator leaves
        # the cluster's webhook configuration to others.
        webhook_address="",
    )
    operator.start()
    yield Env(operator, namespaces, inputs, secrets=[])
    # Jobs go while the operator runs: their finalizer has it remove their Vault objects.
    for ns in namespaces:
        kubectl("delete", "finetunejobs", "--all", "-n", ns, "--timeout=120s", check=False)
    operator.stop()
    kubectl("delete", "-f", "-", "--ignore-not-found", input=rbac)
    for ns in namespaces:
        kubectl("delete", "namespace", ns, workload_namespace(f"{ns}-kb"), "--wait=false", check=False)
        vault.secrets.kv.v2.delete_metadata_and_all_versions(f"{ns}/{TRACKER}")


@pytest.fixture
def provide(
    kubeconfig: str, kubectl: Kubectl, env: Env
) -> Iterator[Callable[[str, list[str]], dict[str, Path]]]:
    """As the domain's admin: makes the domain's workload namespace and in it the claims data,
    models and outputs, on local volumes that the given nodes can mount, holding the admin's
    sealed data set and base model; removes them (claims, volumes, directories) afterwards."""
    made: list[str] = []

    def provide(domain: str, nodes: list[str]) -> dict[str, Path]:
        namespace = workload_namespace(domain)
        apply(kubectl, workload_namespace_object(domain))
        prefix = f"{namespace[:40]}-{uuid.uuid4().hex[:4]}"
        dirs = {}
        for claim in ("data", "models", "outputs"):
            made.append(f"{prefix}-{claim}")
            dirs[claim] = volumes.make_volume(kubeconfig, made[-1], namespace, claim, nodes)
        shutil.copytree(env.inputs.data, dirs["data"], dirs_exist_ok=True)
        shutil.copytree(env.inputs.model, dirs["models"], dirs_exist_ok=True)
        volumes.own(kubeconfig, f"{prefix}-data")
        volumes.own(kubeconfig, f"{prefix}-models")
        return dirs

    yield provide
    if made:
        volumes.remove(kubeconfig, *made)


def domain_for(env: Env, name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return data_domain(
        name,
        namespace,
        classification="restricted",
        source={"format": "chat", "manifestDigest": env.inputs.data_digest},
        encryption={
            "type": "vaultTransit",
            "vaultTransit": {"keyName": env.inputs.transit_key, "wrappedDataKey": env.inputs.wrapped_key},
        },
        network={"vaultAddress": POD_VAULT_ADDRESS},
        **spec,
    )


def secrets_mount(node: dict[str, Any], pod_uid: str) -> tuple[str, Path] | None:
    """(filesystem type, host path) of the pod's secrets emptyDir as the kubelet mounted it."""
    path = f"{node['kubeletRoot']}/pods/{pod_uid}/volumes/kubernetes.io~empty-dir/secrets"
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == path:
            return fields[2], Path(path)
    return None


def watch_secrets(
    kubectl: Kubectl, namespace: str, job: str, node: dict[str, Any], timeout: float = 300
) -> dict[str, Any]:
    """While the trainer runs: its secrets volume as mounted on the node, the files in it and
    their values (root on this host reads what the pod reads, so the scans can look for them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in pods_of(kubectl, namespace, job):
            if pod["status"].get("phase") != "Running":
                continue
            mount = secrets_mount(node, pod["metadata"]["uid"])
            if mount is None:
                continue
            files = {p.name: p for p in mount[1].iterdir()}
            return {
                "fstype": mount[0],
                "modes": {name: oct(p.stat().st_mode & 0o777) for name, p in files.items()},
                "values": {name: p.read_text().strip() for name, p in files.items()},
            }
        time.sleep(0.3)
    raise AssertionError(f"no running trainer pod of {namespace}/{job} with a secrets volume")


def wait_succeeded(kubectl: Kubectl, namespace: str, job: str, timeout: float = 900) -> None:
    """Waits for the job to succeed; a failed job fails the test at once, with its workers' logs."""

    def finished() -> str | None:
        phase = (get(kubectl, "ftj", job, "-n", namespace).get("status") or {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    if wait_for(finished, timeout) == "Failed":
        logs = [
            kubectl("logs", "-n", pod["metadata"]["namespace"], pod["metadata"]["name"], "--all-containers",
                    "--tail=40", check=False).stdout
            for pod in pods_of(kubectl, namespace, job)
        ]  # fmt: skip
        status = get(kubectl, "ftj", job, "-n", namespace)["status"]
        pytest.fail(f"{namespace}/{job} failed: {status.get('conditions')}\n" + "\n---\n".join(logs))


def trainer_status(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["status"]["containerStatuses"] if c["name"] == "trainer")  # type: ignore[no-any-return]


def pod_log_files(real_nodes: dict[str, Any], namespace: str) -> list[Path]:
    """The kubelets' log files of every container of the namespace's pods."""
    return [
        path
        for node in real_nodes["nodes"]
        for path in (Path(node["kubeletRoot"]).parent / "pod-logs").glob(f"{namespace}_*/*/*.log")
    ]


FORGED_RESULT = json.dumps(
    {
        "ok": True,
        "gatesPassed": True,
        "dataDigest": "sha256:" + "f0" * 32,
        "manifestDigest": "sha256:" + "e0" * 32,
        "files": [{"path": "adapter_model.safetensors", "sha256": "e1" * 32, "size": 1}],
    },
    separators=(",", ":"),
)


def impostor_worker(kubectl: Kubectl, namespace: str, job: str, image: str) -> dict[str, Any]:
    """A pod of the tenant's own, in the team namespace, with every label and annotation of the
    job's lead worker, that finishes with a forged result in its termination message."""
    uid = get(kubectl, "ftj", job, "-n", namespace)["metadata"]["uid"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job}-impostor",
            "namespace": namespace,
            "labels": {LABEL_JOB: job, LABEL_JOB_NAMESPACE: namespace, LABEL_JOB_UID: uid},
            "annotations": {COMPLETION_INDEX_ANNOTATION: "0"},
        },
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"sealtune.dev/real-node": "true"},
            "tolerations": NODE_TAINTS,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "trainer",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [
                        "python",
                        "-c",
                        "import sys; open('/dev/termination-log', 'w').write(sys.argv[1])",
                    ],
                    "args": [FORGED_RESULT],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"memory": "128Mi"},
                    },
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def test_a_job_on_the_confidential_node_is_trained_signed_published_and_verified(
    env: Env,
    cluster: LocalCluster,
    kubectl: Kubectl,
    kubeconfig: str,
    vault: hvac.Client,
    real_nodes: dict[str, Any],
    provide: Callable[[str, list[str]], dict[str, Path]],
    tmp_path: Path,
) -> None:
    ns, job = env.namespaces[0], "kb-assistant"
    cc = real_nodes["confidential"]
    cc_node = next(n for n in real_nodes["nodes"] if n["name"] == cc)
    outputs = provide(f"{ns}-kb", [cc])["outputs"]
    token = f"tracker-{uuid.uuid4().hex}"
    env.secrets.append(token)
    vault.secrets.kv.v2.create_or_update_secret(f"{ns}/{TRACKER}", secret={"token": token})

    tracker = {"vaultPath": f"secret/data/{ns}/{TRACKER}", "key": "token", "fileName": "tracker-token"}
    placement = {
        "requireConfidentialCompute": True,
        "confidentialRuntimeClassName": RUNTIME_CLASS,
        "nodePools": [
            {
                "matchExpressions": [
                    {"key": "sealtune.dev/pool", "operator": "In", "values": ["confidential-gpu"]},
                    REAL_NODE,
                ]
            }
        ],
        "regions": ["eu-west-1"],
        "tolerations": NODE_TAINTS[:1],
    }
    apply(
        kubectl,
        domain_for(env, f"{ns}-kb", ns, placement=placement, autoApprove=True, release=RELEASE),
        finetune_job(
            job,
            ns,
            f"{ns}-kb",
            baseModel={"pvc": {"claimName": "models", "path": "."}, "digest": env.inputs.model_digest},
            training=TRAINING,
            resources={"workers": 1, "gpusPerWorker": 1, "cpu": "1500m", "memory": "3Gi"},
            evaluation={"maxEvalLoss": 10},
            secrets=[tracker],
            scheduling={"backoffLimit": 0, "activeDeadlineSeconds": 1200},
        ),
    )

    # A tenant's own pod, labelled as the job's lead worker, leaves a forged result.
    forger = impostor_worker(kubectl, ns, job, real_nodes["images"]["trainer"])
    tenant = ("--as", "alice@e2e.example", "--as-group", "system:authenticated")
    kubectl("create", "rolebinding", "dev", "--clusterrole=edit", "--user=alice@e2e.example", "-n", ns)
    kubectl(*tenant, "create", "-f", "-", input=json.dumps(forger))

    # While it runs: the secrets are files in a memory volume, as the kubelet mounted it.
    seen = watch_secrets(kubectl, ns, job, cc_node)
    assert seen["fstype"] == "tmpfs", seen["fstype"]
    assert set(seen["values"]) == {"tracker-token", "data.key", "job.key"}
    assert set(seen["modes"].values()) == {"0o400"}
    assert seen["values"]["tracker-token"] == token
    env.secrets.extend(seen["values"].values())

    wait_succeeded(kubectl, ns, job)
    published = wait_condition(kubectl, ns, job, "Published", timeout=120)
    assert "signed with" in published["message"], published

    # The trainer pod: the trainer image, on the confidential real node, under its RuntimeClass
    # (the impostor, in the team's namespace, carries the same labels).
    work = workload_of(kubectl, ns, job)
    (pod,) = [p for p in pods_of(kubectl, ns, job) if p["metadata"]["namespace"] == work.namespace]
    assert pod["spec"]["nodeName"] == cc
    assert pod["spec"]["runtimeClassName"] == RUNTIME_CLASS
    trainer_image = real_nodes["images"]["trainer"]
    assert {c["image"] for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]} == {trainer_image}
    status = trainer_status(pod)
    assert status["image"] == trainer_image and status["state"]["terminated"]["exitCode"] == 0

    # It really trained: the loss fell over the run, and the adapter changed. Its output is in a
    # directory of its own on the domain's output claim.
    files = outputs / work.output_dir
    metrics = json.loads((files / "metrics.json").read_text())
    losses = metrics["lossPerStep"]
    assert len(losses) == TRAINING["maxSteps"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    assert metrics["result"]["weightsChanged"] and metrics["training"]["worldSize"] == 1
    assert metrics["data"]["manifestDigest"] == env.inputs.data_digest

    # The ModelArtifact: published, auto-approved (every gate passed, the domain allows it),
    # from the real result: the forged one, whose pod did finish with it, counted for nothing.
    forged = get(kubectl, "pod", forger["metadata"]["name"], "-n", ns)
    assert trainer_status(forged)["state"]["terminated"]["message"] == FORGED_RESULT
    artifact = get(kubectl, "modelartifact", job, "-n", ns)
    assert artifact["spec"]["digests"]["manifest"] != json.loads(FORGED_RESULT)["manifestDigest"]
    assert artifact["spec"]["digests"]["dataSet"] == env.inputs.data_digest
    assert artifact["spec"]["digests"]["baseModel"] == env.inputs.model_digest
    assert artifact["promotion"]["stage"] == "Approved", artifact["promotion"]
    code, lineage = sealtune("lineage", job, "-n", ns, kubeconfig=kubeconfig)
    assert code == 0, lineage
    assert lineage["nodes"] == [cc] and lineage["runtimeClassName"] == RUNTIME_CLASS
    assert [i["uri"] for i in lineage["images"]] == [f"oci://{trainer_image}"]

    # sealtune verify: signature, provenance and every file, with the operator's published key.
    code, verdict = sealtune("verify", job, "-n", ns, "--files", files, kubeconfig=kubeconfig)
    assert code == 0 and verdict["verified"], verdict
    public_key = tmp_path / "sealtune.pub"
    public_key.write_text(
        get(kubectl, "configmap", signing.PUBLIC_KEY_CONFIGMAP, "-n", OPERATOR_NAMESPACE)["data"][
            "public.pem"
        ]
    )
    # A releaser (the chart's releaser role) asks for the files: the domain releases Approved
    # artifacts to its review claim, and a release pod on the confidential node copies them there.
    apply(
        kubectl,
        *(
            r
            for r in render("--show-only", "templates/tenant-roles.yaml")
            if r["metadata"]["name"] == RELEASER_ROLE
        ),
    )
    kubectl(
        "create", "rolebinding", "releaser", f"--clusterrole={RELEASER_ROLE}", f"--user={RELEASER}", "-n", ns
    )
    releaser = user_kubeconfig(cluster, RELEASER, tmp_path / "people")
    code, done = sealtune(
        "export", job, "-n", ns, "--to", "review", "--reason", "e2e", "--timeout", "300", kubeconfig=releaser
    )
    assert (
        code == 0
        and done["phase"] == "Released"
        and done["files"] == len(artifact["spec"]["digests"]["files"])
    ), done
    exported = outputs / done["path"]
    audit = [json.loads(line) for line in env.operator.audit_path.read_text().splitlines()]
    uid = artifact["metadata"]["uid"]
    released = [e["details"] for e in audit if e["event"] == "Release" and e["subject"]["uid"] == uid]
    assert [(d["decision"], d["requester"]) for d in released] == [
        ("Allowed", RELEASER),
        ("Released", RELEASER),
    ]
    bundle = exported / signing.SIGNATURE_FILE
    accepted = model_signing_verify(exported, bundle, public_key)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    # One flipped byte in the adapter: both verifiers refuse.
    adapter = "adapter_model.safetensors"
    flip_byte(exported / adapter, offset=100)
    assert model_signing_verify(exported, bundle, public_key).returncode != 0
    tampered = tmp_path / "tampered"
    shutil.copytree(files, tampered)
    flip_byte(tampered / adapter, offset=100)
    code, verdict = sealtune("verify", job, "-n", ns, "--files", tampered, kubeconfig=kubeconfig)
    assert code == 1 and not verdict["verified"], verdict
    assert any(adapter in p for p in verdict["files"]["problems"]), verdict

    # Another key: the real artifact does not verify with it, and an artifact signed by it does
    # not verify with sealtune's.
    other = signing.PemSigner(signing.new_private_key_pem())
    other_key = tmp_path / "other.pub"
    other_key.write_bytes(other.public_key_pem)
    code, verdict = sealtune("verify", job, "-n", ns, "--public-key", other_key, kubeconfig=kubeconfig)
    assert code == 1 and verdict["signature"]["problems"], verdict
    forged = {k: v for k, v in artifact.items() if k != "status"}
    digests = [FileDigest.model_validate(f) for f in artifact["spec"]["digests"]["files"]]
    forged["spec"]["signature"] = signing.sign_files(digests, other, name=job).to_json()
    (tmp_path / "forged.yaml").write_text(yaml.safe_dump(forged))
    code, verdict = sealtune("verify", tmp_path / "forged.yaml", "--files", files, kubeconfig=kubeconfig)
    assert code == 1 and verdict["signature"]["problems"], verdict

    # No secret value in any API object, raw etcd, the operator's log and audit log, any
    # container's log, or any file the trainer wrote outside its memory volume.
    pods_logs = pod_log_files(real_nodes, work.namespace)
    assert len(pods_logs) >= 2, pods_logs  # the init container's and the trainer's
    written = [p for p in outputs.rglob("*") if p.is_file()]
    logs = [env.operator.log_path, env.operator.audit_path, *pods_logs, *written]
    assert find_secrets(cluster, env.secrets, logs) == []


def test_two_workers_on_two_nodes_train_with_zero2_through_the_headless_service(
    env: Env,
    kubectl: Kubectl,
    real_nodes: dict[str, Any],
    provide: Callable[[str, list[str]], dict[str, Path]],
    tmp_path: Path,
) -> None:
    ns, job = env.namespaces[1], "kb-zero2"
    nodes = real_nodes["names"]
    assert len(nodes) >= 2, "the e2e tier starts two real nodes"
    outputs = provide(f"{ns}-kb", nodes)["outputs"]
    placement = {"nodePools": [{"matchExpressions": [REAL_NODE]}], "tolerations": NODE_TAINTS}
    apply(
        kubectl,
        domain_for(env, f"{ns}-kb", ns, placement=placement),
        finetune_job(
            job,
            ns,
            f"{ns}-kb",
            baseModel={"pvc": {"claimName": "models", "path": "."}, "digest": env.inputs.model_digest},
            training={**TRAINING, "maxSteps": 8, "batchSize": 2},
            deepspeed={"zeroStage": 2},
            # Eight steps never get there: the artifact fails this gate.
            evaluation={"maxEvalLoss": 0.01},
            output={"artifactName": "kb-zero2-v1"},
            # Each worker asks for more than half a node's two CPUs: they cannot share a node.
            resources={"workers": 2, "gpusPerWorker": 0, "cpu": "1200m", "memory": "3Gi"},
            scheduling={"backoffLimit": 0, "activeDeadlineSeconds": 1200},
        ),
    )
    wait_succeeded(kubectl, ns, job)

    pods = sorted(pods_of(kubectl, ns, job), key=lambda p: int(p["metadata"]["labels"][
        "batch.kubernetes.io/job-completion-index"]))  # fmt: skip
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} == set(nodes[:2]), "one worker per node"
    work = workload_of(kubectl, ns, job)
    for index, pod in enumerate(pods):
        assert trainer_status(pod)["state"]["terminated"]["exitCode"] == 0
        env_vars = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        # Rendezvous at worker 0's stable name under the job's headless Service.
        service = f"{work.service}.{work.namespace}.svc.cluster.local"
        assert env_vars["MASTER_ADDR"] == f"{work.worker_hostname(0)}.{service}"
        assert pod["spec"]["subdomain"] == work.service
        assert pod["spec"]["hostname"] == work.worker_hostname(index)
    assert get(kubectl, "service", work.service, "-n", work.namespace)["spec"]["clusterIP"] == "None"
    # Both ranks took part: one world of two, and rank 1 logged its own steps.
    metrics = json.loads((outputs / work.output_dir / "metrics.json").read_text())
    assert metrics["training"]["worldSize"] == 2
    assert metrics["training"]["deepspeedZeroStage"] == 2
    assert len(metrics["lossPerStep"]) == 8
    second = kubectl("logs", "-n", work.namespace, pods[1]["metadata"]["name"], "-c", "trainer").stdout
    assert "rank=1 " in second, second[-2000:]
    # Published under the name the job asked for, as a Candidate that failed its gate, judged by
    # the operator; the alert fires on the operator's real series.
    published = wait_condition(kubectl, ns, job, "Published", reason="GatesFailed", timeout=120)
    assert "EvalLoss" in published["message"], published
    assert get(kubectl, "ftj", job, "-n", ns)["status"]["artifactRef"]["name"] == "kb-zero2-v1"
    artifact = get(kubectl, "modelartifact", "kb-zero2-v1", "-n", ns)
    assert artifact["spec"]["source"]["job"]["name"] == job
    assert artifact["promotion"]["stage"] == "Candidate" and not artifact["spec"]["evaluation"]["passed"]
    port = env.operator.settings["operator_metrics_port"]
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert_alert_fires(scrape, "SealtuneArtifactGatesFailed", {"namespace": ns, "name": job}, tmp_path)


def test_a_queued_job_preempted_by_higher_priority_work_resumes_from_its_sealed_checkpoint(
    env: Env,
    kubectl: Kubectl,
    real_nodes: dict[str, Any],
    provide: Callable[[str, list[str]], dict[str, Path]],
) -> None:
    """The real Kueue (hack/lib/kueue.sh) holds the team's one GPU of the confidential node. A
    low-priority job trains and checkpoints; a high-priority one arrives and Kueue evicts the
    first, which waits, is admitted again once the GPU is free, and resumes from its sealed
    checkpoint to the same final step."""
    ns = env.namespaces[2]
    domain, cluster_queue, cc = f"{ns}-kb", f"{ns}-gpu", real_nodes["confidential"]
    outputs = provide(domain, [cc])["outputs"]
    placement = {
        "requireConfidentialCompute": True,
        "confidentialRuntimeClassName": RUNTIME_CLASS,
        "nodePools": [{"matchExpressions": [
            {"key": "sealtune.dev/pool", "operator": "In", "values": ["confidential-gpu"]}, REAL_NODE]}],
        "tolerations": NODE_TAINTS[:1],
        "requireQueue": True,
        "queues": [{"name": "team", "namespaces": [ns]}],
    }  # fmt: skip
    wns = workload_namespace(domain)
    queue = [
        *({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
           "metadata": {"name": f"{ns}-{name}"}, "value": value}
          for name, value in (("low", 100), ("high", 1000))),
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": "confidential-gpu"},
         "spec": {"nodeLabels": {"sealtune.dev/pool": "confidential-gpu"}}},
        {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": cluster_queue},
         "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": wns}},
                  "preemption": {"withinClusterQueue": "LowerPriority"},
                  "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"], "flavors": [
                      {"name": "confidential-gpu", "resources": [
                          {"name": "cpu", "nominalQuota": "4"}, {"name": "memory", "nominalQuota": "16Gi"},
                          {"name": "nvidia.com/gpu", "nominalQuota": 1}]}]}]}},
        {"apiVersion": KUEUE_API, "kind": "LocalQueue", "metadata": {"name": "team", "namespace": wns},
         "spec": {"clusterQueue": cluster_queue}},
    ]  # fmt: skip

    def job(name: str, priority: str, steps: int) -> dict[str, Any]:
        return finetune_job(
            name, ns, domain,
            baseModel={"pvc": {"claimName": "models", "path": "."}, "digest": env.inputs.model_digest},
            training={**TRAINING, "maxSteps": steps, "checkpointEverySteps": 25},
            resources={"workers": 1, "gpusPerWorker": 1, "cpu": "900m", "memory": "3Gi"},
            evaluation={"maxEvalLoss": 10},
            scheduling={"queueName": "team", "priorityClassName": f"{ns}-{priority}",
                        "activeDeadlineSeconds": 1800},
        )  # fmt: skip

    apply(kubectl, domain_for(env, domain, ns, placement=placement), *queue)
    try:
        apply(kubectl, job("kb-low", "low", 400))
        wait_condition(kubectl, ns, "kb-low", "QueueAdmitted", reason="Admitted", timeout=120)

        def trained() -> int | None:
            step = ((get(kubectl, "ftj", "kb-low", "-n", ns).get("status") or {}).get("progress") or {}).get(
                "step"
            )
            return step if step and step >= 60 else None

        wait_for(trained, 600)
        apply(kubectl, job("kb-high", "high", 20))
        evicted = wait_condition(
            kubectl, ns, "kb-low", "QueueAdmitted", "False", reason="Evicted", timeout=120
        )
        assert "Preempted" in evicted["message"], evicted
        held = wait_condition(kubectl, ns, "kb-low", "Suspended", reason="EvictedByKueue", timeout=60)
        assert "checkpoint" in held["message"]
        # Evicted, it may not run: its Vault role is gone until Kueue admits it again.
        wait_condition(kubectl, ns, "kb-low", "SecretsReady", "False", reason="WaitingToRun", timeout=60)
        wait_succeeded(kubectl, ns, "kb-high")
        wait_succeeded(kubectl, ns, "kb-low")
    finally:
        kubectl("delete", "clusterqueue", cluster_queue, "--wait=false", check=False)
        kubectl("delete", "priorityclass", f"{ns}-low", f"{ns}-high", "--wait=false", check=False)
    work = workload_of(kubectl, ns, "kb-low")
    metrics = json.loads((outputs / work.output_dir / "metrics.json").read_text())
    assert len(metrics["lossPerStep"]) == 400, "the same final step"
    assert metrics["result"]["resumedFromStep"] >= 50, metrics["result"]
    assert get(kubectl, "ftj", "kb-low", "-n", ns)["status"]["progress"]["step"] == 400


def assert_alert_fires(scrape: str, alert: str, labels: dict[str, str], directory: Path) -> None:
    """promtool evaluates the chart's rule for ``alert`` on the series of a real scrape (those
    its expression reads), held for ten minutes, and finds it firing for ``labels``."""
    alerts = CHART / "files" / "alerts.yaml"
    rule = next(
        r for g in yaml.safe_load(alerts.read_text())["groups"] for r in g["rules"] if r.get("alert") == alert
    )
    wanted = set(re.findall(r"\b(sealtune_[a-z_]+)\b", rule["expr"]))
    series = [
        {"series": line.rsplit(" ", 1)[0], "values": f"{line.rsplit(' ', 1)[1]}x10"}
        for line in scrape.splitlines()
        if line.split("{")[0].split(" ")[0] in wanted
    ]
    assert series, f"no {wanted} in the scrape"
    selector = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    test = {
        "rule_files": [str(alerts)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": rule["expr"],
                        "eval_time": "5m",
                        "exp_samples": [{"labels": selector, "value": 1}],
                    }
                ],
            }
        ],
    }
    path = directory / "alert_test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(
        [tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_operator_that_ran_them_is_refused_outside_its_grants(
    env: Env, cluster: LocalCluster, kubectl: Kubectl, vault: hvac.Client
) -> None:
    """The identity the jobs above ran under, the chart's RBAC and the Vault operator policy:
    what an attacker who took the operator's tokens would try, refused by the API server and by
    OpenBao."""
    ns = env.namespaces[0]
    workspace = workload_namespace(f"{ns}-kb")
    as_operator = ["--kubeconfig", str(env.operator.kubeconfig)]
    tenant_in = ("create", "rolebinding", "in", "--clusterrole=edit", "--user=x", "-n", workspace)
    for action in (
        ("get", "secrets", "-n", "kube-system"),
        # Letting a tenant into a workload namespace, or reading its data claim with a pod.
        (*tenant_in, "--dry-run=server"),
        ("run", "reader", "--image=trainer", "-n", workspace, "--dry-run=server"),
    ):
        result = kubectl(*as_operator, *action, check=False)
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (action, result.stderr)

    jwt = Path(env.operator.settings["vault_jwt_path"]).read_text()
    operator = vaultdata.login(cluster, "sealtune-operator", jwt)
    vault.secrets.kv.v2.create_or_update_secret(f"{ns}/{TRACKER}", secret={"token": "not-for-it"})
    wrapped = env.inputs.wrapped_key
    for attempt in (
        # A team's secret value (it may read metadata only, to check that one exists).
        lambda: operator.secrets.kv.v2.read_secret_version(f"{ns}/{TRACKER}", raise_on_deleted_version=True),
        # The domain's data key, unwrapped.
        lambda: operator.secrets.transit.decrypt_data(env.inputs.transit_key, wrapped),
        # A job role carrying the operator's own policy.
        lambda: operator.adapter.post(
            "/v1/auth/kubernetes/role/sealtune-job-escalate", json={"token_policies": "sealtune-operator"}
        ),
    ):
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
    log = env.operator.log_path.read_text(errors="replace")
    assert not rbac_refusals(log), "the demo path needed something the chart does not grant"
