"""The two ways signing can go wrong, kept apart so callers can tell a refusal to sign (bad
input, an unreachable or unsuitable key) from a signature or file that does not verify."""


class SigningError(ValueError):
    """The files or the key were refused, or the key could not be used; nothing was signed."""


class VerificationError(ValueError):
    """A bundle, its signature or the files it covers did not verify."""
