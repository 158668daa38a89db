"""The ``sealtune`` command: check, export and trace ModelArtifacts, and move them through stages.

    sealtune verify  ARTIFACT [--files DIR] [--public-key PEM]
    sealtune export  ARTIFACT --to DESTINATION --reason R [--timeout S]
    sealtune lineage ARTIFACT
    sealtune approve ARTIFACT --reason R [--public-key PEM]
    sealtune revoke  ARTIFACT --reason R
    sealtune audit verify FILE
    sealtune dataset COMMAND ...    (encrypt, digest, verify; see ``sealtune dataset --help``)

ARTIFACT is a ModelArtifact's name, read from the API server (``-n NAMESPACE``,
``--kubeconfig``, ``--context``; in a pod, its ServiceAccount), or the path of a YAML or JSON
file holding one (verify and lineage only). The signer's public key is ``--public-key``
or the ConfigMap ``sealtune-signing-key`` in the operator's namespace (``--operator-namespace``,
default ``$SEALTUNE_OPERATOR_NAMESPACE`` or ``sealtune-system``). ``-o json`` prints one JSON
document on stdout, errors included, for scripts.

``export`` asks for an artifact's files: the operator decides the request under the domain's
spec.release and, where it allows, copies the signed files, rehashed, with the signature bundle
to the destination claim the domain names (sealtune/releases.py). The request, its outcome and
who asked are in the artifact and the operator's audit log.

Exit codes: 0 ok; 1 verification failed, (approve) a gate failed, or (export) the release was
refused or failed; 2 usage error, or the
artifact, key or files are missing or malformed; 3 the API server refused the change (a stage
transition its rules forbid) or could not be reached.

``dataset`` is the admins' data-set tool, sealtune_trainer.dataset: it seals a data set under a
key from Vault transit and prints the digest and wrapped key a DataDomain records.

``audit verify`` checks a copy of the operator's audit log: exit 1 names each edited, removed,
inserted or reordered entry by line and sequence number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from sealtune import audit, provenance, signing
from sealtune.api.v1alpha1 import GROUP, VERSION, ModelArtifact
from sealtune.api.v1alpha1.modelartifact import Approval, ReleaseRequest, Revocation

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3

T = TypeVar("T")
PLURAL = "modelartifacts"
CONFLICT_ATTEMPTS = 3
_POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class CliError(Exception):
    """Ends the command with ``message`` and exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class NotFound(CliError):
    """The API server has no such object."""


class Conflict(CliError):
    """The object changed between this command's read and its write."""


@dataclass
class Outcome:
    """A verb's result: lines for people, a document for ``-o json``, and the exit code."""

    data: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    code: int = EXIT_OK


