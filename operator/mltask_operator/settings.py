"""Operator configuration, read once from the environment and validated at start."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltask_operator import __version__

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Where Kubernetes mounts the pod's namespace (the fallback when POD_NAMESPACE is unset).
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_LABEL}$")
DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
#: The name part of a qualified name (after the slash), as Kubernetes validates it.
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


def _int(env: dict[str, str], name: str, default: int, minimum: int,
         maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} must be <= {maximum}")
    return value


def _port(env: dict[str, str], name: str, default: int, *, zero_disables: bool = False) -> int:
    value = _int(env, name, default, 0, 65535)
    if value == 0 and not zero_disables:
        raise ConfigError(f"{name}=0 must be a port from 1 to 65535")
    return value


def _dns_label(name: str, value: str) -> str:
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise ConfigError(f"{name}: {value!r} is not a valid namespace name (DNS-1123 label: "
                          "lower-case letters, digits and '-', at most 63 characters)")
    return value


def _dns_subdomain(name: str, value: str) -> str:
    if len(value) > 253 or not DNS1123_SUBDOMAIN.match(value):
        raise ConfigError(f"{name}={value!r} is not a valid object name (DNS-1123 subdomain: "
                          "lower-case letters, digits, '-' and '.', at most 253 characters)")
    return value


def _extended_resource(name: str, value: str) -> str:
    """A vendor resource name as Kubernetes accepts it: `domain/name`, not kubernetes.io's."""
    domain, slash, short = value.partition("/")
    if (not slash or "/" in short or len(domain) > 253 or not DNS1123_SUBDOMAIN.match(domain)
            or len(short) > 63 or not QUALIFIED_NAME.match(short)
            or domain == "kubernetes.io" or domain.endswith(".kubernetes.io")
            or value.startswith("requests.")):
        raise ConfigError(f"{name}={value!r} must be an extended resource name such as "
                          "nvidia.com/gpu (a domain, one '/', a name; not kubernetes.io)")
    return value


def _pod_namespace(env: dict[str, str]) -> str:
    """POD_NAMESPACE (the chart sets it from the downward API), else the mounted
    service-account namespace, else `default` (outside a cluster)."""
    if env.get("POD_NAMESPACE"):
        return env["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("true", "1", "yes"):
        return True
    if raw in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name}={env[name]!r} must be true or false")


def _json(env: dict[str, str], name: str, kind: type) -> Any:
    raw = env.get(name)
    if not raw:
        return kind()
    try:
        value = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{name} is not valid JSON: {e}") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{name} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _tolerations(env: dict[str, str], name: str) -> list[dict[str, Any]]:
    from pydantic import ValidationError

    from mltask_operator.api.v1alpha1.common import Toleration

    out = []
    for i, item in enumerate(_json(env, name, list)):
        try:
            out.append(Toleration.model_validate(item).to_k8s())
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"{name}[{i}].{where}: {first['msg']}") from None
    return out


#: Resource names that are GPUs by default: whole NVIDIA GPUs and MIG slices.
DEFAULT_GPU_RESOURCE_PREFIXES = ("nvidia.com/gpu", "nvidia.com/mig-")


@dataclass(frozen=True)
class RunStepDefaults:
    """Applied by the operator to run-step pods that request GPUs (cluster-wide GPU policy)."""

    node_selector: dict[str, str] = field(default_factory=dict)
    """MLTASK_RUN_NODE_SELECTOR: JSON object; the task's own nodeSelector keys win."""
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    """MLTASK_RUN_TOLERATIONS: JSON list of tolerations, added to the task's."""
    runtime_class_name: str | None = None
    """MLTASK_RUN_RUNTIME_CLASS_NAME: e.g. nvidia (a DNS-1123 subdomain)."""
    gpu_resource_name: str = "nvidia.com/gpu"
    """MLTASK_GPU_RESOURCE_NAME: the cluster's GPU resource (an extended resource name,
    `domain/name`); a step's `gpu` resource key is translated to it."""
    gpu_resource_prefixes: tuple[str, ...] = DEFAULT_GPU_RESOURCE_PREFIXES
    """MLTASK_GPU_RESOURCE_PREFIXES: comma-separated prefixes of the resource names that are
    GPUs, e.g. nvidia.com/gpu,nvidia.com/mig- (MIG slices such as nvidia.com/mig-1g.10gb): a
    run step requesting any of them (or gpu_resource_name) gets the defaults above."""

    def is_gpu(self, resource: str) -> bool:
        """Whether `resource` (a container resource name) is a GPU, whole or a slice."""
        return resource == self.gpu_resource_name or any(
            resource.startswith(p) for p in self.gpu_resource_prefixes)


