"""MLTask end to end on the real API server: the operator process creates Workflows that Argo's
full CRD accepts, and mirrors their progress (driven by the Argo stand-in) into the task status.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.policies import denying
from harness.tasks import RESULT, G, P, Tasks, V, cond, example, step

pytestmark = pytest.mark.integration


@pytest.fixture
def tasks(api: client.ApiClient, namespace: str, operator) -> Tasks:
    return Tasks(api, namespace)


def training_at_its_run_step(tasks: Tasks, argo, namespace: str) -> tuple[str, str]:
    """The training example, its download done and its run pod running: (task, Workflow)."""
    name = tasks.create(example("training"))["metadata"]["name"]
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    argo.update(namespace, wf, argo_fn.finish_pod, "download")
    argo.update(namespace, wf, argo_fn.run_pod, "run")
    return name, wf


def test_training_task_runs_to_completion(tasks: Tasks, argo, namespace: str) -> None:
    body = example("training")
    body["metadata"]["labels"] = {"app.kubernetes.io/instance": "ml-team-apps", "team": "vision"}
    task = tasks.create(body)
    name = task["metadata"]["name"]
    wf_name = f"{name}-1"

    st = tasks.wait(name, lambda s: s.get("workflowName") == wf_name, "Workflow name")["status"]
    assert st["status"] == "init" and st["executeStep"] == "prepare_file"
    assert {c["type"] for c in st["conditions"]} == {"Succeeded", "Running", "Stopped", "Failed",
                                                     "Ready"}
    assert cond(st, "Succeeded")["status"] == "Unknown"

    wf = argo.wait_for(namespace, wf_name)
    assert wf["metadata"]["labels"]["mltask.dev/task"] == name
    for labels in (wf["metadata"]["labels"], wf["spec"]["podMetadata"]["labels"]):
        assert "app.kubernetes.io/instance" not in labels and "team" not in labels
    owner = wf["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "MLTask", name, task["metadata"]["uid"], True)
    assert [t["name"] for t in wf["spec"]["templates"][0]["dag"]["tasks"]] == [
        "download", "run", "upload"]
    run_tpl = next(t for t in wf["spec"]["templates"] if t["name"] == "run")
    assert run_tpl["container"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "envFrom" not in run_tpl["container"], "the run step must not see storage credentials"
    assert wf["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    pvc = tasks.core.read_namespaced_persistent_volume_claim(f"{name}-work", namespace)
    assert pvc.metadata.owner_references[0].uid == task["metadata"]["uid"]

    argo.update(namespace, wf_name, argo_fn.run_pod, "download")
    tasks.wait_state(name, "running", "download")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "download")
    argo.update(namespace, wf_name, argo_fn.run_pod, "run")
    st = tasks.wait(name, lambda s: any(x["name"] == "run" for x in s.get("steps") or []),
                    "the run pod")["status"]
    assert (st["status"], st["executeStep"]) == ("running", "run_task")
    assert step(st, "download")["phase"] == "Succeeded"
    assert step(st, "run")["pod"].startswith(f"{wf_name}-run-")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "run",
                outputs={"metrics": json.dumps({"accuracy": 0.93, "loss": 0.21})})
    argo.update(namespace, wf_name, argo_fn.run_pod, "upload")
    tasks.wait_state(name, "running", "upload")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "upload",
                outputs={"result": json.dumps(RESULT)})
    st = tasks.wait_state(name, "completed", "done")["status"]

    assert st["outputs"] == {"kind": "model", "name": "digits-mlp", "id": "model-42",
                             "uri": RESULT["uri"], "size": RESULT["size"],
                             "sha256": RESULT["sha256"]}
    assert st["metrics"] == {"accuracy": 0.93, "loss": 0.21}
    assert cond(st, "Succeeded")["status"] == "True"
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "Running")["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in st["conditions"])
    assert st["observedGeneration"] == 1
    assert st["completionTime"] and st["startTime"] and st["duration"]
    assert [s["phase"] for s in st["steps"]] == ["Succeeded"] * 3
    reasons = [e["reason"] for e in tasks.wait_event(name, "Completed")]
    assert "Completed" in reasons and reasons.count("StatusChanged") >= 3, reasons


def test_failed_run_step_then_retry_creates_exactly_one_new_workflow(
        tasks: Tasks, argo, namespace: str) -> None:
    body = example("training")
    body["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    name = tasks.create(body)["metadata"]["name"]
    wf1 = f"{name}-1"
    argo.wait_for(namespace, wf1)
    for s in ("download",):
        argo.update(namespace, wf1, argo_fn.run_pod, s)
        argo.update(namespace, wf1, argo_fn.finish_pod, s)
    argo.update(namespace, wf1, argo_fn.run_pod, "run")
    argo.update(namespace, wf1, argo_fn.finish_pod, "run", "Failed", exit_code=2,
                message="CUDA out of memory")
    st = tasks.wait_state(name, "failed", "run_task")["status"]
    assert "CUDA out of memory" in st["message"] and "exit code 2" in st["message"]
    assert step(st, "run")["exitCode"] == 2
    assert cond(st, "Failed")["status"] == "True"
    assert cond(st, "Succeeded")["status"] == "False"
    tasks.wait_event(name, "Failed", "Warning")

    tasks.patch(name, {"retryGeneration": 1})
    st = tasks.wait(name, lambda s: s.get("attempt") == 2, "attempt 2")["status"]
    assert st["status"] == "retry"
    wf2 = argo.wait_for(namespace, f"{name}-2")
    assert [t["name"] for t in wf2["spec"]["templates"][0]["dag"]["tasks"]] == [
        "download", "run", "upload"]
    time.sleep(1)  # let any stray duplicate appear
    # attempt 1's Workflow (and its pods) is released once attempt 2 runs
    assert sorted(w["metadata"]["name"] for w in tasks.workflows()) == [f"{name}-2"]
    assert tasks.get(name)["status"]["released"]["workflows"] == [wf1]

    argo.update(namespace, f"{name}-2", argo_fn.run_pod, "download")
    tasks.wait_state(name, "running", "download")
    argo.update(namespace, f"{name}-2", argo_fn.succeed_all, result=RESULT)
    st = tasks.wait_state(name, "completed", "done")["status"]
    assert st["attempt"] == 2


def test_automatic_retry_of_lost_pod_shows_retry(tasks: Tasks, argo, namespace: str) -> None:
    name, wf = training_at_its_run_step(tasks, argo, namespace)  # retryOn OnError, limit 3
    tasks.wait_state(name, "running", "run_task")
    # the GPU spot node went away: Argo marks the pod Error and retries it
    argo.update(namespace, wf, argo_fn.finish_pod, "run", "Error", message="pod deleted")
    st = tasks.wait_state(name, "retry", "run_task")["status"]
    assert st["message"] == "Retrying run step (retry 1 of 3) after: pod deleted"
    assert step(st, "run")["retries"] == 0, "the next pod is not there yet"
    tasks.wait_event(name, "Retrying", "Warning")
    argo.update(namespace, wf, argo_fn.run_pod, "run")
    st = tasks.wait(name, lambda s: s.get("status") == "running"
                    and step(s, "run").get("retries") == 1, "the retried run pod")["status"]
    assert st["executeStep"] == "run_task"
    argo.update(namespace, wf, argo_fn.finish_pod, "run")
    argo.update(namespace, wf, argo_fn.run_pod, "upload")
    argo.update(namespace, wf, argo_fn.finish_pod, "upload", outputs={"result": json.dumps(RESULT)})
    tasks.wait_state(name, "completed", "done")


@pytest.mark.parametrize("message", [
    "The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi.",
    "Pod was terminated in response to imminent node shutdown.",
])
def test_evicted_or_shut_down_pod_is_retried_under_on_error(tasks: Tasks, argo, namespace,
                                                             message: str) -> None:
    """The kubelet's eviction and graceful node shutdown (GPU spot nodes) make Argo nodes
    Failed with the kubelet's message: still the infrastructure, so the default retries them."""
    name, wf = training_at_its_run_step(tasks, argo, namespace)
    argo.update(namespace, wf, argo_fn.finish_pod, "run", "Failed", exit_code=137,
                message=message)
    st = tasks.wait_state(name, "retry", "run_task")["status"]
    assert st["message"] == f"Retrying run step (retry 1 of 3) after: {message}"
    assert argo.get(namespace, wf)["status"]["phase"] == "Running"


