"""Signatures over a model's files in the OpenSSF model_signing format.

The operator signs digests, never weights: the trainer reports each output file's path and
sha256, and ``sign_files`` turns that list into a model_signing (Sigstore) bundle, a DSSE
envelope around an in-toto statement of the file digests, with an ECDSA P-256 key held in
Vault transit (``TransitSigner``) or in a Secret only the operator reads (``PemSigner``).
Verification uses the library too: ``signed_files`` checks a bundle's signature and returns
what it signs; ``verify_directory`` also rehashes a directory the way ``model_signing verify
key DIR --signature DIR/model.sig --public_key KEY`` does, and names every file that differs.
``sign_statement`` signs the provenance statement (a DSSE envelope, the same key), and
``check_artifact`` checks a whole ModelArtifact record: both signatures, file list, provenance.

Public keys are published in the ConfigMap ``PUBLIC_KEY_CONFIGMAP`` (entry
``PUBLIC_KEY_ENTRY``) in the operator's namespace.
"""

from .artifacts import ArtifactCheck, check_artifact
from .bundles import (
    SIGNATURE_FILE,
    FileRecord,
    SignedManifest,
    check_path,
    sign_files,
    signed_files,
    verify_directory,
)
from .errors import SigningError, VerificationError
from .signers import KeySigner, PemSigner, TransitSigner, new_private_key_pem
from .statements import sign_statement, signed_statement

PUBLIC_KEY_CONFIGMAP = "sealtune-signing-key"
"""ConfigMap in the operator's namespace that publishes the signing public key."""

PUBLIC_KEY_ENTRY = "public.pem"
"""The ConfigMap's data key holding the PEM (SubjectPublicKeyInfo) public key."""

__all__ = [
    "PUBLIC_KEY_CONFIGMAP",
    "PUBLIC_KEY_ENTRY",
    "SIGNATURE_FILE",
    "ArtifactCheck",
    "FileRecord",
    "KeySigner",
    "PemSigner",
    "SignedManifest",
    "SigningError",
    "TransitSigner",
    "VerificationError",
    "check_artifact",
    "check_path",
    "new_private_key_pem",
    "sign_files",
    "sign_statement",
    "signed_files",
    "signed_statement",
    "verify_directory",
]
