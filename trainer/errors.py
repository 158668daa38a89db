"""Failures the trainer knows how to explain. Each carries a CamelCase reason (the operator
copies it into a condition) and the process exit code; messages never quote data or secrets.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_DATA_REJECTED = 3
EXIT_MODEL_REJECTED = 4
EXIT_OUTPUT_REFUSED = 5
PERMANENT_EXIT_CODES = (EXIT_REFUSED, EXIT_DATA_REJECTED, EXIT_MODEL_REJECTED, EXIT_OUTPUT_REFUSED)
"""Exit codes no retry can fix: the operator's podFailurePolicy fails the Job on them at once."""


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


class ModelRejected(TrainerError):
    """The base model failed verification (manifest digest, a file's size or sha256, an
    unlisted file, a symlink or a special file): none of it is loaded."""

    reason = "ModelRejected"
    exit_code = EXIT_MODEL_REJECTED


class OutputRefused(TrainerError):
    """Something already occupies where the outputs go (an earlier run's directory) or a
    symlink that this process could have planted lies on the way to them."""

    reason = "OutputRefused"
    exit_code = EXIT_OUTPUT_REFUSED
