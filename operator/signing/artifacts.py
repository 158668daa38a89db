"""Checking a whole ModelArtifact record: its signature, that the signature covers exactly the
files its spec lists, that its provenance agrees with the rest of the spec, and, given the
files, every file on disk. ``sealtune verify`` and ``sealtune export`` use it; so can the
operator when it writes status.verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sealtune import provenance
from sealtune.api.v1alpha1.modelartifact import ModelArtifact

from .bundles import SignedManifest, signed_files, verify_directory
from .errors import VerificationError
from .statements import signed_statement


@dataclass
class ArtifactCheck:
    """The outcome, one list of problems per part; a part with no problem passed."""

    signature: list[str] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    files_checked: bool = False
    """Whether files on disk were checked (a directory was given and the signature held)."""
    signed: SignedManifest | None = None
    """What the bundle signs, when its signature verified."""

    @property
    def ok(self) -> bool:
        return not (self.signature or self.provenance or self.files)


def check_artifact(
    artifact: ModelArtifact, public_key_pem: bytes, files: Path | None = None
) -> ArtifactCheck:
    """Checks ``artifact`` with the signer's public key, and the files in ``files`` if given."""
    spec, name = artifact.spec, str(artifact.metadata.get("name", ""))
    namespace = str(artifact.metadata.get("namespace", ""))
    check = ArtifactCheck()
    try:
        check.signed = signed_files(spec.signature.bundle, public_key_pem)
    except VerificationError as exc:
        check.signature.append(str(exc))
    if check.signed is not None:
        subject = provenance.subject_name(namespace, name)
        if check.signed.name != subject:
            check.signature.append(f"the bundle signs model {check.signed.name!r}, not {subject!r}")
        listed = {f.path: f.sha256 for f in spec.digests.files}
        for path in sorted(listed.keys() - check.signed.files.keys()):
            check.signature.append(f"{path}: listed in spec.digests.files but not signed")
        for path in sorted(check.signed.files.keys() - listed.keys()):
            check.signature.append(f"{path}: signed but not listed in spec.digests.files")
        for path in sorted(listed.keys() & check.signed.files.keys()):
            if listed[path] != check.signed.files[path]:
                check.signature.append(f"{path}: spec.digests.files and the signature disagree on its sha256")
    try:
        if spec.signature.provenance is None:
            raise VerificationError("spec.signature.provenance is missing: the statement is not signed")
        if signed_statement(spec.signature.provenance, public_key_pem) != spec.provenance:
            check.signature.append("the signed provenance statement is not spec.provenance")
    except VerificationError as exc:
        check.signature.append(str(exc))
    check.provenance = provenance.inconsistencies(spec.provenance, namespace=namespace, name=name, spec=spec)
    results = spec.evaluation.results
    if results.manifest_digest not in (None, spec.digests.manifest):
        check.provenance.append("evaluation.results.manifestDigest is not spec.digests.manifest")
    if results.data_digest not in (None, spec.digests.data_set):
        check.provenance.append("evaluation.results.dataDigest is not spec.digests.dataSet")
    if files is not None and check.signed is not None:
        check.files_checked = True
        try:
            verify_directory(spec.signature.bundle, public_key_pem, files)
        except VerificationError as exc:
            check.files.append(str(exc))
    return check