@dataclass(frozen=True)
class TaskDefaults:
    """Pod settings of every task that does not set its own (spec.runtime): what a cluster sets
    once (chart values taskDefaults.*)."""

    image_pull_secrets: tuple[str, ...] = ()
    """MLTASK_TASK_IMAGE_PULL_SECRETS: comma-separated Secret names every step pod pulls with
    (added to a task's own runtime.imagePullSecrets)."""
    runtime_class_name: str | None = None
    """MLTASK_TASK_RUNTIME_CLASS_NAME: RuntimeClass of run steps without their own (and, for a
    GPU run step, without the GPU default MLTASK_RUN_RUNTIME_CLASS_NAME)."""
    scheduler_name: str | None = None
    """MLTASK_TASK_SCHEDULER_NAME: scheduler of step pods of tasks without their own."""
    shared_memory_size: str | None = None
    """MLTASK_TASK_SHARED_MEMORY_SIZE: /dev/shm size (a quantity, e.g. 1Gi) of run steps of
    tasks without their own."""


#: The project's own image (the operator's): its `mltask-transfer` program is the default
#: download and upload step. The chart sets MLTASK_TRANSFER_IMAGE to the image it installs.
DEFAULT_TRANSFER_IMAGE = f"localhost/mltask-operator:{__version__}"
#: Default resources of the transfer steps: they stream (memory stays bounded whatever the size).
DEFAULT_TRANSFER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


@dataclass(frozen=True)
class TransferDefaults:
    """The project's own download and upload steps, used where a task leaves them out."""

    image: str = DEFAULT_TRANSFER_IMAGE
    """MLTASK_TRANSFER_IMAGE: the image with `mltask-transfer` (the operator's own image)."""
    image_pull_policy: str = "IfNotPresent"
    """MLTASK_TRANSFER_IMAGE_PULL_POLICY: Always, IfNotPresent or Never."""
    resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_TRANSFER_RESOURCES.items()})
    """MLTASK_TRANSFER_RESOURCES: JSON object, the steps' corev1 resources (requests, limits)."""
    service_account_name: str | None = None
    """MLTASK_TRANSFER_SERVICE_ACCOUNT: the ServiceAccount the project's own download and
    upload steps run as (a cloud storage role bound to it never reaches the run step); empty:
    the Workflow's (the task's runtime.serviceAccountName, else the namespace's default)."""


def _transfer(env: dict[str, str]) -> TransferDefaults:
    image = env.get("MLTASK_TRANSFER_IMAGE") or DEFAULT_TRANSFER_IMAGE
    if any(c.isspace() for c in image):
        raise ConfigError(f"MLTASK_TRANSFER_IMAGE={image!r} must be an image reference without "
                          "spaces")
    policy = env.get("MLTASK_TRANSFER_IMAGE_PULL_POLICY") or "IfNotPresent"
    if policy not in PULL_POLICIES:
        raise ConfigError(f"MLTASK_TRANSFER_IMAGE_PULL_POLICY={policy!r} must be one of "
                          + ", ".join(PULL_POLICIES))
    resources = _json(env, "MLTASK_TRANSFER_RESOURCES", dict) or TransferDefaults().resources
    for kind, values in resources.items():
        if kind not in ("requests", "limits") or not isinstance(values, dict) or not all(
                isinstance(v, str | int) for v in values.values()):
            raise ConfigError("MLTASK_TRANSFER_RESOURCES must look like "
                              '{"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}')
    account = env.get("MLTASK_TRANSFER_SERVICE_ACCOUNT") or None
    if account:
        _dns_subdomain("MLTASK_TRANSFER_SERVICE_ACCOUNT", account)
    return TransferDefaults(image=image, image_pull_policy=policy,
                            resources={k: {n: str(v) for n, v in vals.items()}
                                       for k, vals in resources.items()},
                            service_account_name=account)


#: Pod label and annotation keys a task may set unless the chart says otherwise: Kueue's
#: queue and priority labels, and a prefix for cost allocation.
DEFAULT_POD_LABEL_KEYS = ("kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class",
                          "cost-allocation/*")
DEFAULT_POD_ANNOTATION_KEYS = ("cluster-autoscaler.kubernetes.io/safe-to-evict",
                               "cost-allocation/*")


