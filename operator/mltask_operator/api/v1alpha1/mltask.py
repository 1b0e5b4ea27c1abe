"""The MLTask kind: spec, status and the cross-field rules the API server enforces (CEL)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict, JsonValue

from mltask_operator.api.v1alpha1.common import (
    CREDENTIAL_NAME,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_CONDITIONS,
    MAX_MESSAGE_LENGTH,
    MAX_OBJECT_NAME_LENGTH,
    MAX_STATUS_URI_LENGTH,
    MAX_WORD_LENGTH,
    Affinity,
    Condition,
    EnvVar,
    LabelValue,
    LocalObjectReference,
    Model,
    ObjectName,
    Quantity,
    Resource,
    ResourceRequirements,
    SecurityContext,
    Time,
    Toleration,
    cel,
)

KIND = "MLTask"
PLURAL = "mltasks"
SINGULAR = "mltask"
SHORT_NAMES = ["mlt"]
#: Workflow, PVC and pod names are derived from the task name; keep room for suffixes.
MAX_NAME_LENGTH = 48
#: Metrics status carries (a run step's metrics file may hold more: the rest is dropped).
MAX_METRICS = 100
MAX_METRIC_NAME_LENGTH = 128
#: A step's command item, argument, and an inline config parameter's value.
MAX_COMMAND_LENGTH = 4096
MAX_ARG_LENGTH = 32768
MAX_PARAMETER_VALUE_LENGTH = 32768
#: A step's log tail in status.
MAX_LOG_TAIL_LENGTH = 4096
#: Argo's phase of a step, and a duration (1h2m3s) in spec or status.
MAX_PHASE_LENGTH = 32
MAX_DURATION_LENGTH = 32
_SHA256_LENGTH = 64


class TaskType(StrEnum):
    PREPROCESSING = "preprocessing"
    TRAINING = "training"
    OPTIMIZATION = "optimization"


class DatasetKind(StrEnum):
    PROJECT = "project"
    APPLICATION = "application"


class OutputDatasetType(StrEnum):
    TRAINING = "training"
    OPTIMIZATION = "optimization"


class RetryOn(StrEnum):
    ALWAYS = "Always"
    ON_ERROR = "OnError"
    ON_FAILURE = "OnFailure"
    ON_TRANSIENT_ERROR = "OnTransientError"


# ------------------------------------------------------------------------- transfer URIs
# What the project's own transfer steps (`mltask-transfer`, the default download and upload
# steps) can serve. RE2 syntax (CEL's `matches`), also valid for Python's `re`. They are a first
# gate at apply time; mltask_operator.transfer.uris parses the same forms at run time.

_S3 = r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\x00-\x1f]*)?"  # keys may hold spaces
_HTTPS = r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/\S*[^\s/]"
_HF = (r"hf://((datasets|models|spaces)/)?([A-Za-z0-9][A-Za-z0-9._-]*/)?"
       r"[A-Za-z0-9][A-Za-z0-9._-]*(@[^\s/]+)?(/\S*)?")
#: A path on a PersistentVolumeClaim of the task's namespace, read in place (no download):
#: pvc://claim/path (the claim's name is a DNS subdomain).
_PVC = r"pvc://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(/[^\x00-\x1f]*)?"
PVC_URI = f"^{_PVC}$"
PVC_SCHEME = "pvc://"
#: Inputs the default download step fetches: s3://bucket/key, s3://bucket/folder/,
#: https://host/path/file (http:// too, for in-cluster mirrors),
#: hf://[datasets/]org/name[@revision][/path]; and pvc://claim/path, which it leaves in place
#: for the run step to read (mounted read-only).
DOWNLOAD_URI = f"^({_S3}|{_HTTPS}|{_HF}|{_PVC})$"
#: Where the default upload step stores the output: s3://bucket/folder/ or s3://bucket/key.
UPLOAD_URI = f"^{_S3}$"
DOWNLOAD_FORMS = ("s3://bucket/key, s3://bucket/folder/, https://host/path/file or "
                  "hf://[datasets/]org/name[@revision][/path] (and pvc://claim/path is read in "
                  "place)")


# ------------------------------------------------------------------------------------ inputs

_ONE_SOURCE: list[JsonValue] = [
    cel("has(self.uri) != has(self.fromTask)",
        "set exactly one of uri or fromTask", reason="FieldValueInvalid"),
    cel(f"!has(self.uri) || !self.uri.startsWith('{PVC_SCHEME}')"
        f" || (self.uri.matches(r'{PVC_URI}') && !self.uri.matches(r'/\\.\\.?(/|$)'))",
        "a pvc:// input is pvc://CLAIM/PATH: CLAIM a PersistentVolumeClaim of the namespace, "
        "PATH without '.' or '..' segments", field_path=".uri", reason="FieldValueInvalid"),
]


class DatasetInput(Model):
    """The dataset the task reads: a URI, or the dataset another task produced."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _ONE_SOURCE})

    uri: str | None = Field(default=None, max_length=2048,
                            description="Where the dataset is, e.g. "
                            "s3://bucket/datasets/digits.csv.gz, or pvc://CLAIM/PATH: a path "
                            "on a PersistentVolumeClaim of the namespace, not downloaded: "
                            "the run step mounts the claim read-only and "
                            "$MLTASK_INPUT_DATASET_DIR is that path.")
    from_task: str | None = Field(default=None, max_length=253,
                                  description="The task whose output dataset to use (it must "
                                  "have completed). In an MLTask: the name of an MLTask in this "
                                  "namespace; in a Pipeline: the name of a preprocessing task of "
                                  "the pipeline.")
    kind: DatasetKind | None = Field(default=None,
                                     description="Kind of dataset: project (for training) or "
                                     "application (for optimization).")
    unpack: bool | None = Field(default=None,
                                description="Unpack the downloaded archive (.zip, .tar, .tar.gz, "
                                ".tgz, .tar.bz2, .tar.xz) into the input folder. Off by default: "
                                "archives are kept as they are.")
    sha256: str | None = Field(
        default=None, max_length=_SHA256_LENGTH, pattern="^[a-f0-9]{64}$",
        description="SHA-256 of the dataset (lowercase hex), if known: part of the cache key "
        "(spec.cache), so a changed dataset is never taken for the one a finished task read. A "
        "Pipeline fills it in from the upstream task's status.outputs.sha256.")


