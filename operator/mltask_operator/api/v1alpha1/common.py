"""Shared model base, Kubernetes value types and schema markers used by every v1alpha1 kind."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP = "mltask.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "ml"

#: Status text (messages of status, steps and conditions) is cut to this many characters.
MAX_MESSAGE_LENGTH = 32768
#: A URI or identifier in status (outputs.uri, outputs.id).
MAX_STATUS_URI_LENGTH = 4096
#: A Kubernetes object name (DNS subdomain).
MAX_OBJECT_NAME_LENGTH = 253
#: A label value, and the label values a selector names.
MAX_LABEL_VALUE_LENGTH = 63
#: A label key: [prefix/]name, 253 + 1 + 63.
MAX_LABEL_KEY_LENGTH = 317
#: Conditions of a status (the kinds' own types, Archived, Cached, MetricsValid; room to grow).
MAX_CONDITIONS = 16
#: A short enumeration-like string (an operator, an effect, a policy).
MAX_WORD_LENGTH = 16

#: Bounded strings for list items and map values (a namespace name is a label-sized DNS label).
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE_LENGTH)]
LabelKey = Annotated[str, Field(max_length=MAX_LABEL_KEY_LENGTH)]
ObjectName = Annotated[str, Field(max_length=MAX_OBJECT_NAME_LENGTH)]

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

_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
           "m": 10**-3, "u": 10**-6, "n": 10**-9}


def quantity_value(quantity: int | str) -> float:
    """A quantity's value ("10Gi" -> 10737418240, "500m" -> 0.5, "1e3" -> 1000); ValueError
    if it is not one."""
    text = str(quantity).strip().lstrip("+")
    if "e" in text.lower() and not text.endswith(("Ei", "E")):
        return float(text)
    number = text.rstrip("kMGTPEimun")
    suffix = text[len(number):]
    if suffix not in _SUFFIX or not number:
        raise ValueError(f"not a quantity: {quantity!r}")
    return float(number) * _SUFFIX[suffix]


Time = Annotated[
    datetime.datetime,
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def cel(rule: str, message: str, *, field_path: str | None = None,
        reason: str | None = None, message_expression: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; `message` is the fallback of a
    `message_expression` (a CEL string expression) that fails to evaluate."""
    out: JsonDict = {"rule": rule, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
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
    status: str = Field(description="True, False or Unknown.", max_length=MAX_WORD_LENGTH,
                        pattern="^(True|False|Unknown)$")
    reason: str = Field(description="Machine-readable CamelCase reason for the last transition.",
                        max_length=1024)
    message: str = Field(default="", description="Human-readable details of the transition.",
                         max_length=MAX_MESSAGE_LENGTH)
    last_transition_time: Time = Field(
        description="When the condition last changed from one status to another.")
    observed_generation: int | None = Field(
        default=None, ge=0,
        description="The .metadata.generation that the condition was set based upon.")


class Toleration(Model):
    """A pod toleration (corev1.Toleration)."""

    key: str | None = Field(default=None, max_length=MAX_LABEL_KEY_LENGTH,
                            description="Taint key the toleration applies to; "
                            "empty with operator Exists matches all taints.")
    operator: str | None = Field(default=None, description="Exists or Equal (default Equal).",
                                 max_length=MAX_WORD_LENGTH, pattern="^(Exists|Equal)$")
    value: str | None = Field(default=None, max_length=MAX_LABEL_VALUE_LENGTH,
                              description="Taint value to match with Equal.")
    effect: str | None = Field(default=None, max_length=MAX_WORD_LENGTH,
                               description="NoSchedule, PreferNoSchedule or NoExecute; "
                               "empty matches all effects.",
                               pattern="^(NoSchedule|PreferNoSchedule|NoExecute)?$")
    toleration_seconds: int | None = Field(
        default=None, description="For NoExecute: how long the pod stays bound after the taint.")


# ------------------------------------------------------------------ affinity (corev1.Affinity)
# Typed here, not passed through as an open object, so a mistake is refused at apply with the
# field's path, instead of later when Argo's schema refuses the Workflow.

_LABEL_KEY = MAX_LABEL_KEY_LENGTH


class NodeSelectorRequirement(Model):
    """A node label (or field) requirement: key, operator, values."""

    key: str = Field(description="Label key, e.g. nvidia.com/gpu.product.", min_length=1,
                     max_length=_LABEL_KEY)
    operator: str = Field(description="In, NotIn, Exists, DoesNotExist, Gt or Lt.",
                          max_length=MAX_WORD_LENGTH,
                          pattern="^(In|NotIn|Exists|DoesNotExist|Gt|Lt)$")
    # a node name (matchFields metadata.name) or a label value
    values: list[ObjectName] | None = Field(
        default=None, max_length=64, description="Values for In and NotIn; one integer for Gt "
        "and Lt; empty otherwise.")


class NodeSelectorTerm(Model):
    """Node requirements that must all hold (AND)."""

    match_expressions: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Requirements on node labels.")
    match_fields: list[NodeSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Requirements on node fields "
        "(metadata.name).")


class NodeSelector(Model):
    """Node selector terms, any of which may match (OR)."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=32, description="The terms; a node must match one of them.")


class PreferredSchedulingTerm(Model):
    """A weighted node preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The node requirements preferred.")


class NodeAffinity(Model):
    """Which nodes the pods may or should run on."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pods must run on.")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = \
        Field(default=None, max_length=32, description="Nodes the pods should run on.")


class LabelSelectorRequirement(Model):
    """A label requirement: key, operator, values."""

    key: str = Field(description="Label key.", min_length=1, max_length=_LABEL_KEY)
    operator: str = Field(description="In, NotIn, Exists or DoesNotExist.",
                          max_length=MAX_WORD_LENGTH, pattern="^(In|NotIn|Exists|DoesNotExist)$")
    values: list[LabelValue] | None = Field(default=None, max_length=64,
                                     description="Values for In and NotIn; empty otherwise.")


class LabelSelector(Model):
    """A label selector (metav1.LabelSelector)."""

    match_labels: dict[str, LabelValue] | None = Field(
        default=None, description="Labels that must all be present with these values.",
        json_schema_extra={"maxProperties": 32})
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=32, description="Requirements that must all hold.")


class PodAffinityTerm(Model):
    """Pods (by label) near which the pods run, within a topology domain."""

    label_selector: LabelSelector | None = Field(default=None,
                                                 description="The pods to be near (or apart).")
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces of those pods, by label.")
    namespaces: list[LabelValue] | None = Field(default=None, max_length=64,
                                         description="Namespaces of those pods, by name.")
    topology_key: str = Field(min_length=1, max_length=_LABEL_KEY,
                              description="Node label defining the domain, e.g. "
                              "kubernetes.io/hostname or topology.kubernetes.io/zone.")
    match_label_keys: list[LabelKey] | None = Field(
        default=None, max_length=32, description="Pod label keys whose values must match "
        "those of the incoming pod.")
    mismatch_label_keys: list[LabelKey] | None = Field(
        default=None, max_length=32, description="Pod label keys whose values must differ "
        "from those of the incoming pod.")


class WeightedPodAffinityTerm(Model):
    """A weighted pod (anti-)affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The preference.")


class PodAffinity(Model):
    """Pods the task's pods must or should run near (or, for anti-affinity, apart from)."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        default=None, max_length=32, description="Terms that must hold.")
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = \
        Field(default=None, max_length=32, description="Terms that should hold.")


class Affinity(Model):
    """Pod scheduling constraints (corev1.Affinity)."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None,
                                                  description="Pod anti-affinity.")


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


