"""Thin kopf registrations: indexes, triggers and the admission webhook. Importing this package
registers them; the logic lives in reconcile, policy, builders and status."""

from . import indexes, webhook

__all__ = ["indexes", "webhook"]
