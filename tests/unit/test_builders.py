"""The desired objects of a job, as pure data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sealtune.api.v1alpha1 import DataDomain, FineTuneJob
from sealtune.builders import desired_children, vault
from sealtune.builders.endpoints import Endpoint, endpoint
from sealtune.settings import Settings
from sealtune_trainer.contract import TrainerConfig
from tests.support.objects import confidential_placement, data_domain, finetune_job

NS = "team-a"
WORKLOAD_NS = "sealtune-d"
UID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BASE = "tune-0a1b2c3d"
SETTINGS = Settings()


def build(job_spec: dict[str, Any] | None = None, **domain_spec: Any) -> dict[str, dict[str, Any]]:
    body = finetune_job("tune", NS, "d", **(job_spec or {}))
    body["metadata"]["uid"] = UID
    objs = desired_children(
        FineTuneJob.model_validate(body),
        DataDomain.model_validate(data_domain("d", NS, **domain_spec)),
        SETTINGS,
    )
    return {o["kind"]: o for o in objs}


def test_every_child_lives_in_the_workload_namespace_named_and_labelled_by_the_jobs_uid() -> None:
    objs = build()
    assert list(objs) == ["ServiceAccount", "NetworkPolicy", "ConfigMap", "Service", "Job"]
    for obj in objs.values():
        meta = obj["metadata"]
        assert "ownerReferences" not in meta, "no owner reference reaches across namespaces"
        assert meta["namespace"] == WORKLOAD_NS
        assert meta["name"].startswith(BASE)
        labels = meta["labels"]
        assert labels["sealtune.dev/finetunejob"] == "tune"
        assert labels["sealtune.dev/finetunejob-namespace"] == NS
        assert labels["sealtune.dev/finetunejob-uid"] == UID
    assert build() == objs, "builders must be deterministic"
    assert objs["ServiceAccount"]["automountServiceAccountToken"] is False
    pod = objs["Job"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == f"{BASE}-trainer"
    assert pod["metadata"]["labels"]["sealtune.dev/finetunejob-uid"] == UID
    assert objs["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"]["sealtune.dev/finetunejob-uid"] == UID


def test_a_domain_names_its_workload_namespace() -> None:
    objs = build(workloadNamespace="crown-jewels-work")
    assert {o["metadata"]["namespace"] for o in objs.values()} == {"crown-jewels-work"}


def test_the_run_writes_into_a_directory_of_its_own() -> None:
    config = json.loads(build()["ConfigMap"]["data"]["trainer.json"])
    assert config["output"]["dir"] == f"/var/run/sealtune/output/{NS}/{BASE}"


def test_pods_meet_pod_security_restricted() -> None:
    pod = build()["Job"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
    for volume in pod["volumes"]:
        assert "hostPath" not in volume
        if volume.get("emptyDir", {}).get("medium") == "Memory":
            assert volume["emptyDir"]["sizeLimit"]


def test_confidential_domain_sets_runtime_class_node_labels_and_pool() -> None:
    pod = build(placement=confidential_placement())["Job"]["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "kata-qemu-nvidia-gpu-tdx"
    assert pod["nodeSelector"] == {"nvidia.com/cc.ready.state": "true"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu-west-1"]} in terms[0][
        "matchExpressions"
    ]
    assert {"key": "sealtune.dev/confidential", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_indexed_job_carries_rendezvous_and_policies() -> None:
    job = build({"resources": {"workers": 3, "gpusPerWorker": 2}, "scheduling": {"queueName": "team-q"}})[
        "Job"
    ]
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 3)
    assert spec["suspend"] is True, "a Kueue-queued job starts suspended"
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-q"
    rules = spec["podFailurePolicy"]["rules"]
    # Refused config, rejected data, rejected base model, outputs already there: no retry helps.
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2, 3, 4, 5]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{BASE}-0.{BASE}.{WORKLOAD_NS}.svc.cluster.local"
    assert env["WORLD_SIZE"]["value"] == "6"
    assert "job-completion-index" in env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert container["command"][0] == "torchrun"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"


def test_network_policy_denies_by_default_and_opens_only_what_is_needed() -> None:
    policy = build(
        network={
            "vaultAddress": "https://vault.vault.svc:8200",
            "egress": [{"cidr": "192.0.2.0/24", "ports": [{"port": 443}]}],
        }
    )["NetworkPolicy"]["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    egress = json.dumps(policy["egress"])
    assert '"port": 53' in egress and "192.0.2.0/24" in egress
    assert {
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "vault"}}}],
        "ports": [{"port": 8200, "protocol": "TCP"}],
    } in policy["egress"]
    sources = [rule["from"] for rule in policy["ingress"]]
    assert [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}] in sources


WRAPPED = "vault:v1:d3JhcHBlZA=="
TRANSIT = {"type": "vaultTransit", "vaultTransit": {"keyName": "k", "wrappedDataKey": WRAPPED}}
SECRETS = {"secrets": [{"vaultPath": "secret/data/team/key", "key": "token", "fileName": "api-key"}]}


def test_config_map_holds_a_valid_trainer_contract_and_no_secret() -> None:
    cm = build(SECRETS, encryption=TRANSIT)["ConfigMap"]
    config = TrainerConfig.model_validate_json(cm["data"]["trainer.json"])
    assert config.data.encrypted is True
    assert config.data.key_file == "/var/run/sealtune/secrets/data.key"
    assert "secret/data" not in cm["data"]["trainer.json"]


def test_the_trainer_pins_the_base_model_to_the_jobs_digest() -> None:
    digest = "sha256:" + "cd" * 32
    cm = build({"baseModel": {"pvc": {"claimName": "models", "path": "."}, "digest": digest}})["ConfigMap"]
    config = TrainerConfig.model_validate_json(cm["data"]["trainer.json"])
    assert (config.model.path, config.model.manifest_digest) == ("/var/run/sealtune/model", digest)


def test_a_job_without_secrets_or_vault_encryption_has_no_vault_init_or_token() -> None:
    objs = build()
    pod = objs["Job"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert all(v["name"] != "vault-token" for v in pod["volumes"])
    assert "vault.json" not in objs["ConfigMap"]["data"]
    assert vault.plan(job(), domain()) is None


def test_vault_init_alone_mounts_the_audience_bound_token() -> None:
    pod = build(SECRETS)["Job"]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:3] == ["python", "-m", "sealtune_trainer.vault_init"]
    assert {m["name"] for m in init["volumeMounts"]} == {"config", "secrets", "vault-token"}
    assert all(m["name"] != "vault-token" for m in pod["containers"][0]["volumeMounts"])
    token = next(v for v in pod["volumes"] if v["name"] == "vault-token")
    source = token["projected"]["sources"][0]["serviceAccountToken"]
    assert source["audience"] == "vault"
    secrets = next(v for v in pod["volumes"] if v["name"] == "secrets")
    assert secrets["emptyDir"]["medium"] == "Memory" and secrets["emptyDir"]["sizeLimit"]
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert failure_rule_containers(build(SECRETS)) == {"trainer", "vault-init"}
    assert failure_rule_containers(build()) == {"trainer"}


def failure_rule_containers(objs: dict[str, dict[str, Any]]) -> set[str]:
    rules = objs["Job"]["spec"]["podFailurePolicy"]["rules"]
    return {r["onExitCodes"]["containerName"] for r in rules if "onExitCodes" in r}


def test_vault_plan_grants_exactly_the_declared_paths_and_the_job_keys() -> None:
    plan = vault.plan(job(SECRETS), domain(encryption=TRANSIT))
    assert plan is not None
    assert plan.name == "sealtune-job-team-a-tune-uid-1"
    assert plan.data_key == plan.name
    hcl = plan.policy_hcl(JOB_WRAPPED)
    paths = [line.split('"')[1] for line in hcl.splitlines() if line.startswith("path ")]
    assert paths == ["secret/data/team/key", "transit/decrypt/k", f"transit/decrypt/{plan.name}"]
    assert hcl.count('["read"]') == 1
    role = plan.role_parameters("vault")
    assert role["bound_service_account_names"] == ["tune-uid1-trainer"]
    assert role["bound_service_account_namespaces"] == [WORKLOAD_NS]
    assert role["token_policies"] == plan.name, "a string: the operator's policy globs only those"
    assert role["token_max_ttl"] <= job().spec.scheduling.active_deadline_seconds


JOB_WRAPPED = "vault:v1:am9iIGtleQ+/="


def test_decrypting_is_pinned_to_the_domain_and_job_wrapped_keys() -> None:
    plan = vault.plan(job(SECRETS), domain(encryption=TRANSIT))
    assert plan is not None
    assert plan.policy_hcl(JOB_WRAPPED).endswith(
        'path "transit/decrypt/k" {\n'
        '  capabilities = ["update"]\n'
        "  allowed_parameters = {\n"
        f'    "ciphertext" = ["{WRAPPED}"]\n'
        "  }\n"
        "}\n"
        f'path "transit/decrypt/{plan.name}" {{\n'
        '  capabilities = ["update"]\n'
        "  allowed_parameters = {\n"
        f'    "ciphertext" = ["{JOB_WRAPPED}"]\n'
        "  }\n"
        "}\n"
    )
    # Before the job's key is made, its policy grants nothing under it.
    assert "decrypt/sealtune-job" not in plan.policy_hcl(None)
    assert plan.policy_hcl(None).count("allowed_parameters") == 1


def test_a_wrapped_key_that_is_not_ciphertext_never_reaches_the_policy() -> None:
    plan = vault.plan(job(SECRETS), domain(encryption=TRANSIT))
    assert plan is not None
    for bad in ('vault:v1:x"]\n}\npath "sys/*" {', "*", "vault:v1:"):
        with pytest.raises(ValueError, match="not a wrapped key"):
            plan.policy_hcl(bad)


def test_vault_token_ttl_never_exceeds_a_short_deadline() -> None:
    plan = vault.plan(job({**SECRETS, "scheduling": {"activeDeadlineSeconds": 120}}), domain())
    assert plan is not None
    role = plan.role_parameters("vault")
    assert role["token_ttl"] <= 120 and role["token_max_ttl"] == 120


def test_long_names_give_bounded_distinct_vault_names() -> None:
    a = vault.object_name("n" * 63, "a" * 63, "0123456789")
    b = vault.object_name("n" * 63, "a" * 62 + "b", "0123456789")
    assert a != b and len(a) <= 128 and len(b) <= 128


def test_init_config_lists_secrets_and_wrapped_keys_but_no_value() -> None:
    config = vault.init_config(job(SECRETS), domain(encryption=TRANSIT), SETTINGS, "vault:v1:am9i")
    assert config is not None
    assert [(s.path, s.key, s.file) for s in config.secrets] == [("secret/data/team/key", "token", "api-key")]
    assert [(k.key, k.file) for k in config.data_keys] == [("k", "data.key"), (config.role, "job.key")]
    assert config.token_path == "/var/run/secrets/sealtune.dev/vault/token"


def job(spec: dict[str, Any] | None = None) -> FineTuneJob:
    body = finetune_job("tune", NS, "d", **(spec or {}))
    body["metadata"]["uid"] = "uid-1"
    return FineTuneJob.model_validate(body)


def domain(**spec: Any) -> DataDomain:
    return DataDomain.model_validate(data_domain("d", NS, **spec))


def test_endpoints() -> None:
    assert endpoint("http://127.0.0.1:8200") == Endpoint(port=8200, cidr="127.0.0.1/32")
    assert endpoint("https://vault.vault.svc.cluster.local") == Endpoint(port=443, namespace="vault")
    assert endpoint("https://vault.example.com") is None
