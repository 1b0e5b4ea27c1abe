"""The kinds the operator and the kubectl plugin read and write: how messages name each and
where the API serves it."""

from __future__ import annotations

from dataclasses import dataclass

from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1 import pipeline as pipeline_api
from mltask_operator.api.v1alpha1.common import GROUP, VERSION


@dataclass(frozen=True)
class Kind:
    """A kind: its name, its singular and plural (the URL's), its group and version."""

    kind: str
    singular: str
    plural: str
    group: str = ""
    version: str = "v1"

    @property
    def qualified(self) -> str:
        """`plural.group`, as kubectl names a custom resource (`mltasks.mltask.dev`)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


MLTASK = Kind(mltask_api.KIND, mltask_api.SINGULAR, mltask_api.PLURAL, GROUP, VERSION)
PIPELINE = Kind(pipeline_api.KIND, pipeline_api.SINGULAR, pipeline_api.PLURAL, GROUP, VERSION)
WORKFLOW = Kind("Workflow", "workflow", "workflows", "argoproj.io", "v1alpha1")
PVC = Kind("PersistentVolumeClaim", "persistentvolumeclaim", "persistentvolumeclaims")
POD = Kind("Pod", "pod", "pods")
POD_LOG = Kind("Pod", "pod", "pods/log")
#: The operator's own kinds, by name (the cache's and the Events' `kind`).
BY_NAME = {k.kind: k for k in (MLTASK, PIPELINE, WORKFLOW)}
