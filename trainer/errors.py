"""Failures the trainer knows how to explain. Each carries a CamelCase reason (the operator
copies it into a condition) and the process exit code; messages never quote data or secrets.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_DATA_REJECTED = 3


class TrainerError(Exception):
    """A failure with a reason for the operator and an exit code for Kubernetes."""

    reason = "TrainerFailed"
    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class ConfigRefused(TrainerError):
    """The configuration is invalid or asks for something this machine cannot do."""

    reason = "ConfigRefused"
    exit_code = EXIT_REFUSED


class DataRejected(TrainerError):
    """The data set failed verification (digest, size, listing, authentication or shape)."""

    reason = "DataRejected"
    exit_code = EXIT_DATA_REJECTED