class ModelInput(Model):
    """The model an optimization starts from: a URI, or the model another task produced."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _ONE_SOURCE})

    uri: str | None = Field(default=None, max_length=2048,
                            description="Where the model is, e.g. s3://bucket/models/model.joblib, "
                            "or pvc://CLAIM/PATH, read in place like a dataset's.")
    from_task: str | None = Field(default=None, max_length=253,
                                  description="The task whose output model to use (it must "
                                  "have completed). In an MLTask: the name of an MLTask in this "
                                  "namespace; in a Pipeline: the name of a training or "
                                  "optimization task of the pipeline.")
    unpack: bool | None = Field(default=None,
                                description="Unpack the downloaded archive (.zip, .tar, .tar.gz, "
                                ".tgz, .tar.bz2, .tar.xz) into the input folder. Off by default.")
    sha256: str | None = Field(
        default=None, max_length=_SHA256_LENGTH, pattern="^[a-f0-9]{64}$",
        description="SHA-256 of the model (lowercase hex), if known: part of the cache key "
        "(spec.cache), so a changed model is never taken for the one a finished task read. A "
        "Pipeline fills it in from the upstream task's status.outputs.sha256.")


#: What a task reads, by the kind of output each input takes from an upstream task.
INPUT_KINDS = ("dataset", "model")


def input_upstreams(inputs: Mapping[str, Any]) -> dict[str, str]:
    """The upstream task each input of a spec's `input` (as the API serves it) names with
    fromTask, by kind ("dataset", "model"): the one place that reads them."""
    return {kind: str(src["fromTask"]) for kind in INPUT_KINDS
            if isinstance(src := inputs.get(kind), Mapping) and src.get("fromTask")}


class Inputs(Model):
    """What the download step fetches into the working volume."""

    dataset: DatasetInput = Field(description="The input dataset.")
    model: ModelInput | None = Field(default=None,
                                     description="The trained model to start from "
                                     "(optimization only).")

    def upstreams(self) -> dict[str, str]:
        """input_upstreams of these inputs."""
        return input_upstreams(self.model_dump(by_alias=True, exclude_none=True))


class ConfigSpec(Model):
    """Task configuration: a ConfigMap mounted into every step and/or inline parameters."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(f"!has(self.parameters) || self.parameters.all(k, !k.matches('{CREDENTIAL_NAME}'))",
            "credentials must come from a Secret (storage.secretRef, or a step's env with "
            "valueFrom.secretKeyRef), not config.parameters, which every step sees",
            field_path=".parameters", reason="FieldValueForbidden"),
    ]})

    config_map_ref: LocalObjectReference | None = Field(
        default=None, description="ConfigMap mounted read-only at $MLTASK_CONFIG_DIR.")
    parameters: dict[str, Annotated[str, Field(max_length=MAX_PARAMETER_VALUE_LENGTH)]] | None = \
        Field(default=None, description="Inline parameters, passed to every step as JSON in "
        "$MLTASK_PARAMETERS (e.g. epochs: \"10\"). Never credentials: keys that look like one "
        "(token, password, api_key...) are refused.",
        json_schema_extra={"maxProperties": 256})


# ------------------------------------------------------------------------------------- steps