#: A name that looks like a credential: a whole word of snake/kebab/dotted case
#: (`HF_TOKEN`, `aws.secret.key`) or a capitalised camelCase word (`hfToken`, `openaiApiKey`).
#: Whole words only, so `TOKENIZERS_PARALLELISM`, `max_tokens` or `tokenizer` are not credentials.
#: RE2 syntax (CEL's `matches`), also valid for Python's `re`.
_CREDENTIAL_WORDS = ("secret|password|passwd|token|api[_.-]?key|access[_.-]?key|private[_.-]?key"
                     "|credentials?")
CREDENTIAL_NAME = (rf"(?i:(^|[_.-])({_CREDENTIAL_WORDS})([_.-]|$))"
                   r"|(Secret|Password|Passwd|Token|ApiKey|AccessKey|PrivateKey|Credentials?)"
                   r"([A-Z_.-]|$)")


class EnvVar(Model):
    """An environment variable for a step's container."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!(has(self.value) && has(self.valueFrom))", "set either value or valueFrom, not both"),
        cel(f"!has(self.value) || !self.name.matches('{CREDENTIAL_NAME}')",
            "credentials must come from a Secret: use valueFrom.secretKeyRef instead of value",
            field_path=".value", reason="FieldValueForbidden"),
    ]})

    name: str = Field(description="Variable name.", min_length=1, max_length=128)
    value: str | None = Field(default=None, description="Literal value. Variables whose name "
                              "looks like a credential must use valueFrom.", max_length=32768)
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a Secret or ConfigMap.")


def _extended(k: str) -> str:
    """CEL: `k` names an extended resource (a vendor's `domain/name` outside kubernetes.io, or
    the `gpu` alias the operator translates), which Kubernetes counts only in whole units."""
    return (f"({k} == 'gpu' || ({k}.contains('/') && !{k}.startsWith('kubernetes.io/')"
            f" && !{k}.split('/')[0].endsWith('.kubernetes.io')"
            f" && !{k}.startsWith('requests.')))")


def _whole_units(field: str) -> JsonDict:
    value = f"string(self.{field}[k])"
    return cel(f"!has(self.{field}) || self.{field}.all(k, !{_extended('k')}"
               f" || !isQuantity({value}) || quantity({value}).isInteger())",
               "extended resources such as nvidia.com/gpu are counted in whole units: use an "
               "integer, e.g. 1 (the API server refuses a pod asking for a fraction)",
               field_path=f".{field}", reason="FieldValueInvalid")


class ResourceRequirements(Model):
    """Compute resources of a step's container, GPUs included (e.g. limits: nvidia.com/gpu: 1)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        _whole_units("limits"),
        _whole_units("requests"),
        cel("!has(self.requests) || !has(self.limits) || self.requests.all(k, "
            f"!{_extended('k')} || !(k in self.limits)"
            " || !isQuantity(string(self.requests[k])) || !isQuantity(string(self.limits[k]))"
            " || quantity(string(self.requests[k])).compareTo("
            "quantity(string(self.limits[k]))) == 0)",
            "an extended resource such as nvidia.com/gpu cannot be overcommitted: its request "
            "must equal its limit (or set only the limit)",
            field_path=".requests", reason="FieldValueInvalid"),
    ]})

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. cpu: 4, memory: 16Gi.",
        json_schema_extra={"maxProperties": 32})
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources; GPUs go here, e.g. nvidia.com/gpu: 1.",
        json_schema_extra={"maxProperties": 32})