@dataclass(frozen=True)
class TaskPolicy:
    """What a task may ask for its pods (mltask_operator.task_policy); the safe default refuses
    every privilege. The chart's values taskPolicy.* set these and the admission policy that
    refuses the same at apply time."""

    allow_privileged: bool = False
    """MLTASK_POLICY_ALLOW_PRIVILEGED: steps may be privileged or allow privilege
    escalation."""
    allow_root: bool = False
    """MLTASK_POLICY_ALLOW_ROOT: steps may run as root (runAsUser 0, runAsNonRoot false)."""
    allowed_capabilities: tuple[str, ...] = ()
    """MLTASK_POLICY_ALLOWED_CAPABILITIES: comma-separated capabilities steps may add."""
    allowed_service_accounts: tuple[str, ...] = ()
    """MLTASK_POLICY_ALLOWED_SERVICE_ACCOUNTS: comma-separated ServiceAccounts a task may name
    (runtime.serviceAccountName); none: only the namespace's default."""
    allowed_priority_classes: tuple[str, ...] = ()
    """MLTASK_POLICY_ALLOWED_PRIORITY_CLASSES: comma-separated PriorityClasses a task may name;
    none: no priority class."""
    allow_wildcard_tolerations: bool = False
    """MLTASK_POLICY_ALLOW_WILDCARD_TOLERATIONS: a toleration may be `operator: Exists`
    without a key (it tolerates every taint)."""
    allow_custom_transfer_images: bool = False
    """MLTASK_POLICY_ALLOW_CUSTOM_TRANSFER_IMAGES: a task with storage credentials
    (storage.secretRef) may set its own download or upload step, which gets them."""
    pod_label_keys: tuple[str, ...] = DEFAULT_POD_LABEL_KEYS
    """MLTASK_POLICY_POD_LABEL_KEYS: comma-separated label keys a task may put on its pods
    (runtime.podLabels); a key ending in `*` allows every key it starts with. Unset: the
    defaults (Kueue's queue and priority labels, cost-allocation/*); empty: none."""
    pod_annotation_keys: tuple[str, ...] = DEFAULT_POD_ANNOTATION_KEYS
    """MLTASK_POLICY_POD_ANNOTATION_KEYS: the same for annotations (runtime.podAnnotations)."""


def key_allowed(key: str, allowed: tuple[str, ...]) -> bool:
    """Whether a pod label or annotation key is one of `allowed` (a `*` entry: a prefix)."""
    return any(key.startswith(a[:-1]) if a.endswith("*") else key == a for a in allowed)


_CAPABILITY = re.compile(r"^[A-Z_]+$")


def _names(env: dict[str, str], name: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    out = tuple(n.strip() for n in (env.get(name) or "").split(",") if n.strip())
    for n in out:
        if not pattern.match(n) or len(n) > 253:
            raise ConfigError(f"{name}: {n!r} is not a valid name")
    return out


def _policy(env: dict[str, str]) -> TaskPolicy:
    return TaskPolicy(
        allow_privileged=_bool(env, "MLTASK_POLICY_ALLOW_PRIVILEGED", False),
        allow_root=_bool(env, "MLTASK_POLICY_ALLOW_ROOT", False),
        allowed_capabilities=_names(env, "MLTASK_POLICY_ALLOWED_CAPABILITIES", _CAPABILITY),
        allowed_service_accounts=_names(env, "MLTASK_POLICY_ALLOWED_SERVICE_ACCOUNTS",
                                        DNS1123_SUBDOMAIN),
        allowed_priority_classes=_names(env, "MLTASK_POLICY_ALLOWED_PRIORITY_CLASSES",
                                        DNS1123_SUBDOMAIN),
        allow_wildcard_tolerations=_bool(env, "MLTASK_POLICY_ALLOW_WILDCARD_TOLERATIONS", False),
        allow_custom_transfer_images=_bool(env, "MLTASK_POLICY_ALLOW_CUSTOM_TRANSFER_IMAGES",
                                           False),
        pod_label_keys=_keys(env, "MLTASK_POLICY_POD_LABEL_KEYS", DEFAULT_POD_LABEL_KEYS),
        pod_annotation_keys=_keys(env, "MLTASK_POLICY_POD_ANNOTATION_KEYS",
                                  DEFAULT_POD_ANNOTATION_KEYS),
    )


_KEY_OR_PREFIX = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]*\*?$")