def test_user_code_failure_is_not_retried_under_on_error(tasks: Tasks, argo, namespace) -> None:
    name = tasks.create(example("training"))["metadata"]["name"]
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    argo.update(namespace, wf, argo_fn.finish_pod, "download", "Failed", exit_code=1)
    st = tasks.wait_state(name, "failed", "download")["status"]
    assert step(st, "download")["retries"] == 0


def _stopping_in_run_step(tasks: Tasks, argo, namespace: str, kind: str) -> tuple[str, str]:
    """Create a `kind` example, run it into its run step and ask it to stop: (task, Workflow)."""
    name = tasks.create(example(kind))["metadata"]["name"]
    wf1 = f"{name}-1"
    argo.wait_for(namespace, wf1)
    argo.update(namespace, wf1, argo_fn.run_pod, "download")
    argo.update(namespace, wf1, argo_fn.finish_pod, "download")
    argo.update(namespace, wf1, argo_fn.run_pod, "run")
    tasks.wait_state(name, "running", "run_task")
    tasks.patch(name, {"suspend": True})
    tasks.wait_state(name, "stopping", "run_task")
    return name, wf1


def test_stop_then_continue_resumes_at_the_unfinished_step(tasks: Tasks, argo, namespace) -> None:
    name, wf1 = _stopping_in_run_step(tasks, argo, namespace, "optimization")
    assert argo.get(namespace, wf1)["spec"]["shutdown"] == "Stop"
    argo.update(namespace, wf1, argo_fn.stop)
    st = tasks.wait_state(name, "stopped", "run_task")["status"]
    assert cond(st, "Stopped")["status"] == "True"
    assert st["completionTime"]

    tasks.wait_event(name, "Stopping")
    tasks.wait_event(name, "Stopped")

    tasks.patch(name, {"suspend": False})
    st = tasks.wait(name, lambda s: s.get("attempt") == 2, "attempt 2")["status"]
    assert st["executeStep"] == "run_task", "continue resumes at run, never back to prepare"
    wf2 = argo.wait_for(namespace, f"{name}-2")
    assert [t["name"] for t in wf2["spec"]["templates"][0]["dag"]["tasks"]] == ["run", "upload"]
    assert wf2["metadata"]["annotations"]["mltask.dev/start-step"] == "run"
    assert step(st, "download")["attempt"] == 1 and step(st, "download")["phase"] == "Succeeded"
    argo.update(namespace, f"{name}-2", argo_fn.run_pod, "run")
    st = tasks.wait(name, lambda s: s.get("status") == "running"
                    and step(s, "run").get("attempt") == 2, "attempt 2's run pod")["status"]
    assert step(st, "run")["phase"] == "Running"
    argo.update(namespace, f"{name}-2", argo_fn.finish_pod, "run")
    argo.update(namespace, f"{name}-2", argo_fn.run_pod, "upload")
    argo.update(namespace, f"{name}-2", argo_fn.finish_pod, "upload",
                outputs={"result": json.dumps(RESULT)})
    st = tasks.wait_state(name, "completed", "done")["status"]
    assert [(s["name"], s["attempt"]) for s in st["steps"]] == [
        ("download", 1), ("run", 2), ("upload", 2)]


