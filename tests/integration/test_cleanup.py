"""What finished tasks release, on the real API server with the operator running: the working
volume on completion (kept on failure, released once a retry completes), earlier attempts'
Workflows, superseded retry pods, TTL after finish for MLTasks and Pipelines, archive and
unarchive with their refusals."""

from __future__ import annotations

import time
import uuid

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.tasks import RESULT, G, Tasks, V, cond, example
from harness.waiting import gone, until
from mltask_operator.labels import ARCHIVED
from mltask_operator.mltask_status import pod_name

pytestmark = pytest.mark.integration


@pytest.fixture
def tasks(api: client.ApiClient, namespace: str, operator) -> Tasks:
    return Tasks(api, namespace)


def pvc_exists(tasks: Tasks, name: str) -> bool:
    try:
        pvc = tasks.core.read_namespaced_persistent_volume_claim(f"{name}-work", tasks.ns)
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise
    return pvc.metadata.deletion_timestamp is None


def workflow_names(tasks: Tasks) -> set[str]:
    return {w["metadata"]["name"] for w in tasks.workflows()}


def fail_run(argo, namespace: str, wf: str) -> None:
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    argo.update(namespace, wf, argo_fn.finish_pod, "download")
    argo.update(namespace, wf, argo_fn.run_pod, "run")
    argo.update(namespace, wf, argo_fn.finish_pod, "run", "Failed", exit_code=3,
                message="loss is NaN")


