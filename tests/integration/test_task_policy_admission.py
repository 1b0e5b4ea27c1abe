"""The chart's task policy on the real API server: a user who may create MLTasks and Pipelines
but no pods is refused a privileged spec at apply time, with a message naming the field, and a
compliant one is accepted; the policy's CEL type-checks against the CRDs' schemas."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness.chart import CHART, KUBE_VERSION, helm
from harness.controlplane import ControlPlane
from harness.tasks import example, example_with

pytestmark = pytest.mark.integration
RELEASE = "policy-test"
GROUP, VERSION = "mltask.dev", "v1alpha1"
PRIVILEGED = {"privileged": True}


@pytest.fixture
def policy(control_plane: ControlPlane, mltask_crds: list[str], namespace: str,
           api: client.ApiClient, tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    """The chart's ValidatingAdmissionPolicies and bindings, as rendered with the default
    values, bound to this test's namespace only (other tests' namespaces keep their own
    world); removed afterwards."""
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": {
        "policy-test": namespace}}})
    out = helm("template", RELEASE, str(CHART), "--namespace", "mltask-system",
               "--kube-version", KUBE_VERSION, "--show-only", "templates/task-policy.yaml",
               "--set", f"taskPolicy.namespaceSelector.matchLabels.policy-test={namespace}").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert sorted(d["kind"] for d in docs) == ["ValidatingAdmissionPolicy"] * 2 + [
        "ValidatingAdmissionPolicyBinding"] * 2
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    control_plane.kubectl("apply", "--server-side", "--field-manager=policy-test", "-f",
                          str(path))
    try:
        yield docs
    finally:
        control_plane.kubectl("delete", "--ignore-not-found", "-f", str(path))


def limited_user(api: client.ApiClient, namespace: str,
                 as_service_account: Callable[[str, str], client.ApiClient]) -> client.ApiClient:
    """A ServiceAccount that may create and read MLTasks and Pipelines in `namespace`, and
    nothing else: no pods."""
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "ml-author"},
        "rules": [{"apiGroups": [GROUP], "resources": ["mltasks", "pipelines"],
                   "verbs": ["create", "get", "list", "watch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "ml-author"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "ml-author"},
        "subjects": [{"kind": "ServiceAccount", "name": "author", "namespace": namespace}]})
    return as_service_account(namespace, "author")


def named(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    body["metadata"] = {"name": f"{body['metadata']['name'][:30]}-{uuid.uuid4().hex[:6]}",
                        "namespace": namespace}
    return body


def wait_active(objects: client.CustomObjectsApi, namespace: str, timeout: float = 30) -> None:
    """Until the API server applies the new policy (its informers pick it up within a
    second or two): a privileged task is refused, tried with dryRun so nothing is made."""
    deadline = time.monotonic() + timeout
    while True:
        body = named(example_with("training", steps__run__securityContext=PRIVILEGED),
                     namespace)
        try:
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "mltasks", body,
                                                    dry_run="All")
        except client.ApiException as e:
            if "securityContext.privileged" in (e.body or ""):
                return
            raise
        assert time.monotonic() < deadline, "the task policy never took effect"
        time.sleep(0.5)


def test_a_user_with_mltask_rights_only_is_refused_a_privileged_task_at_apply(
        api: client.ApiClient, namespace: str, policy: list[dict[str, Any]],
        as_service_account: Callable[[str, str], client.ApiClient]) -> None:
    wait_active(client.CustomObjectsApi(api), namespace)
    user = limited_user(api, namespace, as_service_account)
    # the user has no pod rights: what the policy bounds is all that MLTask rights give
    review = client.AuthorizationV1Api(user).create_self_subject_access_review({
        "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create",
                                        "resource": "pods"}}})
    assert review.status.allowed is False
    objects = client.CustomObjectsApi(user)

    # the API server stops at the first rule a request breaks: one field per case here (the
    # operator's own check lists them all, tests/unit/test_task_policy.py)
    cases = [
        (example_with("training", steps__run__securityContext=PRIVILEGED),
         "spec.steps.run.securityContext.privileged", "taskPolicy.allowPrivileged"),
        (example_with("training", steps__run__securityContext={"runAsUser": 0}),
         "spec.steps.run.securityContext.runAsUser", "taskPolicy.allowRoot"),
        (example_with("training", runtime__priorityClassName="system-node-critical"),
         "spec.runtime.priorityClassName", "taskPolicy.allowedPriorityClasses"),
        (example_with("training", runtime__tolerations=[{"operator": "Exists"}]),
         "spec.runtime.tolerations", "taskPolicy.allowWildcardTolerations"),
        (example_with("training", runtime__serviceAccountName="default"),
         "spec.runtime.serviceAccountName", "taskPolicy.allowedServiceAccounts"),
        (example_with("training", steps__upload={"image": "ghcr.io/me/put:1",
                                                 "command": ["put"]}),
         "spec.steps.upload:", "taskPolicy.allowCustomTransferImages"),
    ]
    for body, field, value in cases:
        with pytest.raises(client.ApiException) as refused:
            objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "mltasks",
                                                    named(body, namespace))
        assert refused.value.status == 403, refused.value
        assert field in refused.value.body and value in refused.value.body, (
            field, refused.value.body)
    assert objects.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                 "mltasks")["items"] == []

    # a Pipeline whose second task asks for privileges: refused naming the task by index
    pipe = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Pipeline",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"tasks": [
                {"name": "prep", "spec": example("preprocessing")["spec"]},
                {"name": "train", "spec": example_with(
                    "training", steps__run__securityContext={"capabilities": {
                        "add": ["SYS_ADMIN"]}})["spec"]}]}}
    with pytest.raises(client.ApiException) as refused:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "pipelines", pipe)
    assert "spec.tasks[1].spec.steps.run.securityContext.capabilities.add" in (
        refused.value.body), refused.value.body

    # compliant specs are accepted, as the same user
    ok = named(example_with("training", steps__run__securityContext={
        "runAsUser": 1000, "allowPrivilegeEscalation": False},
        runtime__tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]), namespace)
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "mltasks", ok)
    pipe["spec"]["tasks"][1]["spec"] = example("training")["spec"]
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "pipelines", pipe)


def test_the_policy_type_checks_against_the_crds(
        api: client.ApiClient, namespace: str, policy: list[dict[str, Any]]) -> None:
    """The API server type-checks each policy's CEL against the CRD's schema and reports what
    fails in status.typeChecking: nothing may."""
    admission = client.AdmissionregistrationV1Api(api)
    names = [d["metadata"]["name"] for d in policy if d["kind"] == "ValidatingAdmissionPolicy"]
    deadline = time.monotonic() + 30
    for name in names:
        while True:
            status = admission.read_validating_admission_policy(name).status
            if status is not None and status.type_checking is not None:
                break
            assert time.monotonic() < deadline, f"{name} was never type-checked"
            time.sleep(0.5)
        assert not status.type_checking.expression_warnings, (
            name, status.type_checking.expression_warnings)
