"""API group mltask.dev, version v1alpha1: MLTask (and Pipeline)."""

from mltask_operator.api.v1alpha1.common import API_VERSION, CATEGORY, GROUP, VERSION

__all__ = ["API_VERSION", "CATEGORY", "GROUP", "VERSION"]