class StepSpec(Model):
    """A container that performs one step."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(r"!self.image.matches(r'\s')",
            "image must be an image reference without spaces, e.g. ghcr.io/org/train:1.0",
            field_path=".image", reason="FieldValueInvalid"),
    ]})

    image: str = Field(min_length=1, max_length=1024, description="Container image.")
    command: list[Annotated[str, Field(max_length=MAX_COMMAND_LENGTH)]] | None = Field(
        default=None, max_length=64,
        description="Entrypoint. Set it: without it Argo's executor must look the image's "
        "entrypoint up in the registry, which fails for private or unreachable registries.")
    args: list[Annotated[str, Field(max_length=MAX_ARG_LENGTH)]] | None = Field(
        default=None, max_length=256,
                                   description="Arguments to the entrypoint.")
    env: list[EnvVar] | None = Field(default=None, max_length=64,
                                     description="Extra environment variables, after the "
                                     "MLTASK_* contract variables.")
    resources: ResourceRequirements | None = Field(default=None,
                                                   description="CPU, memory and GPU resources.")
    image_pull_policy: str | None = Field(default=None, max_length=MAX_WORD_LENGTH,
                                          pattern="^(Always|IfNotPresent|Never)$",
                                          description="Always, IfNotPresent or Never.")
    security_context: SecurityContext | None = Field(
        default=None, description="Who the container runs as. Left out, it runs as its "
        "image's user, which must not be root (Pod Security restricted); an image that needs "
        "root sets runAsUser: 0 here, in a namespace whose Pod Security allows it.")


class Steps(Model):
    """The three containers of a task, each run as its own pod, in order."""

    download: StepSpec | None = Field(
        default=None, description="Fetches the inputs into $MLTASK_INPUT_DIR. Leave it out to "
        "use the project's own transfer step (s3://, https://, hf://).")
    run: StepSpec = Field(description="The user's image: reads inputs, writes $MLTASK_OUTPUT_DIR "
                          "and optionally $MLTASK_METRICS_FILE.")
    upload: StepSpec | None = Field(
        default=None, description="Stores $MLTASK_OUTPUT_DIR and writes $MLTASK_RESULT_FILE "
        "(uri, size, sha256). Leave it out to use the project's own transfer step (s3://).")


# ------------------------------------------------------------------------------------ output


class DatasetOutput(Model):
    """The dataset a preprocessing task produces."""

    name: str = Field(min_length=1, max_length=253, description="Dataset name.")
    description: str | None = Field(default=None, max_length=4096,
                                    description="Dataset description.")
    type: OutputDatasetType = Field(description="What the dataset is for: training or "
                                    "optimization.")
    file_extension: str = Field(default="zip", max_length=32, pattern=r"^[A-Za-z0-9.]+$",
                                description="File extension of the packaged dataset, e.g. zip.")


class ModelOutput(Model):
    """The model a training or optimization task produces."""

    name: str = Field(min_length=1, max_length=253, description="Model name.")
    description: str | None = Field(default=None, max_length=4096,
                                    description="Model description.")
    type: str | None = Field(default=None, max_length=253,
                             description="Model type or architecture, e.g. yolov8.")
    input_format: str | None = Field(default=None, max_length=253,
                                     description="Format of the input model, e.g. onnx.")
    output_format: str | None = Field(default=None, max_length=253,
                                      description="Numeric format of the produced model, "
                                      "e.g. float32, float16, int8.")
    file_extension: str = Field(default="pt", max_length=32, pattern=r"^[A-Za-z0-9.]+$",
                                description="File extension of the model file, e.g. pt or onnx.")


class Output(Model):
    """What the task produces and where the upload step stores it."""

    uri: str | None = Field(default=None, max_length=2048,
                            description="Where the upload step stores the output: a folder "
                            "s3://bucket/outputs/ (ending in /) or an exact key; passed to the "
                            "upload step as $MLTASK_OUTPUT_URI. Required with the default "
                            "upload step. $(run.name) and $(run.uid) stand for the run: the "
                            "Pipeline's name and uid for a task of a Pipeline, else the "
                            "task's own, so each run writes to a place of its own.")
    dataset: DatasetOutput | None = Field(default=None,
                                          description="Set for preprocessing tasks.")
    model: ModelOutput | None = Field(default=None,
                                      description="Set for training and optimization tasks.")


class StorageSpec(Model):
    """Object-store access for the download and upload steps. Credentials only by Secret."""

    secret_ref: LocalObjectReference = Field(
        description="Secret whose keys become environment variables of the download and upload "
        "steps (e.g. AWS_ACCESS_KEY_ID). The run step never sees them.")
    endpoint: str | None = Field(default=None, max_length=2048,
                                 description="Object-store endpoint URL, passed as "
                                 "$MLTASK_STORAGE_ENDPOINT.")


# ----------------------------------------------------------------------------------- runtime


class Backoff(Model):
    """Delay between automatic retries."""

    duration: str = Field(default="10s", max_length=MAX_DURATION_LENGTH,
                          pattern=r"^[0-9]+(s|m|h)$",
                          description="First delay, e.g. 10s.")
    factor: int = Field(default=2, ge=1, le=10, description="Multiplier for each later delay.")
    max_duration: str = Field(default="10m", max_length=MAX_DURATION_LENGTH,
                              pattern=r"^[0-9]+(s|m|h)$",
                              description="Stop retrying once this much time has passed.")


class RetryPolicy(Model):
    """Automatic retries of a step within one attempt."""

    limit: int = Field(default=3, ge=0, le=20, description="Retries per step.")
    retry_on: RetryOn = Field(
        default=RetryOn.ON_ERROR,
        description="OnError (default) retries pods the infrastructure took away — deleted, "
        "evicted, preempted, or on a node shutting down, e.g. GPU spot nodes — never the "
        "user's non-zero exit; Always retries both; OnFailure and OnTransientError are "
        "Argo's own (OnFailure: failed pods but not deleted ones).")
    backoff: Backoff = Field(default_factory=Backoff, description="Delay between retries.")


class WorkVolume(Model):
    """The working volume the steps share. Owned by the task, so it outlives each attempt."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel("!isQuantity(string(self.size))"
            " || quantity(string(self.size)).isGreaterThan(quantity('0'))",
            "size must be greater than zero, e.g. 50Gi", field_path=".size"),
    ]})

    size: Quantity = Field(default="10Gi", description="Requested size, e.g. 50Gi.")
    storage_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                           description="StorageClass; the cluster default if "
                                           "unset.")