def new_task(tasks: Tasks, kind: str = "training", **spec: object) -> str:
    body = example(kind)
    body["metadata"]["name"] = f"{kind[:5]}-{uuid.uuid4().hex[:6]}"
    body["spec"].update(spec)
    if kind == "training":
        body["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    return tasks.create(body)["metadata"]["name"]


# ------------------------------------------------------------------------ working volume


def test_volume_released_on_completion(tasks: Tasks, argo, namespace: str) -> None:
    name = new_task(tasks)
    argo.wait_for(namespace, f"{name}-1")
    until(lambda: pvc_exists(tasks, name), "the working volume")
    argo.update(namespace, f"{name}-1", argo_fn.succeed_all, result=RESULT)
    st = tasks.wait(name, lambda s: (s.get("released") or {}).get("workVolume"),
                    "the volume released")["status"]
    assert st["status"] == "completed"
    assert st["released"]["workVolume"] == f"{name}-work" and st["released"]["workVolumeTime"]
    until(lambda: not pvc_exists(tasks, name), "the PVC deleted")
    assert f"{name}-1" in workflow_names(tasks), "the current attempt's Workflow stays"


def test_volume_kept_on_failure_then_released_after_the_retry_completes(
        tasks: Tasks, argo, namespace: str) -> None:
    name = new_task(tasks)
    argo.wait_for(namespace, f"{name}-1")
    fail_run(argo, namespace, f"{name}-1")
    st = tasks.wait_state(name, "failed")["status"]
    time.sleep(1.5)  # a few reconciles: nothing may be released
    assert pvc_exists(tasks, name) and not tasks.get(name)["status"].get("released")

    tasks.patch(name, {"retryGeneration": 1})
    argo.wait_for(namespace, f"{name}-2")
    st = tasks.wait(name, lambda s: f"{name}-1" in (s.get("released") or {}).get(
        "workflows", []), "attempt 1's Workflow released")["status"]
    until(lambda: workflow_names(tasks) == {f"{name}-2"}, "only attempt 2's Workflow left")
    assert pvc_exists(tasks, name), "the retry runs on the volume"
    argo.update(namespace, f"{name}-2", argo_fn.succeed_all, result=RESULT)
    st = tasks.wait(name, lambda s: s.get("status") == "completed"
                    and (s.get("released") or {}).get("workVolume"), "released")["status"]
    assert st["released"]["workflows"] == [f"{name}-1"]
    until(lambda: not pvc_exists(tasks, name), "the PVC deleted")


def test_keep_work_volume_keeps_it(tasks: Tasks, argo, namespace: str) -> None:
    name = new_task(tasks, cleanup={"keepWorkVolume": True, "podGC": "OnPodSuccess"})
    wf = argo.wait_for(namespace, f"{name}-1")
    assert wf["spec"]["podGC"] == {"strategy": "OnPodSuccess"}
    argo.update(namespace, f"{name}-1", argo_fn.succeed_all, result=RESULT)
    tasks.wait_state(name, "completed")
    time.sleep(1.5)
    assert pvc_exists(tasks, name)
    assert not (tasks.get(name)["status"].get("released") or {}).get("workVolume")
    tasks.patch(name, {"cleanup": {"keepWorkVolume": False}})  # cleanup may change
    tasks.wait(name, lambda s: (s.get("released") or {}).get("workVolume"), "released")
    until(lambda: not pvc_exists(tasks, name), "the PVC deleted")


def test_superseded_retry_pods_are_deleted_once_the_step_ends(
        tasks: Tasks, argo, namespace: str) -> None:
    """No kubelet runs here: pods named as Argo names them stand for the step's pods."""
    body = example("training")
    name = body["metadata"]["name"] = f"retry-{uuid.uuid4().hex[:6]}"
    tasks.create(body)  # retryPolicy OnError, limit 3
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    pods = [pod_name(wf, f"{wf}.download({i})", "download") for i in range(3)]
    for pod in pods:
        tasks.core.create_namespaced_pod(namespace, client.V1Pod(
            metadata=client.V1ObjectMeta(name=pod),
            spec=client.V1PodSpec(node_name="nowhere", containers=[
                client.V1Container(name="main", image="none")])))
    for _ in range(2):  # two pods lost to the infrastructure, retried by Argo
        argo.update(namespace, wf, argo_fn.run_pod, "download")
        argo.update(namespace, wf, argo_fn.finish_pod, "download", "Error")
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    tasks.wait(name, lambda s: any(x.get("retries") == 2 for x in s.get("steps") or []),
               "two retries")
    time.sleep(1)
    assert all(exists(tasks, p) for p in pods), "while the step runs, its failed pods stay"
    argo.update(namespace, wf, argo_fn.finish_pod, "download")
    st = tasks.wait(name, lambda s: (s.get("released") or {}).get("retryPods") == 2,
                    "two retry pods released")["status"]
    assert st["status"] == "running"
    until(lambda: not exists(tasks, pods[0]) and not exists(tasks, pods[1]), "pods deleted")
    assert exists(tasks, pods[2]), "the step's latest pod stays (its logs)"


def exists(tasks: Tasks, pod: str) -> bool:
    """The pod exists and is not being deleted (no kubelet runs here to finish a deletion)."""
    try:
        return tasks.core.read_namespaced_pod(pod, tasks.ns).metadata.deletion_timestamp is None
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


# ----------------------------------------------------------------------------------- TTL


def test_ttl_deletes_a_finished_task_and_what_it_owns(tasks: Tasks, argo,
                                                      namespace: str) -> None:
    name = new_task(tasks, ttlSecondsAfterFinished=2)
    other = new_task(tasks)
    argo.wait_for(namespace, f"{name}-1")
    argo.wait_for(namespace, f"{other}-1")
    fail_run(argo, namespace, f"{name}-1")
    fail_run(argo, namespace, f"{other}-1")
    done = tasks.wait_state(name, "failed")["status"]["completionTime"]
    assert done
    until(lambda: gone(lambda: tasks.get(name)), "the task deleted by its TTL", timeout=20)
    until(lambda: f"{name}-1" not in workflow_names(tasks), "its Workflow collected")
    until(lambda: not pvc_exists(tasks, name), "its volume collected")
    assert tasks.get(other)["status"]["status"] == "failed", "no TTL: it stays"


def test_pipeline_ttl_takes_its_tasks_which_ignore_their_own(
        api: client.ApiClient, tasks: Tasks, argo, namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    pname = f"p-{uuid.uuid4().hex[:6]}"
    objects.create_namespaced_custom_object(G, V, namespace, "pipelines", {
        "apiVersion": f"{G}/{V}", "kind": "Pipeline", "metadata": {"name": pname},
        "spec": {"ttlSecondsAfterFinished": 3,
                 "tasks": [{"name": "prep", "spec": example("preprocessing")["spec"]}]}})
    child = f"{pname}-prep"
    argo.wait_for(namespace, f"{child}-1")
    # the child's own TTL (set on it directly) is ignored: it goes with its pipeline
    tasks.patch(child, {"ttlSecondsAfterFinished": 0})
    argo.update(namespace, f"{child}-1", argo_fn.succeed_all, result=RESULT)
    tasks.wait_state(child, "completed")
    time.sleep(1.5)
    assert tasks.get(child), "the child outlives its own TTL"
    until(lambda: gone(lambda: objects.get_namespaced_custom_object(
        G, V, namespace, "pipelines", pname)), "the pipeline deleted by its TTL", timeout=20)
    until(lambda: gone(lambda: tasks.get(child)), "its task collected with it")


# ------------------------------------------------------------------------------- archive


def test_archive_releases_and_keeps_the_results_then_unarchive(
        tasks: Tasks, argo, namespace: str) -> None:
    name = new_task(tasks)
    argo.wait_for(namespace, f"{name}-1")
    fail_run(argo, namespace, f"{name}-1")
    tasks.wait_state(name, "failed")
    tasks.patch(name, {"retryGeneration": 1})
    argo.wait_for(namespace, f"{name}-2")
    argo.update(namespace, f"{name}-2", argo_fn.succeed_all, result=RESULT,
                metrics={"accuracy": 0.97})
    before = tasks.wait_state(name, "completed")["status"]

    tasks.patch(name, {"archived": True})
    obj = tasks.wait(name, lambda s: cond(s, "Archived")["status"] == "True"
                     if any(c["type"] == "Archived" for c in s.get("conditions") or [])
                     else False, "archived")
    st = obj["status"]
    assert obj["metadata"]["labels"][ARCHIVED] == "true"
    assert (st["outputs"], st["metrics"], st["status"]) == (
        before["outputs"], {"accuracy": 0.97}, "completed")
    assert sorted(st["released"]["workflows"]) == [f"{name}-1", f"{name}-2"]
    until(lambda: not workflow_names(tasks), "every Workflow deleted")
    until(lambda: not pvc_exists(tasks, name), "the volume released")
    hidden = tasks.objects.list_namespaced_custom_object(
        G, V, namespace, "mltasks", label_selector=f"!{ARCHIVED}")["items"]
    assert name not in [t["metadata"]["name"] for t in hidden]

    for refused in ({"retryGeneration": 2}, {"suspend": True}):
        if "suspend" in refused:
            tasks.patch(name, refused)  # stopping an archived task is allowed...
            with pytest.raises(client.ApiException) as err:
                tasks.patch(name, {"suspend": False})  # ...continuing it is not
        else:
            with pytest.raises(client.ApiException) as err:
                tasks.patch(name, refused)
        assert err.value.status == 422
        assert "spec.archived" in err.value.body and "unarchive" in err.value.body

    tasks.patch(name, {"archived": False, "suspend": False, "retryGeneration": 2})
    obj = tasks.wait(name, lambda s: s.get("attempt") == 3, "the retry after unarchive")
    assert ARCHIVED not in (obj["metadata"].get("labels") or {})
    assert cond(obj["status"], "Archived")["reason"] == "Unarchived"
    argo.wait_for(namespace, f"{name}-3")
    until(lambda: pvc_exists(tasks, name), "the volume made again")


def test_archiving_a_running_task_stops_it_first(tasks: Tasks, argo, namespace: str) -> None:
    name = new_task(tasks)
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    tasks.wait_state(name, "running")
    tasks.patch(name, {"archived": True})
    until(lambda: argo.get(namespace, wf)["spec"].get("shutdown") == "Stop", "the stop")
    # the Workflow's stop is written before the status that says so
    until(lambda: any(c["type"] == "Archived" and c["reason"] == "Stopping"
                      for c in tasks.get(name)["status"].get("conditions", [])),
          "the Archived condition to say Stopping")
    argo.update(namespace, wf, argo_fn.stop)
    obj = tasks.wait(name, lambda s: s.get("status") == "stopped"
                     and cond(s, "Archived")["status"] == "True", "stopped and archived")
    assert obj["metadata"]["labels"][ARCHIVED] == "true"
    until(lambda: not workflow_names(tasks), "its Workflow deleted")


def test_archive_a_pipeline_and_its_tasks(api: client.ApiClient, tasks: Tasks, argo,
                                          namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    pname = f"p-{uuid.uuid4().hex[:6]}"
    objects.create_namespaced_custom_object(G, V, namespace, "pipelines", {
        "apiVersion": f"{G}/{V}", "kind": "Pipeline", "metadata": {"name": pname},
        "spec": {"tasks": [{"name": "prep", "spec": example("preprocessing")["spec"]}]}})
    child = f"{pname}-prep"
    argo.wait_for(namespace, f"{child}-1")
    argo.update(namespace, f"{child}-1", argo_fn.succeed_all, result=RESULT)

    def pipeline() -> dict:
        return objects.get_namespaced_custom_object(G, V, namespace, "pipelines", pname)

    until(lambda: (pipeline().get("status") or {}).get("status") == "completed", "completed")
    objects.patch_namespaced_custom_object(G, V, namespace, "pipelines", pname,
                                           {"spec": {"archived": True}})
    until(lambda: pipeline()["metadata"].get("labels", {}).get(ARCHIVED) == "true",
          "the pipeline labelled")
    until(lambda: tasks.get(child)["metadata"].get("labels", {}).get(ARCHIVED) == "true",
          "its task archived and labelled")
    assert tasks.get(child)["spec"]["archived"] is True
    assert cond(pipeline()["status"], "Archived")["status"] == "True"
    until(lambda: not workflow_names(tasks), "the task's Workflow deleted")
    with pytest.raises(client.ApiException) as err:
        objects.patch_namespaced_custom_object(G, V, namespace, "pipelines", pname,
                                               {"spec": {"retryGeneration": 1}})
    assert err.value.status == 422 and "unarchive" in err.value.body

    objects.patch_namespaced_custom_object(G, V, namespace, "pipelines", pname,
                                           {"spec": {"archived": False}})
    until(lambda: ARCHIVED not in (pipeline()["metadata"].get("labels") or {}),
          "the pipeline unlabelled")
    until(lambda: ARCHIVED not in (tasks.get(child)["metadata"].get("labels") or {}),
          "its task unarchived")
    assert pipeline()["status"]["status"] == "completed"