class Capabilities(Model):
    """Linux capabilities to add to a step's container (all are dropped first)."""

    add: list[str] | None = Field(
        default=None, max_length=16,
        description="Capabilities to add, e.g. SYS_PTRACE. Pod Security restricted allows "
        "only NET_BIND_SERVICE.",
        json_schema_extra={"items": {"type": "string", "pattern": "^[A-Z_]+$",
                                     "maxLength": 64}})


class SecurityContext(Model):
    """Who a step's container runs as. By default a step runs as its image's (non-root) user
    with no privilege escalation, all capabilities dropped and the RuntimeDefault seccomp
    profile: what Pod Security `restricted` asks. An image that needs root says so here."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!(has(self.runAsUser) && self.runAsUser == 0 && has(self.runAsNonRoot)"
            " && self.runAsNonRoot)",
            "runAsUser 0 is root: it cannot go with runAsNonRoot: true",
            field_path=".runAsNonRoot", reason="FieldValueInvalid"),
        cel("!(has(self.privileged) && self.privileged && has(self.allowPrivilegeEscalation)"
            " && !self.allowPrivilegeEscalation)",
            "a privileged container always allows privilege escalation: leave "
            "allowPrivilegeEscalation out or set it true",
            field_path=".allowPrivilegeEscalation", reason="FieldValueInvalid"),
    ]})

    run_as_user: int | None = Field(
        default=None, ge=0, le=2147483647,
        description="UID to run as instead of the image's user. 0 runs as root (and sets "
        "runAsNonRoot false): only where the namespace's Pod Security allows it (baseline or "
        "privileged).")
    run_as_group: int | None = Field(default=None, ge=0, le=2147483647,
                                     description="GID to run as instead of the image's group.")
    run_as_non_root: bool | None = Field(
        default=None, description="Refuse to start as root (default true; false lets an "
        "image whose user is root run as root).")
    allow_privilege_escalation: bool | None = Field(
        default=None, description="Let a process gain more privileges than its parent "
        "(setuid binaries such as sudo); default false.")
    privileged: bool | None = Field(default=None,
                                    description="Run privileged (Pod Security privileged only).")
    read_only_root_filesystem: bool | None = Field(
        default=None, description="Mount the image's root filesystem read-only.")
    capabilities: Capabilities | None = Field(default=None,
                                              description="Capabilities to add back.")


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