class PodGCStrategy(StrEnum):
    """When Argo deletes the current attempt's pods (Argo's podGC strategies, and Never)."""

    ON_POD_COMPLETION = "OnPodCompletion"
    ON_POD_SUCCESS = "OnPodSuccess"
    ON_WORKFLOW_COMPLETION = "OnWorkflowCompletion"
    ON_WORKFLOW_SUCCESS = "OnWorkflowSuccess"
    NEVER = "Never"


class Cleanup(Model):
    """What the operator releases once the task no longer needs it."""

    keep_work_volume: bool | None = Field(
        default=None, description="Keep the working volume once the task completes. By "
        "default it is released (deleted) on completion; a failed or stopped task keeps it "
        "until it is retried, continued, archived or deleted.")
    pod_gc: PodGCStrategy | None = Field(
        default=None, alias="podGC", description="When Argo deletes the current attempt's pods: "
        "OnPodCompletion, OnPodSuccess, OnWorkflowCompletion, OnWorkflowSuccess (Argo's "
        "podGC strategies) or Never. Unset: the operator's default (chart value "
        "cleanup.podGC, Never unless set), so kubectl mltask logs keeps working. Pods of "
        "earlier attempts and of superseded automatic retries are deleted whatever this says.")


#: How long a finished task's outputs may be reused by default (spec.cache.maxAge): a week.
DEFAULT_CACHE_MAX_AGE = "168h"


class CacheSpec(Model):
    """Reuse of identical finished work: a task whose inputs, images, config and output equal
    those of a task that completed in the same namespace completes at once with its outputs."""

    enabled: bool = Field(default=False, description="Reuse the outputs of a completed task "
                          "of this namespace with the same cache key (type, inputs by URI and "
                          "sha256, step images, commands, args and env, config, output spec "
                          "and storage endpoint) instead of running: no Workflow, no pods. "
                          "Off by default. Only tasks that ran with caching on are reused.")
    max_age: str = Field(default=DEFAULT_CACHE_MAX_AGE, max_length=MAX_DURATION_LENGTH,
                         pattern=r"^[0-9]+(s|m|h)$",
                         description="Reuse only a task that completed at most this long ago, "
                         "e.g. 24h (default 168h).")


#: Where a data volume may not be mounted: the task's own folders and the system's.
RESERVED_MOUNT_PATHS = ("/mltask", "/etc/mltask", "/dev", "/proc", "/sys", "/etc", "/usr",
                        "/bin", "/sbin", "/lib", "/lib64", "/boot", "/run", "/var/run",
                        "/var/lib/kubelet")
_RESERVED = "|".join(p.lstrip("/") for p in RESERVED_MOUNT_PATHS)
#: A pod label key and value, as Kubernetes validates them (RE2).
LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
#: Label and annotation keys the operator sets on every pod (mltask.dev/*, managed-by); a task's
#: podLabels and podAnnotations cannot set them.
OWN_KEY_PREFIXES = ("mltask.dev/", "app.kubernetes.io/managed-by")
MAX_DATA_VOLUMES = 16
MAX_POD_LABELS = 32
MAX_ANNOTATION_VALUE_LENGTH = 4096


def _own_keys(field: str) -> JsonDict:
    test = " || ".join(f"k.startsWith('{p}')" for p in OWN_KEY_PREFIXES)
    return cel(f"!has(self.{field}) || self.{field}.all(k, !({test}))",
               f"{field}: keys mltask.dev/* and app.kubernetes.io/managed-by are the "
               "operator's own", field_path=f".{field}", reason="FieldValueForbidden")


