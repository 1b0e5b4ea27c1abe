"""Pure: what a task spec asks for its pods beyond the task policy (settings.TaskPolicy).

Creating an MLTask (or a Pipeline) makes pods in its namespace, so its spec is held to a policy
whose safe default refuses every privilege the spec can express: a privileged step or one that
may escalate, root, added capabilities, a ServiceAccount or PriorityClass not allowed, a
toleration of every taint, and a download or upload step of the task's own that would get the
storage credentials, and pod labels or annotations whose keys the policy does not list (a
label can put a pod in another team's Kueue queue). (Host namespaces, host ports and hostPath
volumes the spec cannot express.)

The chart's ValidatingAdmissionPolicy (templates/task-policy.yaml) refuses the same at apply
time; the operator checks again before it creates anything (handlers.mltask), for clusters
without it. tests/unit/test_task_policy.py keeps the two in agreement.

Specs are read as the API serves them (camelCase dicts), as the CEL rules read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mltask_operator.settings import TaskPolicy, key_allowed

STEPS = ("download", "run", "upload")
TRANSFER_STEPS = ("download", "upload")
#: The chart value that relaxes each rule, named in every refusal.
VALUES = {
    "privileged": "taskPolicy.allowPrivileged",
    "root": "taskPolicy.allowRoot",
    "capabilities": "taskPolicy.allowedCapabilities",
    "serviceAccount": "taskPolicy.allowedServiceAccounts",
    "priorityClass": "taskPolicy.allowedPriorityClasses",
    "tolerations": "taskPolicy.allowWildcardTolerations",
    "transferImage": "taskPolicy.allowCustomTransferImages",
    "podLabels": "taskPolicy.podLabelKeys",
    "podAnnotations": "taskPolicy.podAnnotationKeys",
}
REASON = "PolicyViolation"


@dataclass(frozen=True)
class Violation:
    """One field the policy refuses: its path (spec.steps.run.securityContext.privileged),
    the rule (a VALUES key) and why."""

    path: str
    rule: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}: {self.why} (chart value {VALUES[self.rule]})"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _allowed(names: tuple[str, ...]) -> str:
    return ("allowed: " + ", ".join(names)) if names else "none is allowed"


def step_violations(step: str, spec: Mapping[str, Any], policy: TaskPolicy,
                    prefix: str = "spec") -> list[Violation]:
    """What one step's securityContext asks beyond the policy."""
    own = _map(_map(spec.get("steps")).get(step))
    sc = _map(own.get("securityContext"))
    at = f"{prefix}.steps.{step}.securityContext"
    out: list[Violation] = []
    if not policy.allow_privileged:
        if sc.get("privileged") is True:
            out.append(Violation(f"{at}.privileged", "privileged",
                                 "privileged containers are not allowed"))
        if sc.get("allowPrivilegeEscalation") is True:
            out.append(Violation(f"{at}.allowPrivilegeEscalation", "privileged",
                                 "privilege escalation is not allowed"))
    if not policy.allow_root:
        if sc.get("runAsUser") == 0:
            out.append(Violation(f"{at}.runAsUser", "root", "running as root (0) is not "
                                 "allowed"))
        if sc.get("runAsNonRoot") is False:
            out.append(Violation(f"{at}.runAsNonRoot", "root", "runAsNonRoot false is not "
                                 "allowed"))
    added = _list(_map(sc.get("capabilities")).get("add"))
    if any(c not in policy.allowed_capabilities for c in added):
        out.append(Violation(f"{at}.capabilities.add", "capabilities",
                             f"adding capabilities: {_allowed(policy.allowed_capabilities)}"))
    return out


def runtime_violations(runtime: Mapping[str, Any], policy: TaskPolicy,
                       at: str) -> list[Violation]:
    """What a task's runtime (or a Pipeline's defaults, the same field names) asks beyond the
    policy: the ServiceAccount, the PriorityClass, a toleration of every taint, pod label and
    annotation keys it does not list."""
    out: list[Violation] = []
    account = runtime.get("serviceAccountName")
    if account and account not in policy.allowed_service_accounts:
        out.append(Violation(f"{at}.serviceAccountName", "serviceAccount",
                             f"ServiceAccount {account}: "
                             f"{_allowed(policy.allowed_service_accounts)}"))
    priority = runtime.get("priorityClassName")
    if priority and priority not in policy.allowed_priority_classes:
        out.append(Violation(f"{at}.priorityClassName", "priorityClass",
                             f"PriorityClass {priority}: "
                             f"{_allowed(policy.allowed_priority_classes)}"))
    if not policy.allow_wildcard_tolerations and any(
            _map(t).get("operator") == "Exists" and not _map(t).get("key")
            for t in _list(runtime.get("tolerations"))):
        out.append(Violation(f"{at}.tolerations", "tolerations",
                             "a toleration with operator Exists and no key tolerates every "
                             "taint: name the key of the taint"))
    for field, what, allowed in (("podLabels", "label", policy.pod_label_keys),
                                 ("podAnnotations", "annotation", policy.pod_annotation_keys)):
        if any(not key_allowed(str(k), allowed) for k in _map(runtime.get(field))):
            out.append(Violation(f"{at}.{field}", field,
                                 f"pod {what} keys: {_allowed(allowed)}"))
    return out


def spec_violations(spec: Mapping[str, Any], policy: TaskPolicy, prefix: str = "spec",
                    default_storage: bool = False) -> list[Violation]:
    """Every field of a task spec (an MLTask's spec, a Pipeline task's spec) the policy
    refuses, in a fixed order. `default_storage`: storage credentials come from elsewhere
    (a Pipeline's defaults.storage) when the spec has none."""
    out: list[Violation] = []
    for step in STEPS:
        out += step_violations(step, spec, policy, prefix)
    out += runtime_violations(_map(spec.get("runtime")), policy, f"{prefix}.runtime")
    credentials = bool(_map(spec.get("storage")).get("secretRef")) or default_storage
    if credentials and not policy.allow_custom_transfer_images:
        steps = _map(spec.get("steps"))
        for step in TRANSFER_STEPS:
            if step in steps:
                out.append(Violation(f"{prefix}.steps.{step}", "transferImage",
                                     f"setting steps.{step} gives that step the storage "
                                     "credentials (storage.secretRef): leave it out to use "
                                     "the project transfer step"))
    return out


def pipeline_violations(spec: Mapping[str, Any], policy: TaskPolicy) -> list[Violation]:
    """Every field of a Pipeline's spec the policy refuses: its defaults', then each task's."""
    defaults = _map(spec.get("defaults"))
    out = runtime_violations(defaults, policy, "spec.defaults")
    storage = bool(_map(defaults.get("storage")).get("secretRef"))
    for i, task in enumerate(_list(spec.get("tasks"))):
        out += spec_violations(_map(_map(task).get("spec")), policy, f"spec.tasks[{i}].spec",
                               default_storage=storage)
    return out


def message(violations: list[Violation]) -> str:
    """The refusal a task's status shows: every field, and how the policy could allow it."""
    return ("The task policy refuses " + "; ".join(str(v) for v in violations)
            + ". Nothing was created.")