def test_stopping_task_whose_workflow_is_deleted_ends_stopped(tasks: Tasks, argo,
                                                            namespace) -> None:
    """Nothing will ever end a Workflow that is gone: the stop completes, and continue works."""
    name, wf1 = _stopping_in_run_step(tasks, argo, namespace, "training")
    argo.objects.delete_namespaced_custom_object("argoproj.io", "v1alpha1", namespace,
                                                 "workflows", wf1)
    st = tasks.wait_state(name, "stopped", "run_task")["status"]
    assert st["message"] == "Stopped" and cond(st, "Stopped")["status"] == "True"
    assert step(st, "download")["phase"] == "Succeeded"
    assert step(st, "run")["phase"] == "Failed", "no pod runs once its Workflow is gone"
    tasks.patch(name, {"suspend": False})
    wf2 = argo.wait_for(namespace, f"{name}-2")
    assert wf2["metadata"]["annotations"]["mltask.dev/start-step"] == "run"


def test_completed_task_ignores_stale_workflow_and_stop(tasks: Tasks, argo, namespace) -> None:
    name = tasks.create(example("preprocessing"))["metadata"]["name"]
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    argo.update(namespace, wf, argo_fn.succeed_all,
                result={"uri": "s3://mltask-examples/datasets/digits/digits-minmax.npz",
                        "size": 1, "sha256": "cd" * 32})
    st = tasks.wait_state(name, "completed", "done")["status"]
    assert st["outputs"]["kind"] == "dataset"
    tasks.patch(name, {"suspend": True})
    time.sleep(1.5)
    assert tasks.get(name)["status"]["status"] == "completed"
    assert "shutdown" not in argo.get(namespace, wf)["spec"]


