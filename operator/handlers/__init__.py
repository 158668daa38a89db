"""Thin kopf registrations. Importing a module registers its handlers: `indexes` always, and
`webhook` only when the operator serves admission (kopf refuses admission handlers without a
server)."""
