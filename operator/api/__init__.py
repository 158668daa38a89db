"""sealtune's Kubernetes API: the typed models every other module builds on.

Each version lives in its own subpackage (``sealtune.api.v1alpha1``); the models there are the
single source of truth from which ``sealtune.crdgen`` writes the CRDs in ``crds/``.
"""