class DataVolume(Model):
    """A PersistentVolumeClaim of the namespace mounted read-only into the run step: data
    already in the cluster, read in place."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        cel(f"self.mountPath.startsWith('/') && self.mountPath != '/'"
            f" && !self.mountPath.matches(r'^/({_RESERVED})(/|$)')"
            r" && !self.mountPath.matches(r'/\.\.?(/|$)')",
            "mountPath must be an absolute path other than /, not under "
            + ", ".join(RESERVED_MOUNT_PATHS) + ", without '.' or '..' segments",
            field_path=".mountPath", reason="FieldValueInvalid"),
        cel(r"!has(self.subPath) || (!self.subPath.startsWith('/')"
            r" && !self.subPath.matches(r'(^|/)\.\.?(/|$)'))",
            "subPath must be a relative path without '.' or '..' segments",
            field_path=".subPath", reason="FieldValueInvalid"),
    ]})

    name: str = Field(min_length=1, max_length=40, pattern=DNS_LABEL,
                      description="Name of the volume in the pod (a DNS label; the pod's "
                      "volume is data-NAME).")
    claim_name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN,
                            description="The PersistentVolumeClaim, in the task's namespace.")
    mount_path: str = Field(max_length=1024, description="Where the run step sees it, e.g. "
                            "/data; absolute, not under /mltask or a system folder.")
    sub_path: str | None = Field(default=None, max_length=1024,
                                 description="Only this folder of the volume.")


#: Rules on the pod settings of a runtime (a task's spec.runtime, a Pipeline's spec.defaults).
RUNTIME_RULES: list[JsonValue] = [
        cel("!has(self.sharedMemorySize) || !isQuantity(string(self.sharedMemorySize))"
            " || quantity(string(self.sharedMemorySize)).isGreaterThan(quantity('0'))",
            "sharedMemorySize must be greater than zero, e.g. 2Gi",
            field_path=".sharedMemorySize", reason="FieldValueInvalid"),
        cel("!has(self.volumes) || self.volumes.all(v, "
            "self.volumes.exists_one(w, w.mountPath == v.mountPath))",
            "volumes: each mountPath may be used once", field_path=".volumes",
            # not FieldValueDuplicate: the API server prints that as 'Duplicate value:
            # "object"', without this message
            reason="FieldValueInvalid"),
        _own_keys("podLabels"),
        _own_keys("podAnnotations"),
        cel("!has(self.podLabels) || self.podLabels.all(k, "
            f"k.matches(r'{LABEL_KEY}') && self.podLabels[k].matches(r'{LABEL_VALUE}'))",
            "podLabels: keys and values must be valid label keys and values",
            field_path=".podLabels", reason="FieldValueInvalid"),
        cel("!has(self.podAnnotations) || self.podAnnotations.all(k, "
            f"k.matches(r'{LABEL_KEY}'))",
            "podAnnotations: keys must be valid annotation keys",
            field_path=".podAnnotations", reason="FieldValueInvalid"),
]


class Runtime(Model):
    """Where and how the pods run."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": RUNTIME_RULES})

    node_selector: dict[str, LabelValue] | None = Field(
        default=None, description="Node labels every step's pod must match, e.g. a GPU pool.",
        json_schema_extra={"maxProperties": 64})
    tolerations: list[Toleration] | None = Field(default=None, max_length=64,
                                                 description="Tolerations for every step's pod.")
    affinity: Affinity | None = Field(default=None, description="Node and pod affinity of "
                                      "every step's pod (corev1.Affinity).")
    priority_class_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                            description="PriorityClass of the pods.")
    service_account_name: str | None = Field(default=None, max_length=253, pattern=DNS_SUBDOMAIN,
                                             description="ServiceAccount the pods run as.")
    active_deadline_seconds: int | None = Field(default=None, ge=1,
                                                description="Fail an attempt running longer "
                                                "than this.")
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy,
                                      description="Automatic retries of failed steps.")
    work_volume: WorkVolume = Field(default_factory=WorkVolume,
                                    description="The shared working volume.")
    shared_memory_size: Quantity | None = Field(
        default=None, description="Size of a memory-backed /dev/shm for the run step, e.g. "
        "2Gi (Kubernetes' default is 64 MiB; PyTorch DataLoader workers need more). It counts "
        "against the run step's memory limit. Unset: the operator's default (chart value "
        "taskDefaults.sharedMemorySize), else the runtime's 64 MiB.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets ({name: ...}, as in a pod spec; in "
                         "the task's namespace) every step's "
                         "pod pulls its image with, added to the operator's default (chart "
                         "value taskDefaults.imagePullSecrets).")
    volumes: list[DataVolume] | None = Field(
        default=None, max_length=MAX_DATA_VOLUMES, description="PersistentVolumeClaims "
        "mounted read-only into the run step (data already in the cluster).",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]})
    pod_labels: dict[str, LabelValue] | None = Field(
        default=None, description="Labels of every step's pod, e.g. "
        "kueue.x-k8s.io/queue-name: team-a. Only keys the task policy allows (chart value "
        "taskPolicy.podLabelKeys); never mltask.dev/* keys.",
        json_schema_extra={"maxProperties": MAX_POD_LABELS})
    pod_annotations: dict[str, Annotated[str, Field(
        max_length=MAX_ANNOTATION_VALUE_LENGTH)]] | None = Field(
        default=None, description="Annotations of every step's pod. Only keys the task policy "
        "allows (chart value taskPolicy.podAnnotationKeys).",
        json_schema_extra={"maxProperties": MAX_POD_LABELS})
    scheduler_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="The scheduler of every step's pod, e.g. volcano; unset: the operator's "
        "default (chart value taskDefaults.schedulerName), else the cluster's.")
    runtime_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="RuntimeClass of the run step's pod, e.g. nvidia; unset: the GPU default "
        "for a run step that requests GPUs (runStepDefaults.runtimeClassName), else the "
        "operator's default (taskDefaults.runtimeClassName).")


# -------------------------------------------------------------------------------------- spec


class PipelineReference(Model):
    """The Pipeline a task belongs to."""

    name: str = Field(min_length=1, max_length=63, pattern=DNS_LABEL,
                      description="Name of the Pipeline; it labels the task's Workflows and "
                      "pods (mltask.dev/pipeline), so it is a DNS label of at most 63 characters.")