def _keys(env: dict[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """Label or annotation keys; unset: `default`, empty: none."""
    if name not in env:
        return default
    return _names(env, name, _KEY_OR_PREFIX)


_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$")


def _task_defaults(env: dict[str, str]) -> TaskDefaults:
    secrets = _names(env, "MLTASK_TASK_IMAGE_PULL_SECRETS", DNS1123_SUBDOMAIN)
    runtime_class = env.get("MLTASK_TASK_RUNTIME_CLASS_NAME") or None
    if runtime_class:
        _dns_subdomain("MLTASK_TASK_RUNTIME_CLASS_NAME", runtime_class)
    scheduler = env.get("MLTASK_TASK_SCHEDULER_NAME") or None
    if scheduler:
        _dns_subdomain("MLTASK_TASK_SCHEDULER_NAME", scheduler)
    shm = env.get("MLTASK_TASK_SHARED_MEMORY_SIZE") or None
    if shm and not _QUANTITY.match(shm):
        raise ConfigError(f"MLTASK_TASK_SHARED_MEMORY_SIZE={shm!r} must be a quantity such as "
                          "1Gi")
    return TaskDefaults(image_pull_secrets=secrets, runtime_class_name=runtime_class,
                        scheduler_name=scheduler, shared_memory_size=shm)


def _gpu_prefixes(env: dict[str, str]) -> tuple[str, ...]:
    raw = env.get("MLTASK_GPU_RESOURCE_PREFIXES")
    if not raw:
        return DEFAULT_GPU_RESOURCE_PREFIXES
    out = tuple(p.strip() for p in raw.split(",") if p.strip())
    for p in out:
        domain, slash, _ = p.partition("/")
        if not slash or not DNS1123_SUBDOMAIN.match(domain) or domain.endswith("kubernetes.io"):
            raise ConfigError(f"MLTASK_GPU_RESOURCE_PREFIXES: {p!r} must start with a vendor "
                              "domain and '/', e.g. nvidia.com/mig-")
    return out


POD_GC_STRATEGIES = ("OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion",
                     "OnWorkflowSuccess", "Never")


@dataclass(frozen=True)
class CleanupDefaults:
    """What finished tasks release, where a task does not say (spec.cleanup,
    spec.ttlSecondsAfterFinished)."""

    pod_gc: str = "Never"
    """MLTASK_POD_GC: Argo's podGC strategy for the current attempt's pods (OnPodCompletion,
    OnPodSuccess, OnWorkflowCompletion, OnWorkflowSuccess) or Never (they stay, so their logs
    can be read)."""
    ttl_seconds_after_finished: int | None = None
    """MLTASK_TTL_SECONDS_AFTER_FINISHED: delete MLTasks and Pipelines this long after they
    completed or failed, unless they say otherwise; empty: never."""


def _cleanup(env: dict[str, str]) -> CleanupDefaults:
    pod_gc = env.get("MLTASK_POD_GC") or "Never"
    if pod_gc not in POD_GC_STRATEGIES:
        raise ConfigError(f"MLTASK_POD_GC={pod_gc!r} must be one of "
                          + ", ".join(POD_GC_STRATEGIES))
    raw = env.get("MLTASK_TTL_SECONDS_AFTER_FINISHED")
    ttl = _int(env, "MLTASK_TTL_SECONDS_AFTER_FINISHED", 0, 0) if raw else None
    return CleanupDefaults(pod_gc=pod_gc, ttl_seconds_after_finished=ttl)


@dataclass(frozen=True)
class LeaderElection:
    """Which Lease the replicas compete for (see mltask_operator.leader)."""

    enabled: bool = False
    """MLTASK_LEADER_ELECTION: true when several replicas run; only the Lease holder works."""
    namespace: str = "default"
    """MLTASK_LEADER_ELECTION_NAMESPACE: namespace of the Lease. Default: the pod's own
    namespace (POD_NAMESPACE from the downward API, else the service-account mount), so a
    kustomize `namespace:` override moves the Lease along with its Role."""
    lease_name: str = "mltask-operator"
    """MLTASK_LEADER_ELECTION_LEASE_NAME: a DNS-1123 subdomain."""
    lease_seconds: int = 15
    """MLTASK_LEADER_ELECTION_LEASE_SECONDS: a standby takes over this long after the leader
    stops renewing."""


@dataclass(frozen=True)
class Settings:
    """Everything the operator reads from its environment, validated."""

    namespaces: list[str] = field(default_factory=list)
    """MLTASK_NAMESPACES: comma-separated namespaces to watch; empty watches the whole cluster."""
    resync_seconds: int = 60
    """MLTASK_RESYNC_SECONDS: how often every task is reconciled even without events."""
    workers: int = 8
    """MLTASK_WORKERS: threads that run reconciles."""
    metrics_port: int = 8080
    """MLTASK_METRICS_PORT: Prometheus metrics port (1-65535, not the health port); 0
    disables the server."""
    watch_server_timeout: int = 300
    """MLTASK_WATCH_SERVER_TIMEOUT: seconds the API server keeps a watch open."""
    watch_client_timeout: int = 330
    """MLTASK_WATCH_CLIENT_TIMEOUT: seconds before the client gives up on a watch."""
    watch_idle_timeout: int = 5
    """MLTASK_WATCH_IDLE_TIMEOUT: seconds a watch may deliver nothing before it is reopened from
    its last resourceVersion: how soon a connection that hangs or drops packets is noticed."""
    log_level: str = "INFO"
    """MLTASK_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    health_port: int = 8081
    """MLTASK_HEALTH_PORT: the default port of the /healthz endpoint (see --liveness), 1-65535."""
    leader_election: LeaderElection = field(default_factory=LeaderElection)
    run_defaults: RunStepDefaults = field(default_factory=RunStepDefaults)
    transfer: TransferDefaults = field(default_factory=TransferDefaults)
    cleanup: CleanupDefaults = field(default_factory=CleanupDefaults)
    policy: TaskPolicy = field(default_factory=TaskPolicy)
    task_defaults: TaskDefaults = field(default_factory=TaskDefaults)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        namespaces = [_dns_label("MLTASK_NAMESPACES", n.strip())
                      for n in env.get("MLTASK_NAMESPACES", "").split(",") if n.strip()]
        server = _int(env, "MLTASK_WATCH_SERVER_TIMEOUT", 300, 10)
        client = _int(env, "MLTASK_WATCH_CLIENT_TIMEOUT", server + 30, 10)
        if client <= server:
            raise ConfigError(f"MLTASK_WATCH_CLIENT_TIMEOUT={client} must exceed "
                              f"MLTASK_WATCH_SERVER_TIMEOUT={server}")
        level = (env.get("MLTASK_LOG_LEVEL") or "INFO").upper()
        if level not in LOG_LEVELS:
            raise ConfigError(f"MLTASK_LOG_LEVEL={env['MLTASK_LOG_LEVEL']!r} must be one of "
                              + ", ".join(LOG_LEVELS))
        gpu = _extended_resource("MLTASK_GPU_RESOURCE_NAME",
                                 env.get("MLTASK_GPU_RESOURCE_NAME") or "nvidia.com/gpu")
        runtime_class = env.get("MLTASK_RUN_RUNTIME_CLASS_NAME") or None
        if runtime_class:
            _dns_subdomain("MLTASK_RUN_RUNTIME_CLASS_NAME", runtime_class)
        metrics_port = _port(env, "MLTASK_METRICS_PORT", 8080, zero_disables=True)
        health_port = _port(env, "MLTASK_HEALTH_PORT", 8081)
        if metrics_port == health_port:
            raise ConfigError(f"MLTASK_METRICS_PORT={metrics_port} must differ from "
                              f"MLTASK_HEALTH_PORT={health_port}")
        selector = _json(env, "MLTASK_RUN_NODE_SELECTOR", dict)
        if not all(isinstance(v, str) for v in selector.values()):
            raise ConfigError("MLTASK_RUN_NODE_SELECTOR values must be strings")
        lease = LeaderElection(
            enabled=_bool(env, "MLTASK_LEADER_ELECTION", False),
            namespace=_dns_label("MLTASK_LEADER_ELECTION_NAMESPACE",
                                 env.get("MLTASK_LEADER_ELECTION_NAMESPACE")
                                 or _pod_namespace(env)),
            lease_name=_dns_subdomain("MLTASK_LEADER_ELECTION_LEASE_NAME",
                                      env.get("MLTASK_LEADER_ELECTION_LEASE_NAME")
                                      or "mltask-operator"),
            lease_seconds=_int(env, "MLTASK_LEADER_ELECTION_LEASE_SECONDS", 15, 5),
        )
        return cls(
            log_level=level,
            health_port=health_port,
            leader_election=lease,
            run_defaults=RunStepDefaults(
                node_selector=selector,
                tolerations=_tolerations(env, "MLTASK_RUN_TOLERATIONS"),
                runtime_class_name=runtime_class,
                gpu_resource_name=gpu,
                gpu_resource_prefixes=_gpu_prefixes(env),
            ),
            task_defaults=_task_defaults(env),
            transfer=_transfer(env),
            cleanup=_cleanup(env),
            policy=_policy(env),
            namespaces=namespaces,
            resync_seconds=_int(env, "MLTASK_RESYNC_SECONDS", 60, 5),
            workers=_int(env, "MLTASK_WORKERS", 8, 1),
            metrics_port=metrics_port,
            watch_server_timeout=server,
            watch_client_timeout=client,
            watch_idle_timeout=_int(env, "MLTASK_WATCH_IDLE_TIMEOUT", 5, 1),
        )
