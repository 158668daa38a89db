"""sealtune.dev/v1alpha1: DataDomain, FineTuneJob and ModelArtifact.

Parse what the API server returns with ``FineTuneJobSpec.model_validate(body["spec"])`` (or the
whole object with ``FineTuneJob.model_validate(body)``) and write with ``.to_json()``.
Condition types and reasons are in ``sealtune.api.v1alpha1.conditions``.
"""

from .base import API_VERSION, GROUP, VERSION, KindInfo, KubeModel, KubeResource, PrinterColumn
from .datadomain import DataDomain, DataDomainSpec, DataDomainStatus
from .finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus
from .meta import Condition
from .modelartifact import ModelArtifact, ModelArtifactSpec, ModelArtifactStatus, Promotion
from .scalars import parse_duration

KINDS: tuple[type[KubeResource], ...] = (DataDomain, FineTuneJob, ModelArtifact)
"""Every kind of this version, in the order their CRDs are written."""

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "DataDomain",
    "DataDomainSpec",
    "DataDomainStatus",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "KindInfo",
    "KubeModel",
    "KubeResource",
    "ModelArtifact",
    "ModelArtifactSpec",
    "ModelArtifactStatus",
    "PrinterColumn",
    "Promotion",
    "parse_duration",
]