#: Fields fixed once the task exists; only suspend, retryGeneration and description may change.
IMMUTABLE_FIELDS = ["type", "pipelineRef", "input", "config", "steps", "output", "storage",
                    "runtime"]


def _immutable(field: str) -> JsonDict:
    return cel(
        f"has(self.{field}) == has(oldSelf.{field}) && "
        f"(!has(self.{field}) || self.{field} == oldSelf.{field})",
        f"spec.{field} cannot change once the task exists; create a new MLTask instead",
        field_path=f".{field}", reason="FieldValueForbidden",
    )


#: Rules on what a task of each type needs; they hold for MLTasks and for Pipeline tasks.
TYPE_RULES: list[JsonValue] = [
    cel("self.type != 'optimization' || has(self.input.model)",
        "spec.input.model is required when type is optimization",
        field_path=".input", reason="FieldValueRequired"),
    cel("self.type == 'optimization' || !has(self.input.model)",
        "spec.input.model is only allowed when type is optimization",
        field_path=".input", reason="FieldValueForbidden"),
    cel("self.type != 'preprocessing' || has(self.output.dataset)",
        "spec.output.dataset is required when type is preprocessing",
        field_path=".output", reason="FieldValueRequired"),
    cel("self.type != 'preprocessing' || !has(self.output.model)",
        "spec.output.model is not allowed when type is preprocessing",
        field_path=".output", reason="FieldValueForbidden"),
    cel("self.type == 'preprocessing' || has(self.output.model)",
        "spec.output.model is required when type is training or optimization",
        field_path=".output", reason="FieldValueRequired"),
    cel("self.type == 'preprocessing' || !has(self.output.dataset)",
        "spec.output.dataset is only allowed when type is preprocessing",
        field_path=".output", reason="FieldValueForbidden"),
]

#: What the project's own transfer steps can serve, checked only where the task uses them.
TRANSFER_RULES: list[JsonValue] = [
    cel("has(self.steps.download) || !has(self.input.dataset.uri)"
        f" || self.input.dataset.uri.matches(r'{DOWNLOAD_URI}')",
        f"the default download step reads {DOWNLOAD_FORMS}; for another scheme set "
        "spec.steps.download to a step of your own",
        field_path=".input.dataset.uri", reason="FieldValueInvalid"),
    cel("has(self.steps.download) || !has(self.input.model) || !has(self.input.model.uri)"
        f" || self.input.model.uri.matches(r'{DOWNLOAD_URI}')",
        f"the default download step reads {DOWNLOAD_FORMS}; for another scheme set "
        "spec.steps.download to a step of your own",
        field_path=".input.model.uri", reason="FieldValueInvalid"),
    cel("has(self.steps.upload)"
        f" || (has(self.output.uri) && self.output.uri.matches(r'{UPLOAD_URI}'))",
        "the default upload step stores the output at s3://bucket/folder/ (ending in /) or "
        "s3://bucket/key: set spec.output.uri to one, or set spec.steps.upload to a step of "
        "your own", field_path=".output.uri", reason="FieldValueInvalid"),
]

def archived_rule(kind: str) -> JsonDict:
    """While archived, neither retry (retryGeneration up) nor continue (suspend true ->
    false); unarchiving in the same change is allowed."""
    return cel(
        "!(has(oldSelf.archived) && oldSelf.archived && has(self.archived) && self.archived)"
        " || ((!has(self.retryGeneration) || !has(oldSelf.retryGeneration)"
        " || self.retryGeneration == oldSelf.retryGeneration)"
        " && (!has(oldSelf.suspend) || !oldSelf.suspend || (has(self.suspend) && self.suspend)))",
        f"the {kind} is archived (spec.archived): unarchive it (spec.archived: false, or "
        f"kubectl mltask unarchive) before retrying or continuing it",
        field_path=".archived", reason="FieldValueForbidden")


_SPEC_RULES: list[JsonValue] = [
    *TYPE_RULES,
    *TRANSFER_RULES,
    *(_immutable(f) for f in IMMUTABLE_FIELDS),
    cel("!has(oldSelf.retryGeneration) || "
        "(has(self.retryGeneration) && self.retryGeneration >= oldSelf.retryGeneration)",
        "spec.retryGeneration may only increase", field_path=".retryGeneration",
        reason="FieldValueInvalid"),
    archived_rule("task"),
]


