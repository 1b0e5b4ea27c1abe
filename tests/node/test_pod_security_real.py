"""Step pods under Pod Security for real: a task's pods (Argo's init and wait containers
included) admitted where the namespace enforces `restricted`, and a run image whose user is root
told which field to set, then run as root where the namespace allows it."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import images
from harness.tasks import example_with, step
from harness.workspace import Workspace, stored

pytestmark = pytest.mark.timeout(900)

#: Writes the uid it runs as into the output folder: what the upload step stores.
WHO_AM_I = ("import os; d = os.environ['MLTASK_OUTPUT_DIR']; os.makedirs(d, exist_ok=True); "
            "open(os.path.join(d, 'uid.txt'), 'w').write(str(os.getuid()))")


def root_image_task(name: str, security: dict[str, Any] | None = None) -> dict[str, Any]:
    """A task whose run image is the Debian base, whose user is root."""
    body = example_with("preprocessing", steps__run={"image": images.PYTHON_BASE_TAG,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["python3", "-c", WHO_AM_I]},
                         output__uri=f"s3://mltask-examples/uid/{name}/",
                         runtime__retryPolicy={"limit": 0})
    body["metadata"]["name"] = name
    if security is not None:
        body["spec"]["steps"]["run"]["securityContext"] = security
    return body


def restricted_violations(container: Any, pod_sc: Any) -> list[str]:
    sc = container.security_context
    why = []
    if not (sc and sc.run_as_non_root) and not (pod_sc and pod_sc.run_as_non_root):
        why.append("runAsNonRoot")
    if not sc or sc.allow_privilege_escalation is not False:
        why.append("allowPrivilegeEscalation")
    if not sc or not sc.capabilities or "ALL" not in (sc.capabilities.drop or []):
        why.append("capabilities")
    seccomp = (sc and sc.seccomp_profile) or (pod_sc and pod_sc.seccomp_profile)
    if not seccomp or seccomp.type != "RuntimeDefault":
        why.append("seccompProfile")
    return why


def test_a_tasks_pods_run_where_the_namespace_enforces_restricted(
        restricted_ws: Workspace) -> None:
    ws = restricted_ws
    labels = ws.core.read_namespace(ws.namespace).metadata.labels
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    name = ws.tasks.create(example_with("preprocessing"))["metadata"]["name"]
    st = ws.tasks.wait_state(name, "completed", timeout=240)["status"]
    for s in ("download", "run", "upload"):
        pod = ws.core.read_namespaced_pod(step(st, s)["pod"], ws.namespace)
        every = [*(pod.spec.init_containers or []), *pod.spec.containers]
        assert {c.name for c in every} == {"init", "wait", "main"}, s
        for c in every:
            assert restricted_violations(c, pod.spec.security_context) == [], (s, c.name)
        uids = {c.name: (c.security_context.run_as_user if c.security_context else None)
                for c in every}
        assert uids["init"] == uids["wait"] == 8737, uids  # Argo's own executor user
        assert uids["main"] == (None if s == "run" else 65532), uids


def test_a_root_image_is_told_which_field_to_set_then_runs_as_root(ws: Workspace) -> None:
    refused = ws.tasks.create(root_image_task("root-default"))["metadata"]["name"]
    st = ws.tasks.wait(refused, lambda s: "securityContext.runAsUser" in s.get("message", ""),
                       "the task to say which field lets root run", timeout=180)["status"]
    assert "image will run as root" in st["message"], st["message"]
    assert st["executeStep"] == "run_task"

    root = ws.tasks.create(root_image_task("root-asked", {"runAsUser": 0}))["metadata"]["name"]
    st = ws.tasks.wait_state(root, "completed", timeout=240)["status"]
    assert stored(ws.s3, st["outputs"]["uri"]) == b"0", "the run step ran as root"


def test_root_where_restricted_is_enforced_fails_naming_pod_security(
        restricted_ws: Workspace) -> None:
    ws = restricted_ws
    name = ws.tasks.create(root_image_task("root-refused", {"runAsUser": 0}))
    name = name["metadata"]["name"]
    t0 = time.monotonic()
    st = ws.tasks.wait_state(name, "failed", timeout=180)["status"]
    assert st["executeStep"] == "run_task"
    message = st["message"]
    assert "violates PodSecurity" in message and "restricted" in message, message
    assert "spec.steps.run.securityContext" in message, message
    assert time.monotonic() - t0 < 180
