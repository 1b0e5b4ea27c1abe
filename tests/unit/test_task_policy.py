"""The task policy: what a task may ask for its pods. The operator's check (task_policy.py) names
every refused field and fails the task before anything is created; the chart's
ValidatingAdmissionPolicy (its CEL, rendered by the pinned helm and evaluated here with cel-cpp)
judges every spec of the table exactly as the operator does, under the default values and
relaxed ones. The real API server refusing as a limited user:
tests/integration/test_task_policy_admission.py."""

from __future__ import annotations

import copy
import datetime
import functools
from dataclasses import dataclass, field
from typing import Any

import pytest
from cel_expr_python import cel

from harness.chart import find, render
from harness.tasks import example, example_with
from mltask_operator.cache import TASK, Cache
from mltask_operator.handlers.mltask import reconcile_task
from mltask_operator.kinds import Kind
from mltask_operator.settings import ConfigError, Settings, TaskPolicy
from mltask_operator.task_policy import message, pipeline_violations, spec_violations

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)

RUN_SC = "spec.steps.run.securityContext"


class RecordingKube:
    """Answers as the API server would, and records each call."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def create(self, kind: Kind, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(f"create {kind.kind} {body['metadata']['name']}")
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "9"}}, True

    def ensure_pvc(self, body: dict[str, Any]) -> bool:
        self.calls.append(f"create PersistentVolumeClaim {body['metadata']['name']}")
        return True

    def replace_status(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"replace {kind.kind}/status {body['status']['status']}")
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "8"}}

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.calls.append(f"create Event {reason}")


def task(**changes: Any) -> dict[str, Any]:
    """The training example (it uses storage.secretRef) with `changes` set under spec, e.g.
    `steps__run__securityContext={...}` (harness.tasks.example_with)."""
    body = example_with("training", **changes)
    body["metadata"].update(namespace="ml", uid="u-1", resourceVersion="7", generation=1)
    return body


def pipeline(spec: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    tasks = [{"name": "prep", "spec": example("preprocessing")["spec"]},
             {"name": "train", "spec": spec}]
    body: dict[str, Any] = {"apiVersion": "mltask.dev/v1alpha1", "kind": "Pipeline",
                            "metadata": {"name": "p", "namespace": "ml"},
                            "spec": {"tasks": tasks}}
    if defaults:
        body["spec"]["defaults"] = defaults
    return body


@dataclass
class Case:
    id: str
    body: dict[str, Any]
    refused: list[str]                     #: paths under the default policy
    relaxed: dict[str, Any] = field(default_factory=dict)  #: chart values that allow it


OWN_DOWNLOAD = {"image": "ghcr.io/me/fetch:1", "command": ["fetch"]}
CASES = [
    Case("compliant", task(), []),
    Case("compliant-security", task(steps__run__securityContext={
        "runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
        "privileged": False, "readOnlyRootFilesystem": True}), []),
    Case("privileged", task(steps__run__securityContext={"privileged": True}),
         [f"{RUN_SC}.privileged"], {"allowPrivileged": True}),
    Case("escalation", task(steps__run__securityContext={"allowPrivilegeEscalation": True}),
         [f"{RUN_SC}.allowPrivilegeEscalation"], {"allowPrivileged": True}),
    Case("privileged-and-escalation", task(steps__run__securityContext={
        "privileged": True, "allowPrivilegeEscalation": True}),
         [f"{RUN_SC}.privileged", f"{RUN_SC}.allowPrivilegeEscalation"],
         {"allowPrivileged": True}),
    Case("root", task(steps__run__securityContext={"runAsUser": 0}), [f"{RUN_SC}.runAsUser"],
         {"allowRoot": True}),
    Case("root-non-root-false", task(steps__run__securityContext={"runAsNonRoot": False}),
         [f"{RUN_SC}.runAsNonRoot"], {"allowRoot": True}),
    Case("root-in-own-upload", task(steps__upload={
        "image": "ghcr.io/me/put:1", "securityContext": {"runAsUser": 0}}),
         ["spec.steps.upload.securityContext.runAsUser", "spec.steps.upload"],
         {"allowRoot": True, "allowCustomTransferImages": True}),
    Case("capability", task(steps__run__securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
         [f"{RUN_SC}.capabilities.add"], {"allowedCapabilities": ["SYS_ADMIN", "SYS_PTRACE"]}),
    Case("capability-partly-allowed", task(steps__run__securityContext={
        "capabilities": {"add": ["SYS_PTRACE", "NET_ADMIN"]}}),
         [f"{RUN_SC}.capabilities.add"], {"allowedCapabilities": ["SYS_PTRACE", "NET_ADMIN"]}),
    Case("service-account", task(runtime__serviceAccountName="cluster-admin-sa"),
         ["spec.runtime.serviceAccountName"], {"allowedServiceAccounts": ["cluster-admin-sa"]}),
    Case("priority-class", task(runtime__priorityClassName="system-node-critical"),
         ["spec.runtime.priorityClassName"],
         {"allowedPriorityClasses": ["system-node-critical"]}),
    Case("wildcard-toleration", task(runtime__tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists"}, {"operator": "Exists"}]),
         ["spec.runtime.tolerations"], {"allowWildcardTolerations": True}),
    Case("keyed-exists-toleration", task(runtime__tolerations=[
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]), []),
    Case("own-download-with-credentials", task(steps__download=OWN_DOWNLOAD),
         ["spec.steps.download"], {"allowCustomTransferImages": True}),
    Case("own-download-without-credentials", {**task(steps__download=OWN_DOWNLOAD), "spec": {
        k: v for k, v in task(steps__download=OWN_DOWNLOAD)["spec"].items()
        if k != "storage"}}, []),
    Case("pod-labels-allowed", task(runtime__podLabels={
        "kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": "high",
        "cost-allocation/team": "vision"}, runtime__podAnnotations={
        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}), []),
    Case("pod-label-not-listed", task(runtime__podLabels={
        "kueue.x-k8s.io/queue-name": "team-a", "other-team-queue": "x"}),
         ["spec.runtime.podLabels"], {"podLabelKeys": ["kueue.x-k8s.io/queue-name",
                                                       "other-team-*"]}),
    Case("pod-annotation-not-listed", task(runtime__podAnnotations={
        "sidecar.istio.io/inject": "true"}),
         ["spec.runtime.podAnnotations"], {"podAnnotationKeys": ["sidecar.istio.io/*"]}),
    Case("pipeline-default-pod-labels", pipeline(task()["spec"], {
        "podLabels": {"kueue.x-k8s.io/queue-name": "a", "team": "b"}}),
         ["spec.defaults.podLabels"], {"podLabelKeys": ["kueue.x-k8s.io/queue-name", "team"]}),
    Case("pipeline-task-pod-annotations", pipeline(task(runtime__podAnnotations={
        "x.example.com/y": "z"})["spec"]),
         ["spec.tasks[1].spec.runtime.podAnnotations"], {"podAnnotationKeys": ["x.example.com/*"]}),
    Case("pipeline-compliant", pipeline(task()["spec"]), []),
    Case("pipeline-privileged", pipeline(task(
        steps__run__securityContext={"privileged": True})["spec"]),
         ["spec.tasks[1].spec.steps.run.securityContext.privileged"], {"allowPrivileged": True}),
    Case("pipeline-defaults", pipeline(task()["spec"], {
        "serviceAccountName": "builder", "priorityClassName": "urgent",
        "tolerations": [{"operator": "Exists"}]}),
         ["spec.defaults.serviceAccountName", "spec.defaults.priorityClassName",
          "spec.defaults.tolerations"],
         {"allowedServiceAccounts": ["builder"], "allowedPriorityClasses": ["urgent"],
          "allowWildcardTolerations": True}),
    Case("pipeline-default-storage-own-upload", pipeline(
        {k: v for k, v in task(steps__upload={"image": "ghcr.io/me/put:1"})["spec"].items()
         if k != "storage"}, {"storage": {"secretRef": {"name": "s3"}}}),
         ["spec.tasks[1].spec.steps.upload"], {"allowCustomTransferImages": True}),
]


@functools.lru_cache(maxsize=64)
def _rendered(args: tuple[str, ...]) -> list[dict[str, Any]]:
    return render("mltask-system", *args)


def rendered(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart rendered with `values` under taskPolicy (each set rendered once)."""
    return _rendered(tuple(chart_args(values)))