def test_from_task_input_waits_for_upstream_then_uses_its_output(
        tasks: Tasks, argo, namespace: str) -> None:
    train = example("training")
    train["metadata"]["name"] = "train-from-upstream"
    train["spec"]["input"]["dataset"] = {"fromTask": "preprocess-digits", "kind": "project"}
    tasks.create(train)
    st = tasks.wait(train["metadata"]["name"],
                    lambda s: "preprocess-digits" in (s.get("message") or ""),
                    "waiting message")["status"]
    assert st["status"] == "init" and st["executeStep"] == "prepare_file"
    assert cond(st, "Running")["reason"] == "WaitingForInputs"
    assert st["observedGeneration"] == 1
    assert not tasks.workflows()

    tasks.create(example("preprocessing"))
    argo.wait_for(namespace, "preprocess-digits-1")
    uri = "s3://mltask-examples/datasets/digits/digits-minmax-abc.npz"
    argo.update(namespace, "preprocess-digits-1", argo_fn.succeed_all,
                result={"uri": uri, "size": 10, "sha256": "ef" * 32})
    wf = argo.wait_for(namespace, "train-from-upstream-1", timeout=30)
    env = {e["name"]: e.get("value") for e in wf["spec"]["templates"][1]["container"]["env"]}
    assert env["MLTASK_INPUT_DATASET_URI"] == uri


def test_operator_killed_mid_task_restarts_without_duplicates(
        tasks: Tasks, argo, namespace: str, operator) -> None:
    name = tasks.create(example("training"))["metadata"]["name"]
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    tasks.wait_state(name, "running", "download")

    operator.kill()
    argo.update(namespace, wf, argo_fn.finish_pod, "download")
    argo.update(namespace, wf, argo_fn.run_pod, "run")
    assert tasks.get(name)["status"]["executeStep"] == "download"  # nobody is watching
    operator.start()
    st = tasks.wait_state(name, "running", "run_task")["status"]
    assert st["attempt"] == 1
    assert [w["metadata"]["name"] for w in tasks.workflows()] == [wf]


