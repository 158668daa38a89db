"""sealtune: the operator that fine-tunes LLMs on sensitive data inside the boundary that owns it."""

__version__ = "0.1.0"
