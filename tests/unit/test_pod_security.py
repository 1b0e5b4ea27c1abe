"""Pod Security of the pods a task makes: restricted by default (Argo's init and wait containers
included), what a step's securityContext changes, the API server's refusals of a bad one, and
the hint a task's message gives when a pod may not run as it asks."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest
from pydantic import ValidationError

from harness import argo_standin as argo
from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import MLTask, MLTaskStatus, StepName
from mltask_operator.builders.workflow import (
    ARGO_EXECUTOR_UID,
    CONTAINER_SECURITY_CONTEXT,
    TRANSFER_SECURITY_CONTEXT,
    ResolvedInputs,
    build_workflow,
)
from mltask_operator.mltask_status import compute_status, with_hint

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)
#: What Pod Security `restricted` asks of every container (pod-level fields count for all).
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def task(run_security: dict[str, Any] | None = None, **steps: Any) -> MLTask:
    body = example("training")
    body["metadata"].update(namespace="ml", uid="u", generation=1)
    if run_security is not None:
        body["spec"]["steps"]["run"]["securityContext"] = run_security
    body["spec"]["steps"].update(steps)
    t = MLTask.model_validate(body)
    return t.model_copy(update={"status": MLTaskStatus(status="init", attempt=1,
                                                       workflow_name=f"{t.name}-1")})


def workflow(t: MLTask) -> dict[str, Any]:
    return build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD,
                          inputs=ResolvedInputs("s3://d/x.zip"))


def containers(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t["container"] for t in wf["spec"]["templates"] if "container" in t}


def restricted(pod_sc: dict[str, Any], sc: dict[str, Any]) -> list[str]:
    """What PodSecurity `restricted` would refuse in one container (empty: allowed); the
    checks of k8s.io/pod-security-admission's restricted policy for these fields."""
    why = []
    non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
    if non_root is not True:
        why.append("runAsNonRoot != true")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
        why.append("runAsUser=0")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        why.append("seccompProfile")
    if sc.get("allowPrivilegeEscalation") is not False:
        why.append("allowPrivilegeEscalation != false")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        why.append("capabilities.drop must include ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        why.append("capabilities.add")
    if sc.get("privileged"):
        why.append("privileged")
    return why


def test_every_container_passes_restricted_by_default() -> None:
    wf = workflow(task())
    pod_sc = wf["spec"]["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "runAsUser" not in pod_sc, "the run step runs as its image's own user"
    for step, c in containers(wf).items():
        assert restricted(pod_sc, c["securityContext"]) == [], step
    assert containers(wf)["run"]["securityContext"] == CONTAINER_SECURITY_CONTEXT
    assert containers(wf)["download"]["securityContext"] == TRANSFER_SECURITY_CONTEXT


def test_argos_init_and_wait_containers_are_patched_to_pass_restricted() -> None:
    """Argo adds init and wait to every pod with the controller's executor settings; the
    Workflow's podSpecPatch (merged by container name, after Argo adds them) locks them down
    whatever those settings say."""
    wf = workflow(task())
    patch = json.loads(wf["spec"]["podSpecPatch"])
    (init,) = patch["initContainers"]
    (wait,) = patch["containers"]
    assert (init["name"], wait["name"]) == ("init", "wait")
    for c in (init, wait):
        assert restricted({}, c["securityContext"]) == []
        assert c["securityContext"]["runAsUser"] == ARGO_EXECUTOR_UID


def test_a_gpu_run_steps_own_patch_stays_beside_the_workflows() -> None:
    from mltask_operator.settings import RunStepDefaults

    t = task()
    wf = build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD,
                        inputs=ResolvedInputs("s3://d/x.zip"),
                        defaults=RunStepDefaults(runtime_class_name="nvidia"))
    run = next(tpl for tpl in wf["spec"]["templates"] if tpl["name"] == "run")
    assert json.loads(run["podSpecPatch"]) == {"runtimeClassName": "nvidia"}
    assert "initContainers" in json.loads(wf["spec"]["podSpecPatch"])


def test_an_image_that_needs_root_says_so_in_the_step() -> None:
    sc = containers(workflow(task({"runAsUser": 0})))["run"]["securityContext"]
    assert sc["runAsUser"] == 0
    assert sc["runAsNonRoot"] is False, "else the pod's runAsNonRoot refuses root"
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert restricted({"runAsNonRoot": True}, sc), "root cannot pass restricted"


def test_a_step_may_run_as_another_user_and_add_a_capability() -> None:
    t = task({"runAsUser": 1001, "runAsGroup": 1001, "capabilities": {"add": ["NET_BIND_SERVICE"]},
              "readOnlyRootFilesystem": True})
    sc = containers(workflow(t))["run"]["securityContext"]
    assert sc == {**CONTAINER_SECURITY_CONTEXT, "runAsUser": 1001, "runAsGroup": 1001,
                  "readOnlyRootFilesystem": True,
                  "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}
    assert restricted(workflow(t)["spec"]["securityContext"], sc) == []


def test_privileged_allows_escalation_unless_told() -> None:
    sc = containers(workflow(task({"privileged": True, "runAsUser": 0})))["run"][
        "securityContext"]
    assert sc["privileged"] is True and sc["allowPrivilegeEscalation"] is True


def test_the_defaults_are_never_shared_between_builds() -> None:
    before = copy.deepcopy(CONTAINER_SECURITY_CONTEXT)
    workflow(task({"capabilities": {"add": ["SYS_PTRACE"]}}))
    assert before == CONTAINER_SECURITY_CONTEXT


def test_a_users_download_step_may_run_as_root_too() -> None:
    t = task(download={"image": "registry.example.com/sync:1", "command": ["sync"],
                       "securityContext": {"runAsUser": 0}})
    sc = containers(workflow(t))["download"]["securityContext"]
    assert (sc["runAsUser"], sc["runAsNonRoot"]) == (0, False)


@pytest.mark.parametrize("bad, field", [
    ({"runAsUser": -1}, "runAsUser"),
    ({"runAsUser": "root"}, "runAsUser"),
    ({"capabilities": {"drop": ["ALL"]}}, "drop"),
    ({"seLinuxOptions": {}}, "seLinuxOptions"),
])
def test_a_bad_security_context_names_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        task(bad)


# --------------------------------------------------------------------------------- hints


ROOT_IMAGE = ("CreateContainerConfigError: container has runAsNonRoot and image will run as "
              "root (pod: \"train-1-run-1\", container: main)")


def test_a_run_pod_refused_for_root_tells_the_user_which_field() -> None:
    t = task()
    wf = argo.run_pod(argo.finish_pod(argo.run_pod(workflow(t), "download"), "download"), "run")
    for n in wf["status"]["nodes"].values():
        if n.get("templateName") == "run":
            n.update(phase="Pending", message=ROOT_IMAGE)
    st = compute_status(t, wf, NOW)
    assert st.execute_step == "run_task"
    assert st.message.startswith("Waiting for the run pod: CreateContainerConfigError")
    assert "spec.steps.run.securityContext.runAsUser" in st.message


def test_hints_name_the_step_and_leave_other_messages_alone() -> None:
    refused = ('pods "t-1-download-1" is forbidden: violates PodSecurity "restricted:latest": '
               'runAsNonRoot != true')
    assert "spec.steps.download.securityContext" in (with_hint("download", refused) or "")
    assert with_hint("run", "ImagePullBackOff: Back-off pulling image") == \
        "ImagePullBackOff: Back-off pulling image"
    assert with_hint("run", None) is None