class TaskTemplate(Model):
    """What to run: type, inputs, config, the three steps, output, storage and runtime."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": [
        *TYPE_RULES, *TRANSFER_RULES]})

    type: TaskType = Field(description="preprocessing makes a dataset; training makes a model "
                           "from a dataset; optimization improves a model.")
    description: str | None = Field(default=None, max_length=4096,
                                    description="Free-text description of the task.")
    input: Inputs = Field(description="Inputs the download step fetches.")
    config: ConfigSpec | None = Field(default=None, description="Task configuration.")
    steps: Steps = Field(description="Images of the download, run and upload steps.")
    output: Output = Field(description="The dataset or model the task produces.")
    storage: StorageSpec | None = Field(default=None,
                                        description="Object-store access; credentials by Secret "
                                        "reference only.")
    runtime: Runtime = Field(default_factory=Runtime,
                             description="Scheduling, retries, deadline and working volume.")
    cleanup: Cleanup | None = Field(
        default=None, description="What is released once the task no longer needs it: the "
        "working volume on completion, pods by Argo's podGC. May change at any time.")
    cache: CacheSpec | None = Field(
        default=None, description="Reuse of identical finished work (off by default): read "
        "when the task starts; a retry or continue always runs.")


class MLTaskSpec(TaskTemplate):
    """Desired state of an MLTask."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    pipeline_ref: PipelineReference | None = Field(
        default=None, description="The Pipeline this task belongs to, if any.")
    suspend: bool = Field(default=False,
                          description="Stop the task (true) or continue it from the step that "
                          "did not finish (back to false).")
    retry_generation: int = Field(default=0, ge=0,
                                  description="Increase by one to retry a failed or stopped "
                                  "task: a new attempt starts from the first step.")
    archived: bool = Field(default=False,
                           description="Archive the task (true): it keeps its status, outputs "
                           "and metrics, its Workflows, pods and working volume are released "
                           "(an active task is stopped first), it is labelled "
                           "mltask.dev/archived and refuses retry and continue. false "
                           "unarchives it.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the task, and everything it owns, this many "
        "seconds after it completed or failed (the Kubernetes Job convention). Unset: the "
        "operator's default (chart value ttlSecondsAfterFinished), none unless set. Ignored "
        "for a Pipeline's tasks: they follow their Pipeline.")


# ------------------------------------------------------------------------------------ status


class Phase(StrEnum):
    """The task's state, as ML platforms report it."""

    INIT = "init"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RETRY = "retry"


#: Phases of a task (or pipeline) at work: a stop, its Workflow or a retry may still move it.
ACTIVE_PHASES = frozenset({Phase.INIT, Phase.RUNNING, Phase.RETRY, Phase.STOPPING})
#: Phases only a new attempt (retry, continue) leaves.
TERMINAL_PHASES = frozenset({Phase.COMPLETED, Phase.FAILED, Phase.STOPPED})
#: Phases of a task that ran to its end (not stopped): its TTL runs from then.
FINISHED_PHASES = frozenset({Phase.COMPLETED, Phase.FAILED})


class ExecuteStep(StrEnum):
    """Which step the task is at."""

    PREPARE_FILE = "prepare_file"
    DOWNLOAD = "download"
    RUN_TASK = "run_task"
    UPLOAD = "upload"
    DONE = "done"


class StepName(StrEnum):
    DOWNLOAD = "download"
    RUN = "run"
    UPLOAD = "upload"


STEP_ORDER = [StepName.DOWNLOAD, StepName.RUN, StepName.UPLOAD]
EXECUTE_STEP_OF = {
    StepName.DOWNLOAD: ExecuteStep.DOWNLOAD,
    StepName.RUN: ExecuteStep.RUN_TASK,
    StepName.UPLOAD: ExecuteStep.UPLOAD,
}


class StepStatus(Model):
    """What happened to one step (its latest pod)."""

    name: StepName = Field(description="download, run or upload.")
    phase: str = Field(description="Pending, Running, Succeeded, Failed, Error or Skipped.",
                       max_length=MAX_PHASE_LENGTH)
    attempt: int = Field(ge=1, description="The task attempt this entry belongs to.")
    pod: str | None = Field(default=None, max_length=MAX_OBJECT_NAME_LENGTH,
                            description="Name of the step's latest pod; read its "
                            "logs with kubectl logs POD -c main.")
    node_id: str | None = Field(default=None, max_length=MAX_OBJECT_NAME_LENGTH,
                                description="Argo node id of the step.")
    retries: int = Field(default=0, ge=0, description="Automatic retries within this attempt.")
    started_at: Time | None = Field(default=None, description="When the step started.")
    finished_at: Time | None = Field(default=None, description="When the step finished.")
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH,
                                description="Why the step failed, if it did.")
    exit_code: int | None = Field(default=None, description="Exit code of the main container.")
    log_tail: str | None = Field(
        default=None, max_length=MAX_LOG_TAIL_LENGTH,
        description="When the step failed: the last lines of its main container's log (at most "
        "20 lines, 2 KiB; the kubelet's termination message, FallbackToLogsOnError), kept here "
        "so the reason outlives the step's pods.")


class OutputStatus(Model):
    """The dataset or model the task produced, as the upload step reported it."""

    kind: str = Field(description="dataset or model.", max_length=MAX_WORD_LENGTH)
    name: str = Field(description="Name from spec.output.", max_length=MAX_OBJECT_NAME_LENGTH)
    id: str | None = Field(default=None, max_length=MAX_STATUS_URI_LENGTH,
                           description="Identifier reported by the upload step, "
                           "e.g. a registry id; defaults to the URI.")
    uri: str | None = Field(default=None, max_length=MAX_STATUS_URI_LENGTH,
                            description="Where the output was stored.")
    size: int | None = Field(default=None, ge=0, description="Size in bytes.")
    sha256: str | None = Field(default=None, max_length=_SHA256_LENGTH,
                               description="SHA-256 of the stored file (lowercase hex).")