def policy_of(values: dict[str, Any]) -> TaskPolicy:
    """The operator's policy as the chart's values give it (through the Deployment's env)."""
    docs = rendered(values)
    env = {e["name"]: e.get("value", "") for e in find(docs, "Deployment")["spec"]["template"][
        "spec"]["containers"][0]["env"] if "value" in e}
    return Settings.from_env(env).policy


def chart_args(values: dict[str, Any]) -> list[str]:
    out = []
    for key, value in values.items():
        text = ("{" + ",".join(value) + "}" if isinstance(value, list)
                else str(value).lower())
        out += ["--set", f"taskPolicy.{key}={text}"]
    return out


def operator_says(body: dict[str, Any], policy: TaskPolicy) -> list[str]:
    found = (pipeline_violations(body["spec"], policy) if body["kind"] == "Pipeline"
             else spec_violations(body["spec"], policy))
    return [v.path for v in found]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_operator_names_each_refused_field(case: Case) -> None:
    assert operator_says(case.body, TaskPolicy()) == case.refused
    if case.relaxed:
        assert operator_says(case.body, policy_of(case.relaxed)) == [], "the values allow it"


# --------------------------------------------------------------- the chart's admission policy

_CEL = cel.NewEnv(config=cel.NewEnvConfigFromYaml("extensions:\n  - name: strings\n"
                                                  "    version: latest\n"),
                  variables={"object": cel.Type.DYN})


