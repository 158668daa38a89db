"""The only modules that talk to the outside world (the API server, Vault, signers)."""
