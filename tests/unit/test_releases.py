"""Release of weights, the pure parts: the domain's rule on each request (releases.judge), the
release pod's Job (builders/release.py) and its copy program (sealtune_trainer.release), which
must leave a directory that `model_signing verify key` accepts, or nothing."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from sealtune import signing
from sealtune.api.v1alpha1 import DataDomain, ModelArtifact
from sealtune.api.v1alpha1.modelartifact import ReleaseRequest
from sealtune.builders.release import release_config, release_config_map, release_job, released_directory
from sealtune.releases import copy_outcome, judge, pending
from sealtune.settings import Settings
from sealtune_trainer import release as copy
from sealtune_trainer.errors import EXIT_OUTPUT_REFUSED
from tests.support.artifacts import (
    artifact_manifest,
    flip_byte,
    job_manifest,
    model_signing_verify,
    write_model,
)
from tests.support.objects import confidential_placement, data_domain

pytestmark = pytest.mark.unit

DOMAIN_UID = "0d0d0d0d-0000-4000-8000-000000000002"
RELEASE = {
    "stages": ["Approved"],
    "destinations": [
        {"name": "serving", "claimName": "releases", "path": "serving", "namespaces": ["team-a"]},
        {"name": "audit", "claimName": "outputs", "groups": ["auditors"]},
    ],
}


@pytest.fixture
def made(tmp_path: Path) -> dict[str, Any]:
    signer = signing.PemSigner(signing.new_private_key_pem())
    files = write_model(tmp_path / "run")
    body = artifact_manifest("tune-v1", files, signer, job=job_manifest("tune", "team-a"))
    body["metadata"]["uid"] = "a0a0a0a0-0000-4000-8000-000000000003"
    key = tmp_path / "key.pub"
    key.write_bytes(signer.public_key_pem)
    return {"body": body, "files": files, "key": key, "tmp": tmp_path}


def artifact(body: dict[str, Any], stage: str = "Approved") -> ModelArtifact:
    approvals = [{"approver": "bob", "approvedAt": "2026-12-07T12:00:00Z", "reason": "ok"}]
    promotion: dict[str, Any] = {"stage": stage, "approvals": approvals if stage == "Approved" else []}
    if stage == "Revoked":
        promotion["revocation"] = {"revoker": "bob", "revokedAt": "2026-12-07T13:00:00Z", "reason": "leak"}
    return ModelArtifact.model_validate({**body, "promotion": promotion})


def domain(**spec: Any) -> DataDomain:
    found = DataDomain.model_validate(data_domain("crown-jewels", "team-a", **spec))
    found.metadata["uid"] = DOMAIN_UID
    return found


def request(
    destination: str = "serving", groups: tuple[str, ...] = ("system:authenticated",)
) -> ReleaseRequest:
    return ReleaseRequest(
        destination=destination,
        requester="carol",
        groups=list(groups),
        requested_at=datetime(2026, 12, 7, tzinfo=UTC),
        reason="deploy",
    )


def test_the_domain_keeps_its_weights_unless_its_rule_releases_them(made: dict[str, Any]) -> None:
    approved = artifact(made["body"])
    cases = [
        (domain(), request(), [], "ReleaseForbidden"),
        (domain(release=RELEASE), request(), [], "Allowed"),
        (domain(release={**RELEASE, "stages": ["Candidate"]}), request(), [], "StageNotReleased"),
        (domain(release=RELEASE), request("elsewhere"), [], "UnknownDestination"),
        (domain(release=RELEASE), request("audit"), [], "GroupNotAllowed"),
        (domain(release=RELEASE), request("audit", ("auditors",)), [], "Allowed"),
        (domain(release=RELEASE), request(), ["Key mismatch"], "NotVerified"),
        (None, request(), [], "DomainGone"),
    ]
    for rule, asked, problems, reason in cases:
        verdict = judge(approved, asked, rule, problems)
        assert verdict.reason == reason, (rule and rule.spec.release, asked, verdict)
        assert verdict.allowed == (reason == "Allowed")
    assert judge(artifact(made["body"], "Candidate"), request(), domain(release=RELEASE), []).reason == (
        "StageNotReleased"
    )
    anything = domain(release={**RELEASE, "stages": ["Candidate", "Approved"]})
    assert judge(artifact(made["body"], "Revoked"), request(), anything, []).reason == "StageNotReleased"
    elsewhere = artifact({**made["body"], "metadata": {**made["body"]["metadata"], "namespace": "team-b"}})
    assert judge(elsewhere, request(), domain(release=RELEASE), []).reason == "NamespaceNotAllowed"
    replaced = domain(release=RELEASE)
    replaced.metadata["uid"] = "another"
    assert judge(approved, request(), replaced, []).reason == "DomainGone"


def test_a_rule_that_releases_must_name_where_to() -> None:
    with pytest.raises(ValueError, match=r"spec.release.destinations needs an entry"):
        domain(release={"stages": ["Approved"]})


def test_pending_requests_are_those_without_an_outcome() -> None:
    body = {
        "promotion": {"releases": [{}, {}, {}]},
        "status": {"releases": [{"index": 1, "phase": "Refused"}]},
    }
    assert pending(body) == [0, 2]
    assert pending({}) == []


def test_the_release_job_runs_where_the_domain_allows_and_touches_only_its_mounts(
    made: dict[str, Any],
) -> None:
    approved, settings = artifact(made["body"]), Settings()
    confidential = domain(release=RELEASE, placement=confidential_placement())
    destination = confidential.spec.release.destinations[0]
    job = release_job(approved, 0, confidential, destination, settings)
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["namespace"] == "sealtune-crown-jewels"
    assert pod["runtimeClassName"] == "kata-qemu-nvidia-gpu-tdx" and pod["affinity"]["nodeAffinity"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    source = mounts["/var/run/sealtune/release/source"]
    assert source["readOnly"] is True and source["subPath"] == approved.spec.storage.path
    assert mounts["/var/run/sealtune/release/target"]["subPath"] == "serving"
    assert {v["name"] for v in pod["volumes"]} == {"config", "claim-0", "claim-1"}

    # The destination on the output claim itself: one volume, mounted twice.
    same = domain(release=RELEASE).spec.release.destinations[1]
    pod = release_job(approved, 1, domain(release=RELEASE), same, settings)["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["config", "claim-0"]

    owner = {"metadata": {"name": job["metadata"]["name"], "uid": "j-1"}}
    config = release_config_map(approved, 0, confidential, owner)
    assert config["metadata"]["ownerReferences"][0]["uid"] == "j-1"
    assert json.loads(config["data"]["release.json"]) == release_config(approved)


def copy_into(made: dict[str, Any], target: Path) -> tuple[int, dict[str, Any]]:
    config = made["tmp"] / "release.json"
    config.write_text(json.dumps(release_config(artifact(made["body"]))))
    message = made["tmp"] / "termination"
    code = copy.main(
        ["--config", str(config), "--source", str(made["files"]), "--target", str(target),
         "--termination-message-path", str(message)]
    )  # fmt: skip
    return code, json.loads(message.read_text())


def test_the_release_lands_as_model_signing_expects_it(made: dict[str, Any]) -> None:
    (made["files"] / "metrics.json").write_text("{}")  # unsigned files stay behind
    target = made["tmp"] / "destination"
    code, report = copy_into(made, target)
    assert code == 0 and report["ok"] and report["files"] == 3, report
    landed = target / released_directory(artifact(made["body"]))
    assert sorted(p.relative_to(landed).as_posix() for p in landed.rglob("*") if p.is_file()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "model.sig",
        "tokenizer/tokenizer.json",
    ]
    accepted = model_signing_verify(landed, landed / signing.SIGNATURE_FILE, made["key"])
    assert accepted.returncode == 0, accepted.stderr
    # Asked again, it finds its own release there and says so.
    code, report = copy_into(made, target)
    assert code == 0 and report.get("found") is True
    flip_byte(landed / "adapter_config.json")
    assert model_signing_verify(landed, landed / signing.SIGNATURE_FILE, made["key"]).returncode != 0
    code, report = copy_into(made, target)
    assert code == EXIT_OUTPUT_REFUSED and "is not this release" in report["message"]


def test_a_file_that_differs_or_a_planted_link_releases_nothing(made: dict[str, Any]) -> None:
    target = made["tmp"] / "destination"
    landed = target / released_directory(artifact(made["body"]))
    flip_byte(made["files"] / "adapter_model.safetensors", 10)
    code, report = copy_into(made, target)
    assert code == EXIT_OUTPUT_REFUSED and "differs from the signed digest" in report["message"]
    assert not landed.exists() and not any(landed.parent.iterdir())
    flip_byte(made["files"] / "adapter_model.safetensors", 10)

    secret = made["tmp"] / "elsewhere.txt"
    secret.write_text("not part of the artifact")
    (made["files"] / "adapter_config.json").unlink()
    os.symlink(secret, made["files"] / "adapter_config.json")
    code, report = copy_into(made, target)
    assert code == EXIT_OUTPUT_REFUSED and "without following links" in report["message"]
    assert not landed.exists()


def test_the_outcome_comes_from_the_pod_the_release_job_controls() -> None:
    job = {"metadata": {"uid": "j-1"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}

    def pod(owner: str, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "metadata": {"ownerReferences": [{"uid": owner, "controller": True}]},
            "status": {
                "containerStatuses": [
                    {"name": "release", "state": {"terminated": {"message": json.dumps(message)}}}
                ]
            },
        }

    forged = pod("other", {"ok": True, "files": 99, "directory": "x"})
    assert copy_outcome(job, [forged])[0] == "Failed"
    phase, reason, report = copy_outcome(
        job, [forged, pod("j-1", {"ok": True, "files": 3, "directory": "d"})]
    )
    assert (phase, reason, report["files"]) == ("Released", "Released", 3)
    failed = {
        **job,
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
    }
    refused = pod("j-1", {"ok": False, "reason": "OutputRefused", "message": "x differs"})
    assert copy_outcome(failed, [refused]) == ("Failed", "OutputRefused", {"message": "x differs"})


def test_the_chart_grants_the_release_verb_to_the_releaser_role_only() -> None:
    from tests.support.tools import render

    roles = {r["metadata"]["name"]: r for r in render() if r["kind"] == "ClusterRole"}
    holders = {
        name
        for name, role in roles.items()
        for rule in role["rules"]
        if "modelartifacts/promotion" in rule.get("resources", []) and "release" in rule["verbs"]
    }
    assert holders == {"t-sealtune-releaser"}, yaml.safe_dump(holders)