def admission_says(body: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """The messages of the chart's policy for `body`'s kind that refuse it, as the API server
    would give them (messageExpression, else message)."""
    docs = rendered(values)
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    resource = "mltasks" if body["kind"] == "MLTask" else "pipelines"
    mine = [p for p in policies if any(
        resource in r["resources"] for r in p["spec"]["matchConstraints"]["resourceRules"])]
    assert len(mine) == 1, [p["metadata"]["name"] for p in policies]
    out = []
    for v in mine[0]["spec"].get("validations") or []:
        value = _CEL.compile(v["expression"]).eval(data={"object": body})
        assert value.type().name() == "BOOL", (v["expression"], value.value())
        if not value.plain_value():
            if "messageExpression" in v:
                out.append(str(_CEL.compile(v["messageExpression"]).eval(
                    data={"object": body}).plain_value()))
            else:
                out.append(v["message"])
    return out


def paths_in(messages: list[str]) -> list[str]:
    """The field paths a refusal names: each message starts with them, comma-separated, before
    ': '."""
    return [p for m in messages for p in m.split(": ", 1)[0].split(", ")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_admission_policy_refuses_what_the_operator_refuses(case: Case) -> None:
    said = admission_says(case.body, {})
    assert sorted(paths_in(said)) == sorted(case.refused), said
    for m in said:
        assert "taskPolicy." in m, m   # says which chart value relaxes it
    if case.relaxed:
        assert admission_says(case.body, case.relaxed) == []


def test_the_chart_passes_its_values_to_the_operator() -> None:
    assert policy_of({}) == TaskPolicy()
    relaxed = policy_of({"allowPrivileged": True, "allowRoot": True,
                         "allowedCapabilities": ["SYS_PTRACE"],
                         "allowedServiceAccounts": ["a", "b"],
                         "allowedPriorityClasses": ["batch"],
                         "allowWildcardTolerations": True, "allowCustomTransferImages": True})
    assert relaxed == TaskPolicy(True, True, ("SYS_PTRACE",), ("a", "b"), ("batch",), True, True)


def test_the_policy_binding_refuses_rather_than_warns() -> None:
    docs = rendered({})
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert len(bindings) == 2
    for b in bindings:
        assert b["spec"]["validationActions"] == ["Deny"]
    for p in (d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"):
        assert p["spec"]["failurePolicy"] == "Fail"
    assert not [d for d in render("mltask-system", "--set", "taskPolicy.admission=false")
                if d["kind"].startswith("ValidatingAdmissionPolicy")]


# ------------------------------------------------------------------- settings and reconcile


def test_label_keys_unset_are_the_defaults_empty_are_none() -> None:
    assert Settings.from_env({}).policy.pod_label_keys == (
        "kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class", "cost-allocation/*")
    assert Settings.from_env({"MLTASK_POLICY_POD_LABEL_KEYS": ""}).policy.pod_label_keys == ()
    refused = spec_violations(task(runtime__podLabels={"kueue.x-k8s.io/queue-name": "a"})[
        "spec"], TaskPolicy(pod_label_keys=()))
    assert [str(v) for v in refused] == [
        "spec.runtime.podLabels: pod label keys: none is allowed "
        "(chart value taskPolicy.podLabelKeys)"]
    with pytest.raises(ConfigError, match="MLTASK_POLICY_POD_ANNOTATION_KEYS"):
        Settings.from_env({"MLTASK_POLICY_POD_ANNOTATION_KEYS": "bad key"})


def test_settings_read_the_policy_from_the_environment() -> None:
    assert Settings.from_env({}).policy == TaskPolicy()
    p = Settings.from_env({"MLTASK_POLICY_ALLOW_ROOT": "true",
                           "MLTASK_POLICY_ALLOWED_SERVICE_ACCOUNTS": "a, b",
                           "MLTASK_POLICY_ALLOWED_CAPABILITIES": "SYS_PTRACE"}).policy
    assert (p.allow_root, p.allowed_service_accounts, p.allowed_capabilities) == (
        True, ("a", "b"), ("SYS_PTRACE",))
    with pytest.raises(ConfigError, match="MLTASK_POLICY_ALLOWED_CAPABILITIES"):
        Settings.from_env({"MLTASK_POLICY_ALLOWED_CAPABILITIES": "sys_admin"})
    with pytest.raises(ConfigError, match="MLTASK_POLICY_ALLOW_PRIVILEGED"):
        Settings.from_env({"MLTASK_POLICY_ALLOW_PRIVILEGED": "maybe"})


def test_a_refused_task_fails_at_start_naming_the_fields_and_creates_nothing() -> None:
    body = task(steps__run__securityContext={"privileged": True, "runAsUser": 0},
                runtime__priorityClassName="system-node-critical")
    name = body["metadata"]["name"]
    cache = Cache()
    cache.put(TASK, copy.deepcopy(body))
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == ["replace MLTask/status failed", "create Event Failed"], kube.calls
    st = cache.task("ml", name)["status"]
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PolicyViolation"
    for path in (f"{RUN_SC}.privileged", f"{RUN_SC}.runAsUser",
                 "spec.runtime.priorityClassName"):
        assert path in st["message"], st["message"]
    assert "taskPolicy.allowPrivileged" in st["message"]
    kube.calls.clear()
    reconcile_task(kube, cache, "ml", name,  # type: ignore[arg-type]
                   clock=lambda: NOW + datetime.timedelta(seconds=5))
    assert kube.calls == [], "failed stays failed until a retry"

    # the same task under a policy that allows it starts
    cache = Cache()
    cache.put(TASK, copy.deepcopy(body))
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW,  # type: ignore[arg-type]
                   policy=TaskPolicy(allow_privileged=True, allow_root=True,
                                     allowed_priority_classes=("system-node-critical",)))
    assert kube.calls[0] == f"create Workflow {name}-1"


def test_the_message_lists_every_field() -> None:
    found = spec_violations(task(runtime__serviceAccountName="x")["spec"], TaskPolicy())
    assert message(found) == (
        "The task policy refuses spec.runtime.serviceAccountName: ServiceAccount x: none is "
        "allowed (chart value taskPolicy.allowedServiceAccounts). Nothing was created.")
