"""Shared model base, Kubernetes value types and schema markers used by every v1alpha1 kind."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "mltask.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "ml"

QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

#: A non-negative Kubernetes resource quantity: "4", 4, "16Gi", "500m".
Quantity = Annotated[
    int | str,
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 64,
            "minimum": 0,
        }
    ),
]

#: An object whose schema is Kubernetes' own (e.g. corev1.Affinity); kept as-is.
OpenObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]

Time = Annotated[
    datetime.datetime,
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def cel(rule: str, message: str, *, field_path: str | None = None,
        reason: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


class Model(BaseModel):
    """Base for API types: camelCase on the wire, unknown fields refused, None left out."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: str = Field(description="Name of the referenced object.", min_length=1,
                      max_length=253, pattern=DNS_SUBDOMAIN)


class Condition(Model):
    """A Kubernetes API condition (metav1.Condition)."""

    type: str = Field(description="Type of condition in CamelCase, e.g. Succeeded.",
                      max_length=316)
    status: str = Field(description="True, False or Unknown.", pattern="^(True|False|Unknown)$")
    reason: str = Field(description="Machine-readable CamelCase reason for the last transition.",
                        max_length=1024)
    message: str = Field(default="", description="Human-readable details of the transition.",
                         max_length=32768)
    last_transition_time: Time = Field(
        description="When the condition last changed from one status to another.")
    observed_generation: int | None = Field(
        default=None, ge=0,
        description="The .metadata.generation that the condition was set based upon.")


class Toleration(Model):
    """A pod toleration (corev1.Toleration)."""

    key: str | None = Field(default=None, description="Taint key the toleration applies to; "
                            "empty with operator Exists matches all taints.")
    operator: str | None = Field(default=None, description="Exists or Equal (default Equal).",
                                 pattern="^(Exists|Equal)$")
    value: str | None = Field(default=None, description="Taint value to match with Equal.")
    effect: str | None = Field(default=None,
                               description="NoSchedule, PreferNoSchedule or NoExecute; "
                               "empty matches all effects.",
                               pattern="^(NoSchedule|PreferNoSchedule|NoExecute)?$")
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint.")


class SecretKeySelector(Model):
    """A key of a Secret in the task's namespace."""

    name: str = Field(description="Name of the Secret.", max_length=253)
    key: str = Field(description="Key within the Secret.", max_length=253)
    optional: bool | None = Field(default=None, description="Whether the Secret or key may be "
                                  "missing.")


class ConfigMapKeySelector(Model):
    """A key of a ConfigMap in the task's namespace."""

    name: str = Field(description="Name of the ConfigMap.", max_length=253)
    key: str = Field(description="Key within the ConfigMap.", max_length=253)
    optional: bool | None = Field(default=None, description="Whether the ConfigMap or key may "
                                  "be missing.")


class EnvVarSource(Model):
    """Where an environment variable's value comes from."""

    secret_key_ref: SecretKeySelector | None = Field(
        default=None, description="A key of a Secret (use this for credentials).")
    config_map_key_ref: ConfigMapKeySelector | None = Field(
        default=None, description="A key of a ConfigMap.")


CREDENTIAL_NAME = (r"(?i).*(secret|password|passwd|token|api_?key|access_?key|private_?key"
                   r"|credential).*")


class EnvVar(Model):
    """An environment variable for a step's container."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!(has(self.value) && has(self.valueFrom))", "set either value or valueFrom, not both"),
        cel(f"!has(self.value) || !self.name.matches('{CREDENTIAL_NAME}')",
            "credentials must come from a Secret: use valueFrom.secretKeyRef instead of value",
            field_path=".value", reason="FieldValueForbidden"),
    ]})

    name: str = Field(description="Variable name.", min_length=1, max_length=256)
    value: str | None = Field(default=None, description="Literal value. Variables whose name "
                              "looks like a credential must use valueFrom.", max_length=32768)
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a Secret or ConfigMap.")


class ResourceRequirements(Model):
    """Compute resources of a step's container, GPUs included (e.g. limits: nvidia.com/gpu: 1)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. cpu: 4, memory: 16Gi.",
        json_schema_extra={"maxProperties": 32})
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources; GPUs go here, e.g. nvidia.com/gpu: 1.",
        json_schema_extra={"maxProperties": 32})


class Resource(Model):
    """Base of a kind: apiVersion, kind and metadata as the API server returns them."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(default=API_VERSION, description="API version.")
    kind: str = Field(description="Kind.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Object metadata.")

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    def owner_reference(self) -> dict[str, Any]:
        """A controller reference to this object, for the children it owns."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