def test_deleting_the_task_deletes_its_workflow_and_volume(
        tasks: Tasks, argo, namespace: str) -> None:
    name = tasks.create(copy.deepcopy(example("training")))["metadata"]["name"]
    argo.wait_for(namespace, f"{name}-1")
    tasks.objects.delete_namespaced_custom_object(G, V, namespace, P, name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pvcs = tasks.core.list_namespaced_persistent_volume_claim(namespace).items
        if not tasks.workflows() and not [p for p in pvcs if not p.metadata.deletion_timestamp]:
            return
        time.sleep(0.3)
    raise AssertionError("Workflow or PVC not garbage-collected")


def test_list_with_field_selectors(tasks: Tasks, argo, namespace: str) -> None:
    for kind in ("training", "preprocessing", "optimization"):
        body = example(kind)
        if kind == "preprocessing":  # as a task of a pipeline (the examples stand alone)
            body["spec"]["pipelineRef"] = {"name": "digits"}
        tasks.create(body)
    argo.wait_for(namespace, "preprocess-digits-1")
    argo.update(namespace, "preprocess-digits-1", argo_fn.run_pod, "download")
    argo.update(namespace, "preprocess-digits-1", argo_fn.finish_pod, "download", "Failed")
    tasks.wait_state("preprocess-digits", "failed")

    def names(selector: str) -> list[str]:
        items = tasks.objects.list_namespaced_custom_object(
            G, V, namespace, P, field_selector=selector)["items"]
        return sorted(i["metadata"]["name"] for i in items)

    assert names("spec.type=training") == ["train-digits"]
    assert names("status.status=failed") == ["preprocess-digits"]
    assert names("spec.pipelineRef.name=digits") == ["preprocess-digits"]
    assert names("status.status!=failed") == ["optimize-digits", "train-digits"]


def test_task_created_suspended_is_stopped_before_any_step(tasks: Tasks, argo,
                                                           namespace: str) -> None:
    body = example("training")
    body["spec"]["suspend"] = True
    name = tasks.create(body)["metadata"]["name"]
    st = tasks.wait_state(name, "stopped", "prepare_file")["status"]
    assert st["message"] == "Stopped before any step ran"
    assert st["observedGeneration"] == 1 and st["attempt"] == 0
    assert not tasks.workflows()
    tasks.patch(name, {"description": "reviewed"})  # generation 2: observed without a run
    tasks.wait(name, lambda s: s.get("observedGeneration") == 2, "generation 2 observed")
    tasks.patch(name, {"suspend": False})
    argo.wait_for(namespace, f"{name}-1")


def test_retry_of_a_stopped_task_waits_for_suspend_false(tasks: Tasks, argo,
                                                         namespace: str) -> None:
    """Stopped means suspend is true: a retry asked then is held, and says so, until the user
    also sets suspend back to false; then it runs from download as a new attempt."""
    name, wf1 = _stopping_in_run_step(tasks, argo, namespace, "training")
    argo.update(namespace, wf1, argo_fn.stop)
    tasks.wait_state(name, "stopped", "run_task")
    tasks.patch(name, {"retryGeneration": 1})
    st = tasks.wait(name, lambda s: "Retry 1 waits" in (s.get("message") or ""),
                    "the held retry")["status"]
    assert st["status"] == "stopped" and st["attempt"] == 1
    tasks.wait_event(name, "RetryHeld", "Warning")
    assert [w["metadata"]["name"] for w in tasks.workflows()] == [wf1]

    tasks.patch(name, {"suspend": False})
    st = tasks.wait(name, lambda s: s.get("attempt") == 2, "attempt 2")["status"]
    assert st["status"] == "retry" and "waits" not in st["message"]
    assert any(e["message"].endswith("Retry: attempt 2 starts from download")
               for e in tasks.wait_event(name, "Retrying", "Warning"))
    wf2 = argo.wait_for(namespace, f"{name}-2")
    assert wf2["metadata"]["annotations"]["mltask.dev/start-step"] == "download"


def test_workflow_refused_by_a_cluster_policy_fails_the_task(
        tasks: Tasks, api: client.ApiClient, namespace: str) -> None:
    """An admission policy (here a ValidatingAdmissionPolicy; Kyverno or Gatekeeper alike)
    refuses the Workflow: retrying cannot help, so the task fails at once and says why."""
    probe = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
             "metadata": {"generateName": "probe-"},
             "spec": {"entrypoint": "m", "templates": [{"name": "m"}]}}
    with denying(api, namespace, group="argoproj.io", version="v1alpha1", plural="workflows",
                 expression="has(object.spec.activeDeadlineSeconds)",
                 message="Workflows must set spec.activeDeadlineSeconds", probe=probe):
        body = example("preprocessing")  # sets no activeDeadlineSeconds
        name = tasks.create(body)["metadata"]["name"]
        st = tasks.wait_state(name, "failed")["status"]
        assert "Workflows must set spec.activeDeadlineSeconds" in st["message"]
        assert cond(st, "Failed")["reason"] == "WorkflowRejected"
        assert cond(st, "Failed")["status"] == "True"
        tasks.wait_event(name, "Failed", "Warning")
        assert not tasks.workflows()
        pvcs = tasks.core.list_namespaced_persistent_volume_claim(namespace).items
        assert not pvcs, "nothing half-created: no working volume for a refused Workflow"