class Cluster:
    """The API server, through the official client (synchronous is right for a CLI)."""

    def __init__(self, kubeconfig: str | None, context: str | None) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                self.namespace = Path(_POD_NAMESPACE_FILE).read_text().strip()
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context, client_configuration=configuration
                )
                contexts, active = config.list_kube_config_contexts(kubeconfig)  # type: ignore[no-untyped-call]
                chosen = next(c for c in contexts if c["name"] == context) if context else active
                self.namespace = chosen["context"].get("namespace", "default")
        except (config.ConfigException, OSError, KeyError, TypeError, StopIteration) as exc:
            raise CliError(f"cannot reach the API server: no usable kubeconfig ({exc})") from None
        self._api = client.ApiClient(configuration)
        self._custom = client.CustomObjectsApi(self._api)
        self._core = client.CoreV1Api(self._api)
        self._auth = client.AuthenticationV1Api(self._api)

    def artifact(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(
            f"modelartifact {namespace}/{name}",
            lambda: self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        )

    def job(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call(
            f"finetunejob {namespace}/{name}",
            lambda: self._custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "finetunejobs", name
            ),
        )

    def public_key(self, namespace: str) -> bytes:
        what = f"configmap {namespace}/{signing.PUBLIC_KEY_CONFIGMAP}"
        found = self._call(
            what,
            lambda: self._core.read_namespaced_config_map(signing.PUBLIC_KEY_CONFIGMAP, namespace).to_dict(),
        )
        pem = (found.get("data") or {}).get(signing.PUBLIC_KEY_ENTRY)
        if not pem:
            raise CliError(f"{what} has no {signing.PUBLIC_KEY_ENTRY} entry")
        return str(pem).encode()

    def patch_artifact(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        # A JSON merge patch carrying metadata.resourceVersion: refused with 409 if the
        # artifact changed since it was read, so no approval is ever lost to a race.
        return self._call(
            f"modelartifact {namespace}/{name}",
            lambda: self._custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            ),
        )

    def identity(self) -> tuple[str, list[str]]:
        """The user name and groups the API server authenticates this client as (a
        SelfSubjectReview), as admission will see them on the next request."""
        from kubernetes.client import V1SelfSubjectReview

        review = V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        found = self._call(
            "selfsubjectreview", lambda: self._auth.create_self_subject_review(review).to_dict()
        )
        user = (found.get("status") or {}).get("user_info") or {}
        if not user.get("username"):
            raise CliError("the API server did not say who you are", EXIT_API)
        return str(user["username"]), [str(g) for g in user.get("groups") or []]

    def whoami(self) -> str:
        return self.identity()[0]

    @staticmethod
    def _call(what: str, request: Callable[[], Any]) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            result: dict[str, Any] = request()
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound(f"{what} not found") from None
            if exc.status == 409:
                raise Conflict(f"{what} kept changing while this command ran; try again", EXIT_API) from None
            raise CliError(f"the API server refused: {_api_message(exc)}", EXIT_API) from None
        except HTTPError as exc:
            raise CliError(f"cannot reach the API server: {exc}", EXIT_API) from None
        return result


def _api_message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"


class Context:
    """The parsed arguments and, made on first use, the cluster connection."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._cluster: Cluster | None = None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            self._cluster = Cluster(self.args.kubeconfig, self.args.context)
        return self._cluster

    @property
    def namespace(self) -> str:
        return str(self.args.namespace or self.cluster.namespace)

    def artifact(self, *, from_file: bool = True) -> tuple[ModelArtifact, dict[str, Any]]:
        """The artifact named by ARTIFACT, validated, and as read (for its resourceVersion)."""
        ref = str(self.args.artifact)
        path = Path(ref)
        if "/" in ref or path.suffix in (".yaml", ".yml", ".json") or path.is_file():
            if not from_file:
                raise CliError(f"{self.args.verb} changes the artifact on the API server: give its name")
            try:
                raw = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError) as exc:
                raise CliError(f"cannot read {ref}: {exc}") from None
            source = ref
        else:
            raw = self.cluster.artifact(self.namespace, ref)
            source = f"modelartifact {self.namespace}/{ref}"
        if not isinstance(raw, dict) or raw.get("kind") != "ModelArtifact":
            raise CliError(f"{source} is not a ModelArtifact")
        try:
            # Status is the operator's observation, not part of the record being checked.
            artifact = ModelArtifact.model_validate({k: v for k, v in raw.items() if k != "status"})
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CliError(f"{source} is not a valid ModelArtifact: {where}: {first['msg']}") from None
        return artifact, raw

    def public_key(self) -> bytes:
        if self.args.public_key:
            try:
                return Path(self.args.public_key).read_bytes()
            except OSError as exc:
                raise CliError(f"cannot read --public-key: {exc}") from None
        try:
            return self.cluster.public_key(self.args.operator_namespace)
        except CliError as exc:
            raise CliError(f"no public key: {exc}; pass --public-key FILE", exc.code) from None


def _name(artifact: ModelArtifact) -> str:
    meta = artifact.metadata
    return f"{meta.get('namespace', '-')}/{meta.get('name', '-')}"


def _check_lines(check: signing.ArtifactCheck) -> list[str]:
    def part(label: str, problems: list[str], checked: bool = True, hint: str = "") -> list[str]:
        if not checked:
            return [f"  {label:<11} not checked{hint}"]
        verdict = "FAILED" if problems else "ok"
        return [f"  {label:<11} {verdict}", *(f"    - {p}" for p in problems)]

    files_hint = " (pass --files DIR)" if check.signed is not None else " (the signature did not verify)"
    return (
        part("signature", check.signature)
        + part("provenance", check.provenance)
        + part("files", check.files, check.files_checked, files_hint)
    )


def _check_data(check: signing.ArtifactCheck) -> dict[str, Any]:
    return {
        "verified": check.ok,
        "signature": {"ok": not check.signature, "problems": check.signature},
        "provenance": {"ok": not check.provenance, "problems": check.provenance},
        "files": {
            "checked": check.files_checked,
            "ok": check.files_checked and not check.files,
            "problems": check.files,
            "count": len(check.signed.files) if check.signed else 0,
        },
    }


def _refused(artifact: ModelArtifact, check: signing.ArtifactCheck, headline: str, **data: Any) -> Outcome:
    """The outcome of a verb that stops because the artifact (or its files) did not verify."""
    return Outcome(
        {"artifact": _name(artifact), **data, **_check_data(check)},
        [headline, *_check_lines(check)],
        EXIT_FAILED,
    )


def verify(ctx: Context) -> Outcome:
    artifact, _ = ctx.artifact()
    files = Path(ctx.args.files) if ctx.args.files else None
    if files is not None and not files.is_dir():
        raise CliError(f"--files {files}: not a directory")
    check = signing.check_artifact(artifact, ctx.public_key(), files)
    signature = artifact.spec.signature
    data = {"artifact": _name(artifact), "keyID": signature.key_id, **_check_data(check)}
    signed_at = f"{signature.signed_at:%Y-%m-%dT%H:%M:%SZ}"
    lines = [
        f"ModelArtifact {_name(artifact)}, signed by {signature.key_id} at {signed_at}",
        *_check_lines(check),
    ]
    lines.append("verified" if check.ok else "verification FAILED")
    return Outcome(data, lines, EXIT_OK if check.ok else EXIT_FAILED)


def lineage(ctx: Context) -> Outcome:
    artifact, raw = ctx.artifact()
    spec, statement = artifact.spec, artifact.spec.provenance
    nodes, runtime_class = provenance.placement(statement)
    started, finished = provenance.run_times(statement)
    images = [
        {
            "container": d["name"].removeprefix(provenance.IMAGE_PREFIX),
            "uri": d.get("uri"),
            "digest": d.get("digest"),
        }
        for d in provenance.dependencies(statement)
        if str(d.get("name", "")).startswith(provenance.IMAGE_PREFIX)
    ]
    base = provenance.dependency(statement, provenance.BASE_MODEL) or {}
    job, job_note = _job_status(ctx, artifact)
    data: dict[str, Any] = {
        "artifact": _name(artifact),
        "promotion": raw.get("promotion", {"stage": "Candidate"}),
        "job": {**spec.source.job.to_json(), "note": job_note},
        "domain": spec.source.domain.to_json(),
        "digests": {k: v for k, v in spec.digests.to_json().items() if k != "files"},
        "baseModel": base.get("uri"),
        "nodes": nodes,
        "runtimeClassName": runtime_class,
        "startedOn": started,
        "finishedOn": finished,
        "images": images,
        "evaluationPassed": spec.evaluation.passed,
        "gates": spec.evaluation.to_json()["results"].get("gates", []),
        "deletions": job.get("deletions", []),
        "deletionReceipts": job.get("deletionReceipts", []),
    }
    return Outcome(data, _lineage_lines(data))


def _job_status(ctx: Context, artifact: ModelArtifact) -> tuple[dict[str, Any], str]:
    """The source job's status, when that very job (same uid) can still be read, and a note."""
    ref = artifact.spec.source.job
    namespace = str(artifact.metadata.get("namespace") or ctx.namespace)
    try:
        found = ctx.cluster.job(namespace, ref.name)
    except NotFound:
        return {}, "the job no longer exists; its deletion receipts are in the audit log"
    except CliError as exc:
        return {}, f"the job's status could not be read: {exc}"
    if found.get("metadata", {}).get("uid") != ref.uid:
        return {}, "a different job of that name exists now; the original's receipts are in the audit log"
    status = found.get("status")
    return (status if isinstance(status, dict) else {}), "found"


def _lineage_lines(data: dict[str, Any]) -> list[str]:
    promotion, job, digests = data["promotion"], data["job"], data["digests"]
    lines = [
        f"ModelArtifact  {data['artifact']}",
        f"stage          {promotion.get('stage', 'Candidate')}",
        *(
            f"  approved by {a['approver']} at {a['approvedAt']}: {a['reason']}"
            for a in promotion.get("approvals", [])
        ),
    ]
    if "revocation" in promotion:
        r = promotion["revocation"]
        lines.append(f"  revoked by {r['revoker']} at {r['revokedAt']}: {r['reason']}")
    lines += [
        f"job            {job['name']} (uid {job['uid']}): {job['note']}",
        f"domain         {data['domain']['name']} (uid {data['domain']['uid']})",
        f"data set       {digests['dataSet']}",
        f"base model     {digests['baseModel']}"
        + (f" from {data['baseModel']}" if data["baseModel"] else ""),
        f"manifest       {digests['manifest']}",
        f"nodes          {', '.join(data['nodes']) or '(not recorded)'}",
        f"runtimeClass   {data['runtimeClassName'] or '(none)'}",
        f"ran            {data['startedOn']} to {data['finishedOn']}",
        *(f"image          {i['container']}: {i['uri']} {_digest_text(i['digest'])}" for i in data["images"]),
        f"gates          {'all passed' if data['evaluationPassed'] else 'NOT all passed'}",
        *(f"  {g['name']}: {'passed' if g['passed'] else 'FAILED'}{_gate_values(g)}" for g in data["gates"]),
    ]
    lines += [
        f"deletion       {d['target']} due {d['dueAt']}"
        + (f", deleted {d['deletedAt']}" if d.get("deletedAt") else "")
        for d in data["deletions"]
    ]
    lines += [
        f"receipt        {r['kind']} {r['name']} deleted {r['deletedAt']}: {r['policy']}, {r['verification']}"
        for r in data["deletionReceipts"]
    ]
    return lines


def _digest_text(digest: Any) -> str:
    return ", ".join(f"{k}:{v}" for k, v in digest.items()) if isinstance(digest, dict) else ""


def _gate_values(gate: dict[str, Any]) -> str:
    if gate.get("value") is None:
        return ""
    return f" ({gate['value']} against {gate.get('threshold')})"


def _retry_on_conflict(verb: Callable[[Context], T]) -> Callable[[Context], T]:
    """Runs ``verb`` again, from a fresh read, when its write meets a newer version: the
    operator may write the artifact's status between the read and the write."""

    def run(ctx: Context) -> T:
        for _ in range(CONFLICT_ATTEMPTS - 1):
            try:
                return verb(ctx)
            except Conflict:
                continue
        return verb(ctx)

    return run


@_retry_on_conflict
def approve(ctx: Context) -> Outcome:
    artifact, raw = ctx.artifact(from_file=False)
    promotion = raw.get("promotion") or {}
    if promotion.get("stage") == "Revoked":
        raise CliError(f"ModelArtifact {_name(artifact)} is Revoked, which is final", EXIT_API)
    if not artifact.spec.evaluation.passed:
        failed = [g.name for g in artifact.spec.evaluation.results.gates if not g.passed]
        message = f"not approved: evaluation gates failed ({', '.join(failed) or 'see evaluation'})"
        return Outcome(
            {"artifact": _name(artifact), "approved": False, "error": message}, [message], EXIT_FAILED
        )
    check = signing.check_artifact(artifact, ctx.public_key())
    if not check.ok:
        headline = f"not approved: ModelArtifact {_name(artifact)} does not verify"
        return _refused(artifact, check, headline, approved=False)
    approval = _decision(
        Approval,
        approver=ctx.cluster.whoami(),
        reason=ctx.args.reason,
        approved_at=datetime.now(UTC),
    )
    approvals = [*promotion.get("approvals", []), approval]
    patch = {
        "metadata": {"resourceVersion": raw["metadata"]["resourceVersion"]},
        "promotion": {"stage": "Approved", "approvals": approvals},
    }
    ctx.cluster.patch_artifact(ctx.namespace, artifact.metadata["name"], patch)
    line = f"ModelArtifact {_name(artifact)} Approved by {approval['approver']}"
    return Outcome({"artifact": _name(artifact), "approved": True, "approval": approval}, [line])


@_retry_on_conflict
def revoke(ctx: Context) -> Outcome:
    artifact, raw = ctx.artifact(from_file=False)
    promotion = raw.get("promotion") or {}
    if promotion.get("stage") == "Revoked":
        done = promotion.get("revocation", {})
        raise CliError(
            f"ModelArtifact {_name(artifact)} was already revoked by {done.get('revoker')} at "
            f"{done.get('revokedAt')}; Revoked is final",
            EXIT_API,
        )
    revocation = _decision(
        Revocation, revoker=ctx.cluster.whoami(), reason=ctx.args.reason, revoked_at=datetime.now(UTC)
    )
    patch = {
        "metadata": {"resourceVersion": raw["metadata"]["resourceVersion"]},
        "promotion": {"stage": "Revoked", "revocation": revocation},
    }
    ctx.cluster.patch_artifact(ctx.namespace, artifact.metadata["name"], patch)
    line = f"ModelArtifact {_name(artifact)} Revoked by {revocation['revoker']}"
    return Outcome({"artifact": _name(artifact), "revoked": True, "revocation": revocation}, [line])


@_retry_on_conflict
def _request_release(ctx: Context) -> tuple[ModelArtifact, int]:
    """Appends the request under the caller's own name and groups; returns its index."""
    artifact, raw = ctx.artifact(from_file=False)
    promotion = raw.get("promotion") or {}
    if promotion.get("stage") == "Revoked":
        raise CliError(
            f"ModelArtifact {_name(artifact)} is Revoked: its files are released to nobody", EXIT_API
        )
    username, groups = ctx.cluster.identity()
    request = _decision(
        ReleaseRequest,
        destination=ctx.args.to,
        requester=username,
        groups=groups,
        requested_at=datetime.now(UTC),
        reason=ctx.args.reason,
    )
    releases = [*promotion.get("releases", []), request]
    patch = {
        "metadata": {"resourceVersion": raw["metadata"]["resourceVersion"]},
        "promotion": {"releases": releases},
    }
    ctx.cluster.patch_artifact(ctx.namespace, artifact.metadata["name"], patch)
    return artifact, len(releases) - 1


def export(ctx: Context) -> Outcome:
    artifact, index = _request_release(ctx)
    name, deadline = artifact.metadata["name"], time.monotonic() + ctx.args.timeout
    outcome: dict[str, Any] | None = None
    while outcome is None:
        found = (ctx.cluster.artifact(ctx.namespace, name).get("status") or {}).get("releases") or []
        outcome = next((o for o in found if o.get("index") == index), None)
        if outcome is None:
            if time.monotonic() > deadline:
                message = (
                    f"release request {index} of ModelArtifact {_name(artifact)} is recorded, but the "
                    f"operator gave no outcome in {ctx.args.timeout:g} s; it decides it when it runs "
                    f"(status.releases[index={index}])"
                )
                data = {"artifact": _name(artifact), "released": False, "index": index, "error": message}
                return Outcome(data, [message], EXIT_FAILED)
            time.sleep(1.0)
    data = {"artifact": _name(artifact), "released": outcome["phase"] == "Released", **outcome}
    if outcome["phase"] != "Released":
        line = f"not released ({outcome['phase']}, {outcome['reason']}): {outcome.get('message', '')}"
        return Outcome(data, [line], EXIT_FAILED)
    directory = outcome["path"]
    command = (
        f"model_signing verify key DIR --signature DIR/{signing.SIGNATURE_FILE} --public_key sealtune.pub"
    )
    data["verifyCommand"] = command
    lines = [
        f"released {outcome['files']} files ({outcome['bytes']} bytes) and the signature bundle to claim "
        f"{outcome['claimName']}, directory {directory}; each file was rehashed on the way.",
        f"Where that claim is mounted, check them with (DIR: that directory):\n  {command}",
    ]
    return Outcome(data, lines)


def _decision(
    model: type[Approval] | type[Revocation] | type[ReleaseRequest], **fields: Any
) -> dict[str, Any]:
    """The approval, revocation or release request as JSON, checked against the API's own bounds first."""
    try:
        return model(**fields).to_json()
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None


def audit_verify(ctx: Context) -> Outcome:
    path = Path(ctx.args.file)
    try:
        scan = audit.scan_file(path)
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    data = {
        "file": str(path),
        "intact": not scan.problems,
        "entries": scan.entries,
        "problems": [p.to_json() for p in scan.problems],
    }
    if scan.problems:
        lines = [f"{path}: {scan.entries} lines", *(f"  {p}" for p in scan.problems), "verification FAILED"]
        return Outcome(data, lines, EXIT_FAILED)
    # Entries cut from the end leave no trace in the file: the last hash is what to compare.
    data["lastHash"] = scan.head
    return Outcome(data, [f"{path}: {scan.entries} entries, chain intact, last hash {scan.head}"])


VERBS: dict[str, Callable[[Context], Outcome]] = {
    "verify": verify,
    "export": export,
    "lineage": lineage,
    "approve": approve,
    "revoke": revoke,
    "audit": audit_verify,
}


def parser() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    common.add_argument(
        "-n", "--namespace", help="the artifact's namespace (default: the kubeconfig context's)"
    )
    common.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context (default: the current one)")
    common.add_argument(
        "--operator-namespace",
        default=os.environ.get("SEALTUNE_OPERATOR_NAMESPACE", "sealtune-system"),
        help="where the ConfigMap sealtune-signing-key publishes the public key (default: %(default)s)",
    )
    artifact_help = "a ModelArtifact's name, or a YAML/JSON file holding one"
    key_help = "PEM public key of the signer (default: the ConfigMap sealtune-signing-key)"

    top = argparse.ArgumentParser(
        prog="sealtune",
        description="Check, export and trace sealtune ModelArtifacts, approve or revoke them, and check "
        "the audit log.",
        epilog="exit codes: 0 ok; 1 verification (or, for approve, a gate) failed; 2 usage error, or "
        "artifact, key or files missing or malformed; 3 the API server refused or was unreachable",
    )
    verbs = top.add_subparsers(dest="verb", required=True, metavar="VERB")

    one = verbs.add_parser(
        "verify", parents=[common], help="check the signature, every file digest and the provenance"
    )
    one.add_argument("artifact", help=artifact_help)
    one.add_argument("--files", metavar="DIR", help="the artifact's files, to rehash every one")
    one.add_argument("--public-key", metavar="PEM", help=key_help)

    one = verbs.add_parser(
        "export",
        parents=[common],
        help="ask for the signed files under the domain's release rule; they land on its destination",
    )
    one.add_argument("artifact", help="a ModelArtifact's name")
    one.add_argument(
        "--to", required=True, metavar="DESTINATION", help="one of the domain's spec.release.destinations"
    )
    one.add_argument("--reason", required=True, help="why, e.g. the deployment or ticket")
    one.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the operator's outcome (default: %(default)s)",
    )

    one = verbs.add_parser(
        "lineage", parents=[common], help="job, domain, data, placement, images, gates, deletions"
    )
    one.add_argument("artifact", help=artifact_help)

    one = verbs.add_parser("approve", parents=[common], help="move a verified Candidate to Approved")
    one.add_argument("artifact", help="a ModelArtifact's name")
    one.add_argument("--reason", required=True, help="why, e.g. the review or ticket")
    one.add_argument("--public-key", metavar="PEM", help=key_help)

    one = verbs.add_parser("revoke", parents=[common], help="withdraw an artifact; final")
    one.add_argument("artifact", help="a ModelArtifact's name")
    one.add_argument("--reason", required=True, help="why")

    one = verbs.add_parser("audit", help="check the operator's audit log")
    # verify is the one audit verb so far: VERBS["audit"] runs it.
    audit_verbs = one.add_subparsers(dest="audit_verb", required=True, metavar="VERB")
    one = audit_verbs.add_parser(
        "verify", parents=[output], help="find edited, removed, inserted or reordered entries"
    )
    one.add_argument("file", help=f"a copy of the audit log, e.g. of {audit.DEFAULT_PATH}")

    # Listed for --help only: main() hands `dataset ...` to sealtune_trainer.dataset as is.
    verbs.add_parser("dataset", help="seal, digest and verify a data set (with a Vault transit key)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dataset"]:
        from sealtune_trainer import dataset

        return dataset.main(argv[1:], prog="sealtune dataset")
    args = parser().parse_args(argv)
    try:
        outcome = VERBS[args.verb](Context(args))
    except CliError as exc:
        if args.output == "json":
            print(json.dumps({"error": str(exc), "exitCode": exc.code}, indent=2))
        else:
            print(f"sealtune {args.verb}: {exc}", file=sys.stderr)
        return exc.code
    if args.output == "json":
        print(json.dumps({**outcome.data, "exitCode": outcome.code}, indent=2, default=str))
    else:
        print("\n".join(outcome.lines))
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