class ReleasedStatus(Model):
    """What the operator released of the task, and when."""

    work_volume: str | None = Field(default=None, max_length=MAX_OBJECT_NAME_LENGTH,
                                    description="The working volume "
                                    "(PersistentVolumeClaim) released, if it was.")
    work_volume_time: Time | None = Field(default=None, description="When it was released.")
    workflows: list[ObjectName] | None = Field(
        default=None, max_length=64, description="Workflows deleted with their pods: earlier "
        "attempts' once a new attempt runs, every attempt's when archived (the last 64).")
    retry_pods: int | None = Field(default=None, ge=0, description="Pods of superseded "
                                   "automatic retries deleted.")
    time: Time | None = Field(default=None, description="When something was last released.")


#: status.progress: N/M, each at most 18 digits (what Argo's int64 progress parses).
PROGRESS_PATTERN = "^[0-9]{1,18}/[0-9]{1,18}$"
MAX_PROGRESS_LENGTH = 37


class MLTaskStatus(Model):
    """Observed state of an MLTask. Written only by the operator."""

    status: Phase = Field(default=Phase.INIT, description="init, running, completed, failed, "
                          "stopping, stopped or retry.")
    execute_step: ExecuteStep = Field(default=ExecuteStep.PREPARE_FILE,
                                      description="prepare_file, download, run_task, upload or "
                                      "done.")
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH,
                                description="Human-readable summary.")
    attempt: int = Field(default=0, ge=0, description="Current attempt; each continue or retry "
                         "starts a new one.")
    workflow_name: str | None = Field(default=None, max_length=MAX_OBJECT_NAME_LENGTH,
                                      description="Argo Workflow of the current "
                                      "attempt.")
    start_time: Time | None = Field(default=None, description="When the first attempt started.")
    completion_time: Time | None = Field(default=None, description="When the task completed, "
                                         "failed or stopped.")
    duration: str | None = Field(default=None, max_length=MAX_DURATION_LENGTH,
                                 description="Time from start to completion, or "
                                 "to the last status update while running.")
    steps: list[StepStatus] | None = Field(default=None, max_length=len(STEP_ORDER),
                                           description="Latest state of each step.")
    outputs: OutputStatus | None = Field(default=None, description="The produced dataset or "
                                         "model.")
    progress: str | None = Field(
        default=None, max_length=MAX_PROGRESS_LENGTH, pattern=PROGRESS_PATTERN,
        description="How far the run step is, N/M (e.g. 12/40 epochs): the last line it wrote "
        "to $MLTASK_PROGRESS_FILE, as Argo's progress reporting delivered it (every "
        "ARGO_PROGRESS_PATCH_TICK_DURATION of Argo's controller, 1 minute by default). Set once "
        "it reports a total above 1; kept after the step ends.")
    metrics: dict[str, float] | None = Field(
        default=None, description=f"Metrics the run step wrote to $MLTASK_METRICS_FILE: at most "
        f"{MAX_METRICS} finite numbers, by names of at most {MAX_METRIC_NAME_LENGTH} characters "
        "(the others are dropped, and the MetricsValid condition names them).",
        json_schema_extra={"maxProperties": MAX_METRICS})
    conditions: list[Condition] | None = Field(
        default=None, max_length=MAX_CONDITIONS,
        description="Succeeded, Running, Stopped, Failed and Ready conditions, "
        "Archived once the task was archived, MetricsValid once the run step's metrics file "
        "held something status cannot carry (False, reason MetricsDropped), and Cached "
        "(spec.cache: True when the outputs were reused from another task, False when it ran).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    observed_generation: int | None = Field(default=None, description="The .metadata.generation "
                                            "the status reflects.")
    observed_retry_generation: int | None = Field(default=None, description="The "
                                                  "spec.retryGeneration last acted on.")
    released: ReleasedStatus | None = Field(default=None, description="What was released "
                                            "(working volume, Workflows, pods) and when.")
    cache_key: str | None = Field(default=None, max_length=_SHA256_LENGTH,
                                  pattern="^[a-f0-9]{64}$",
                                  description="With spec.cache.enabled: the cache key of the "
                                  "inputs, images, config and output the current attempt "
                                  "started from (sha256 hex); a completed task with one can be "
                                  "reused by a later task with the same key.")


class MLTask(Resource):
    """An ML preprocessing, training or optimization task run as an Argo Workflow."""

    kind: str = Field(default=KIND, description="Kind.")
    spec: MLTaskSpec = Field(description="Desired state.")
    status: MLTaskStatus | None = Field(default=None, description="Observed state.")


ROOT_RULES: list[JsonValue] = [
    cel(f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters (Workflow and pod names "
        "are derived from it)", reason="FieldValueInvalid"),
    cel(f"self.metadata.name.matches('{DNS_LABEL}')",
        "metadata.name must be a DNS label (lowercase letters, digits and '-')",
        reason="FieldValueInvalid"),
]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
    {"name": "Status", "type": "string", "jsonPath": ".status.status"},
    {"name": "Step", "type": "string", "jsonPath": ".status.executeStep"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {"name": "Attempt", "type": "integer", "jsonPath": ".status.attempt", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
]

#: `kubectl get mlt --field-selector spec.type=training,status.status=failed`
SELECTABLE_FIELDS = [".spec.type", ".spec.pipelineRef.name", ".status.status",
                     ".status.executeStep"]