def test_working_volume_refused_by_a_quota_takes_its_workflow_with_it(
        tasks: Tasks, namespace: str) -> None:
    """The Workflow is created first (Argo's schema is the likelier refusal, and asking it
    twice doubles the costliest request); a working volume refused after it (here a quota
    allowing no PersistentVolumeClaims) deletes that Workflow: nothing half-created."""
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-volumes"),
        spec=client.V1ResourceQuotaSpec(hard={"persistentvolumeclaims": "0"}))
    tasks.core.create_namespaced_resource_quota(namespace, quota)
    deadline = time.monotonic() + 30  # the quota controller fills in its status first
    while (not tasks.core.read_namespaced_resource_quota("no-volumes", namespace).status.hard
           and time.monotonic() < deadline):
        time.sleep(0.2)
    try:
        name = tasks.create(example("preprocessing"))["metadata"]["name"]
        st = tasks.wait_state(name, "failed")["status"]
        assert cond(st, "Failed")["reason"] == "VolumeRejected"
        assert f"PersistentVolumeClaim {namespace}/{name}-work was rejected" in st["message"]
        assert "exceeded quota" in st["message"]
        tasks.wait_event(name, "Failed", "Warning")
        deadline = time.monotonic() + 30
        while tasks.workflows() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not tasks.workflows(), "the Workflow created before the volume is deleted"
        assert not tasks.core.list_namespaced_persistent_volume_claim(namespace).items
    finally:
        tasks.core.delete_namespaced_resource_quota("no-volumes", namespace)


def test_the_run_steps_progress_shows_in_status_and_kubectl_get(tasks: Tasks, argo,
                                                                namespace: str,
                                                                control_plane) -> None:
    """Issue 25, item 4: what the run step writes to $MLTASK_PROGRESS_FILE reaches the
    Workflow's node through Argo (the stand-in does Argo's part here, the real one on the real
    node), and the operator shows it: status.progress and the PROGRESS column."""
    name, wf_name = training_at_its_run_step(tasks, argo, namespace)
    tasks.wait_state(name, "running", "run_task")
    for reported in ("12/40", "30/40"):
        argo.update(namespace, wf_name, argo_fn.report_progress, "run", reported)
        tasks.wait(name, lambda s, r=reported: s.get("progress") == r, f"progress {reported}")
    header, row = control_plane.kubectl("get", "mlt", name, "-n", namespace).stdout.splitlines()
    assert header.split()[:5] == ["NAME", "TYPE", "STATUS", "STEP", "PROGRESS"]
    assert row.split()[:5] == [name, "training", "running", "run_task", "30/40"]
    argo.update(namespace, wf_name, argo_fn.finish_pod, "run",
                outputs={"metrics": json.dumps({"accuracy": 0.93})})
    argo.update(namespace, wf_name, argo_fn.run_pod, "upload")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "upload",
                outputs={"result": json.dumps(RESULT)})
    assert tasks.wait_state(name, "completed", "done")["status"]["progress"] == "40/40"
