"""Pipelines on the real API server: the operator creates child MLTasks as their dependencies
complete and hands outputs on; the Argo stand-in advances each child's Workflow."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.pipelines import DATASET, Pipelines, model_result, pipeline_example, task_state
from harness.policies import denying
from harness.tasks import G, P, V, cond

pytestmark = pytest.mark.integration


@pytest.fixture
def pipes(api: client.ApiClient, namespace: str, operator) -> Pipelines:
    return Pipelines(api, namespace)


def _succeed(argo, ns: str, wf: str, result: dict[str, Any]) -> None:
    argo.wait_for(ns, wf)
    argo.update(ns, wf, argo_fn.succeed_all, result=result, metrics={"accuracy": 0.9})


def _fail_run(argo, ns: str, wf: str, message: str = "MemoryError: out of memory") -> None:
    argo.wait_for(ns, wf)
    argo.update(ns, wf, argo_fn.run_pod, "download")
    argo.update(ns, wf, argo_fn.finish_pod, "download")
    argo.update(ns, wf, argo_fn.run_pod, "run")
    argo.update(ns, wf, argo_fn.finish_pod, "run", "Failed", exit_code=1, message=message)


def _no_retries(body: dict[str, Any]) -> dict[str, Any]:
    for t in body["spec"]["tasks"]:
        t["spec"].setdefault("runtime", {})["retryPolicy"] = {"limit": 0}
    return body


def test_three_stage_pipeline_hands_each_output_to_the_next(pipes: Pipelines, argo,
                                                            namespace: str,
                                                            control_plane) -> None:
    body = pipeline_example("digits")
    body["metadata"]["labels"] = {"app.kubernetes.io/instance": "ml-team-apps"}
    body["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "ml:mltask.dev/x"}
    # placement defaults: preprocess sets none of its own, train its GPU placement
    body["spec"]["defaults"].update(nodeSelector={"pool": "cpu"},
                                    tolerations=[{"key": "spot", "operator": "Exists"}])
    created = pipes.create(body)
    uid = created["metadata"]["uid"]

    pre = pipes.wait_child("digits-preprocess")
    st = pipes.wait(created["metadata"]["name"], lambda s: s.get("progress") == "0/3",
                    "progress")["status"]
    assert st["status"] in ("init", "running")
    assert task_state(st, "train")["status"] == "pending"
    assert task_state(st, "train")["message"] == "waiting for preprocess"
    assert sorted(pipes.children()) == ["digits-preprocess"], "train must wait for its input"
    meta = pre["metadata"]
    assert meta["labels"] == {"mltask.dev/pipeline": "digits",
                              "mltask.dev/pipeline-task": "preprocess",
                              "app.kubernetes.io/managed-by": "mltask-operator"}
    assert "argocd.argoproj.io/tracking-id" not in (meta.get("annotations") or {})
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Pipeline", "digits", uid, True)
    assert pre["spec"]["pipelineRef"] == {"name": "digits"}
    assert pre["spec"]["storage"] == {"secretRef": {"name": "s3-credentials"},
                                      "endpoint": "http://10.244.0.1:9000"}, "default inherited"
    assert pre["spec"]["runtime"]["nodeSelector"] == {"pool": "cpu"}, "default inherited"
    assert pre["spec"]["runtime"]["tolerations"] == [{"key": "spot", "operator": "Exists"}]

    _succeed(argo, namespace, "digits-preprocess-1", DATASET)
    train = pipes.wait_child("digits-train")
    assert train["spec"]["input"]["dataset"] == {"uri": DATASET["uri"], "kind": "project",
                                                 "sha256": DATASET["sha256"]}
    assert train["spec"]["runtime"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, \
        "task overrides default"
    assert [t["key"] for t in train["spec"]["runtime"]["tolerations"]] == ["nvidia.com/gpu"]
    assert "digits-optimize" not in pipes.children()

    model = model_result("digits-mlp")
    _succeed(argo, namespace, "digits-train-1", model)
    opt = pipes.wait_child("digits-optimize")
    assert opt["spec"]["input"]["model"] == {"uri": model["uri"], "sha256": model["sha256"]}
    assert opt["spec"]["input"]["dataset"] == {"uri": DATASET["uri"], "kind": "application",
                                               "sha256": DATASET["sha256"]}

    final = model_result("digits-mlp-int8")
    _succeed(argo, namespace, "digits-optimize-1", final)
    st = pipes.wait_state("digits", "completed")
    assert st["progress"] == "3/3" and st["completedTasks"] == 3 and st["totalTasks"] == 3
    assert [t["outputUri"] for t in st["tasks"]] == [DATASET["uri"], model["uri"], final["uri"]]
    assert [t["mltask"] for t in st["tasks"]] == ["digits-preprocess", "digits-train",
                                                  "digits-optimize"]
    assert cond(st, "Succeeded")["status"] == "True" and cond(st, "Ready")["status"] == "True"
    assert st["startTime"] and st["completionTime"] and st["duration"]
    assert st["observedGeneration"] == 1

    after = pipes.get("digits")
    assert after["spec"] == created["spec"], "the operator never writes into the spec"
    assert after["metadata"]["labels"] == body["metadata"]["labels"]
    reasons = [e["reason"] for e in pipes.wait_event("digits", "Completed")]
    assert reasons.count("TaskCreated") == 3 and "Completed" in reasons, reasons

    # `kubectl get mlp`: the CRD's printer columns, filled from the status
    header, row = control_plane.kubectl("get", "mlp", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "PROGRESS", "AGE", "DURATION"]
    assert row.split()[:3] == ["digits", "completed", "3/3"]
    assert row.split()[4] == st["duration"]
    wide = control_plane.kubectl("get", "mlp", "-n", namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split() == ["NAME", "STATUS", "PROGRESS", "MESSAGE", "AGE",
                                            "DURATION"]
    assert "All 3 tasks completed" in wide


def test_parallel_branches_run_at_the_same_time(pipes: Pipelines, argo, namespace: str) -> None:
    pipes.create(pipeline_example("parallel-training"))
    pipes.wait_child("digits-sweep-preprocess")
    _succeed(argo, namespace, "digits-sweep-preprocess-1", DATASET)
    mlp = pipes.wait_child("digits-sweep-train-mlp")
    logreg = pipes.wait_child("digits-sweep-train-logreg")
    for child in (mlp, logreg):
        assert child["spec"]["input"]["dataset"]["uri"] == DATASET["uri"]
    argo.wait_for(namespace, "digits-sweep-train-mlp-1")
    argo.wait_for(namespace, "digits-sweep-train-logreg-1")
    argo.update(namespace, "digits-sweep-train-mlp-1", argo_fn.run_pod, "download")
    argo.update(namespace, "digits-sweep-train-logreg-1", argo_fn.run_pod, "download")
    st = pipes.wait(
        "digits-sweep",
        lambda s: [task_state(s, t)["status"] for t in ("train-mlp", "train-logreg")]
        == ["running", "running"], "both trainings running")["status"]
    assert st["status"] == "running" and st["progress"] == "1/3"
    _succeed(argo, namespace, "digits-sweep-train-logreg-1", model_result("digits-logreg"))
    _succeed(argo, namespace, "digits-sweep-train-mlp-1", model_result("digits-mlp"))
    assert pipes.wait_state("digits-sweep", "completed")["progress"] == "3/3"


def test_concurrency_limit_runs_one_branch_at_a_time(pipes: Pipelines, argo,
                                                      namespace: str) -> None:
    body = pipeline_example("parallel-training")
    body["spec"]["concurrency"] = 1
    pipes.create(body)
    pipes.wait_child("digits-sweep-preprocess")
    _succeed(argo, namespace, "digits-sweep-preprocess-1", DATASET)
    first = pipes.wait_child("digits-sweep-train-mlp")  # spec order
    st = pipes.wait("digits-sweep", lambda s: "concurrency" in (
        task_state(s, "train-logreg").get("message") or ""), "train-logreg waiting")["status"]
    assert task_state(st, "train-logreg")["status"] == "pending"
    assert "digits-sweep-train-logreg" not in pipes.children()
    _succeed(argo, namespace, f"{first['metadata']['name']}-1", model_result("digits-mlp"))
    pipes.wait_child("digits-sweep-train-logreg")
    _succeed(argo, namespace, "digits-sweep-train-logreg-1", model_result("digits-logreg"))
    pipes.wait_state("digits-sweep", "completed")


def _with_follow_up(fail_fast: bool) -> dict[str, Any]:
    """preprocess -> (train-mlp -> finetune), (train-logreg): train-logreg will fail."""
    body = _no_retries(pipeline_example("parallel-training"))
    body["spec"]["failFast"] = fail_fast
    follow = copy.deepcopy(next(t for t in body["spec"]["tasks"] if t["name"] == "train-mlp"))
    follow["name"] = "finetune"
    follow["dependsOn"] = ["train-mlp"]
    body["spec"]["tasks"].append(follow)
    return body


@pytest.mark.parametrize("fail_fast", [True, False], ids=["failFast", "continue-branches"])
def test_failure_in_the_middle(pipes: Pipelines, argo, namespace: str, fail_fast: bool) -> None:
    pipes.create(_with_follow_up(fail_fast))
    pipes.wait_child("digits-sweep-preprocess")
    _succeed(argo, namespace, "digits-sweep-preprocess-1", DATASET)
    pipes.wait_child("digits-sweep-train-logreg")
    pipes.wait_child("digits-sweep-train-mlp")
    argo.wait_for(namespace, "digits-sweep-train-mlp-1")
    argo.update(namespace, "digits-sweep-train-mlp-1", argo_fn.run_pod, "download")
    _fail_run(argo, namespace, "digits-sweep-train-logreg-1")

    st = pipes.wait("digits-sweep", lambda s: task_state(s, "train-logreg")["status"] == "failed",
                    "train-logreg failed")["status"]
    assert st["status"] == "running", "the pipeline fails only once running tasks end"
    assert "train-logreg failed" in st["message"]
    _succeed(argo, namespace, "digits-sweep-train-mlp-1", model_result("digits-mlp"))
    if fail_fast:
        st = pipes.wait_state("digits-sweep", "failed")
        time.sleep(1)
        assert "digits-sweep-finetune" not in pipes.children(), "nothing new starts"
        assert task_state(st, "finetune")["status"] == "pending"
        assert "failFast" in task_state(st, "finetune")["message"]
        assert st["progress"] == "2/4"
    else:
        pipes.wait_child("digits-sweep-finetune")
        st = pipes.wait_state("digits-sweep", "running")
        _succeed(argo, namespace, "digits-sweep-finetune-1", model_result("finetune"))
        st = pipes.wait_state("digits-sweep", "failed")
        assert st["progress"] == "3/4"
    assert "Task train-logreg failed" in st["message"]
    assert "MemoryError: out of memory" in st["message"]
    assert cond(st, "Failed")["status"] == "True"
    pipes.wait_event("digits-sweep", "Failed", "Warning")


def test_stop_continue_and_retry_cascade(pipes: Pipelines, argo, namespace: str) -> None:
    # stop: the running task is stopped through its own spec.suspend, nothing new starts
    st = _stop_train(pipes, argo, namespace)
    assert task_state(st, "train")["status"] == "stopped"
    assert task_state(st, "optimize")["status"] == "pending"
    assert "optimize not started" in st["message"]
    assert cond(st, "Stopped")["status"] == "True"
    assert pipes.children()["digits-train"]["spec"]["suspend"] is True

    # continue: the stopped task resumes (a new attempt from the step that did not finish)
    pipes.patch("digits", {"suspend": False})
    argo.wait_for(namespace, "digits-train-2")
    assert pipes.children()["digits-train"]["spec"]["suspend"] is False
    pipes.wait_state("digits", "running")
    model = model_result("digits-mlp")
    _succeed(argo, namespace, "digits-train-2", model)

    # a failure of the last task, then retry: only the failed task runs again
    pipes.wait_child("digits-optimize")
    _fail_run(argo, namespace, "digits-optimize-1")
    st = pipes.wait_state("digits", "failed")
    uids = {n: c["metadata"]["uid"] for n, c in pipes.children().items()}
    pipes.patch("digits", {"retryGeneration": 1})
    argo.wait_for(namespace, "digits-optimize-2")
    st = pipes.wait("digits", lambda s: s.get("status") in ("retry", "running"),
                    "retry")["status"]
    children = pipes.children()
    assert {n: c["metadata"]["uid"] for n, c in children.items()} == uids, "no new child"
    assert children["digits-optimize"]["spec"]["retryGeneration"] == 1
    assert children["digits-train"]["spec"]["retryGeneration"] == 0, "completed task kept"
    assert children["digits-preprocess"]["status"]["attempt"] == 1
    _succeed(argo, namespace, "digits-optimize-2", model_result("digits-mlp-int8"))
    st = pipes.wait_state("digits", "completed")
    assert task_state(st, "optimize")["attempt"] == 2
    wfs = sorted(w["metadata"]["name"] for w in pipes.objects.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows")["items"])
    # one Workflow per attempt was made; the earlier attempts' are released once the next runs
    assert wfs == ["digits-optimize-2", "digits-preprocess-1", "digits-train-2"]
    released = {n: (c["status"].get("released") or {}).get("workflows")
                for n, c in pipes.children().items()}
    assert released == {"digits-preprocess": None, "digits-train": ["digits-train-1"],
                        "digits-optimize": ["digits-optimize-1"]}
    reasons = [e["reason"] for e in pipes.wait_event("digits", "Completed")]
    assert "Stopped" in reasons and "Retrying" in reasons, reasons


def _stop_train(pipes: Pipelines, argo, namespace: str) -> dict[str, Any]:
    """digits with preprocess completed and train stopped in its download step."""
    pipes.create(_no_retries(pipeline_example("digits")))
    pipes.wait_child("digits-preprocess")
    _succeed(argo, namespace, "digits-preprocess-1", DATASET)
    pipes.wait_child("digits-train")
    argo.wait_for(namespace, "digits-train-1")
    argo.update(namespace, "digits-train-1", argo_fn.run_pod, "download")
    pipes.wait("digits", lambda s: task_state(s, "train")["status"] == "running", "train runs")
    pipes.patch("digits", {"suspend": True})
    deadline = time.monotonic() + 30
    wf = argo.get(namespace, "digits-train-1")
    while not wf["spec"].get("shutdown") and time.monotonic() < deadline:
        time.sleep(0.1)
        wf = argo.get(namespace, "digits-train-1")
    assert wf["spec"].get("shutdown") == "Stop", "the task's Workflow was asked to stop"
    argo.update(namespace, "digits-train-1", argo_fn.stop)
    return pipes.wait_state("digits", "stopped")


def test_retry_of_a_stopped_pipeline_is_held_while_suspended_then_reruns_downstream(
        pipes: Pipelines, argo, namespace: str) -> None:
    _stop_train(pipes, argo, namespace)

    # asked while suspend is still true: held, and the status says so
    pipes.patch("digits", {"retryGeneration": 1})
    st = pipes.wait("digits", lambda s: "held until spec.suspend is false"
                    in (s.get("message") or ""), "retry held")["status"]
    assert st["status"] == "stopped" and st["observedRetryGeneration"] == 0
    pipes.wait_event("digits", "RetryHeld", "Warning")
    time.sleep(1)
    train = pipes.children()["digits-train"]["spec"]
    assert (train["retryGeneration"], train["suspend"]) == (0, True), "nothing retried yet"

    # suspend: false: the stopped task gets a new attempt; what depends on it waits for it
    pipes.patch("digits", {"suspend": False})
    argo.wait_for(namespace, "digits-train-2")
    st = pipes.wait("digits", lambda s: s.get("observedRetryGeneration") == 1, "retry")["status"]
    assert st["status"] in ("retry", "running")
    kids = pipes.children()
    assert (kids["digits-train"]["spec"]["retryGeneration"],
            kids["digits-train"]["spec"]["suspend"]) == (1, False)
    assert kids["digits-preprocess"]["spec"]["retryGeneration"] == 0, "completed task kept"
    assert "digits-optimize" not in kids
    assert task_state(st, "optimize")["message"] == "waiting for train"
    model = model_result("digits-mlp-retried")
    _succeed(argo, namespace, "digits-train-2", model)
    opt = pipes.wait_child("digits-optimize")
    assert opt["spec"]["input"]["model"] == {"uri": model["uri"], "sha256": model["sha256"]}, \
        "the retried task's output"
    _succeed(argo, namespace, "digits-optimize-1", model_result("digits-mlp-int8"))
    st = pipes.wait_state("digits", "completed")
    assert task_state(st, "train")["attempt"] == 2
    pipes.wait_event("digits", "Retrying")


def test_retry_with_nothing_to_retry_warns(pipes: Pipelines, argo, namespace: str) -> None:
    pipes.create(pipeline_example("digits"))
    pipes.wait_child("digits-preprocess")
    _succeed(argo, namespace, "digits-preprocess-1", {"size": 10})   # no output URI
    st = pipes.wait_state("digits", "failed")
    assert "preprocess completed without an output URI" in st["message"]
    pipes.patch("digits", {"retryGeneration": 1})
    pipes.wait("digits", lambda s: s.get("observedRetryGeneration") == 1, "retry observed")
    warned = [e for e in pipes.wait_event("digits", "NothingToRetry", "Warning")
              if e["reason"] == "NothingToRetry"]
    assert warned and warned[0]["type"] == "Warning", pipes.events("digits")
    assert "no task failed or stopped" in warned[0]["message"]
    assert not any(e["reason"] == "Retrying" for e in pipes.events("digits"))
    assert pipes.get("digits")["status"]["status"] == "failed"


def _mltask(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{G}/{V}", "kind": "MLTask",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_task_name_taken_by_an_mltask_it_does_not_own_fails_the_pipeline(
        pipes: Pipelines, namespace: str) -> None:
    body = pipeline_example("digits")
    squatter = _mltask(namespace, "digits-preprocess",
                       {**copy.deepcopy(_task(body, "preprocess")["spec"]), "suspend": True})
    pipes.objects.create_namespaced_custom_object(G, V, namespace, P, squatter)
    pipeline_uid = pipes.create(body)["metadata"]["uid"]

    st = pipes.wait_state("digits", "failed")
    assert "Task preprocess failed" in st["message"]
    assert "MLTask digits-preprocess already exists" in st["message"], st["message"]
    assert cond(st, "Failed")["reason"] == "TaskNameTaken"
    pre = task_state(st, "preprocess")
    assert (pre["status"], pre.get("mltask"), pre["reason"]) == ("failed", None, "TaskNameTaken")
    assert task_state(st, "train")["status"] == "pending"
    events = pipes.wait_event("digits", "TaskNameTaken", "Warning")
    assert any(e["reason"] == "TaskNameTaken" and e["type"] == "Warning"
               and "preprocess" in e["message"] for e in events), events
    time.sleep(2)  # resyncs every 5 s in the tests: it is not tried again and again
    kids = pipes.children()
    assert list(kids) == ["digits-preprocess"], "no further child"
    assert not kids["digits-preprocess"]["metadata"].get("ownerReferences"), "not taken over"
    assert sum(e["reason"] == "TaskNameTaken" for e in pipes.events("digits")) == 1

    # once the name is free, a retry creates the pipeline's own task
    pipes.objects.delete_namespaced_custom_object(G, V, namespace, P, "digits-preprocess")
    deadline = time.monotonic() + 30
    while "digits-preprocess" in pipes.children() and time.monotonic() < deadline:
        time.sleep(0.2)
    pipes.patch("digits", {"retryGeneration": 1})
    pre = pipes.wait_child("digits-preprocess")
    assert pre["metadata"]["ownerReferences"][0]["uid"] == pipeline_uid
    pipes.wait("digits", lambda s: task_state(s, "preprocess")["status"] != "failed", "retried")


@pytest.fixture
def deny_training(api: client.ApiClient, namespace: str):
    """A ValidatingAdmissionPolicy refusing training MLTasks in the test namespace (HTTP 422),
    as a cluster's own policy might; it passes the operator's CRD rules."""
    probe = _mltask(namespace, "probe", {
        **copy.deepcopy(_task(pipeline_example("digits"), "train")["spec"]),
        "input": {"dataset": {"uri": DATASET["uri"]}}})
    # valid as it is: once the policy is on, only the policy refuses it (denying() waits for a
    # refusal of the probe)
    client.CustomObjectsApi(api).create_namespaced_custom_object(G, V, namespace, P, probe,
                                                                 dry_run="All")
    with denying(api, namespace, group=G, version=V, plural=P,
                 expression="object.spec.type != 'training'",
                 message="training is not allowed in this namespace", probe=probe):
        yield


def test_child_refused_by_the_api_server_fails_the_pipeline(pipes: Pipelines, argo,
                                                            namespace: str,
                                                            deny_training) -> None:
    pipes.create(pipeline_example("digits"))
    pipes.wait_child("digits-preprocess")
    _succeed(argo, namespace, "digits-preprocess-1", DATASET)
    st = pipes.wait_state("digits", "failed")
    assert "Task train failed: could not be created" in st["message"], st["message"]
    assert "training is not allowed in this namespace" in st["message"]
    assert cond(st, "Failed")["reason"] == "TaskRejected"
    train = task_state(st, "train")
    assert (train["status"], train.get("mltask"), train["reason"]) == (
        "failed", None, "TaskRejected")
    assert task_state(st, "optimize")["message"] == "not started: train could not be created"
    assert st["progress"] == "1/3"
    assert sorted(pipes.children()) == ["digits-preprocess"]
    pipes.wait_event("digits", "TaskRejected", "Warning")


def test_retry_of_a_running_pipeline_is_ignored(pipes: Pipelines, namespace: str) -> None:
    pipes.create(pipeline_example("digits"))
    pipes.wait_child("digits-preprocess")
    # A retryGeneration set before the operator's first status write is its baseline, not a
    # request; wait for that write so this patch is a retry of a running pipeline.
    pipes.wait("digits", lambda s: s.get("observedRetryGeneration") == 0, "baseline")
    pipes.patch("digits", {"retryGeneration": 1})
    pipes.wait("digits", lambda s: s.get("observedRetryGeneration") == 1, "retry observed")
    pipes.wait_event("digits", "RetryIgnored", "Warning")
    assert pipes.children()["digits-preprocess"]["spec"]["retryGeneration"] == 0


def test_deleting_the_pipeline_removes_its_tasks_and_workflows(pipes: Pipelines, argo,
                                                               namespace: str) -> None:
    pipes.create(pipeline_example("digits"))
    pipes.wait_child("digits-preprocess")
    argo.wait_for(namespace, "digits-preprocess-1")
    pipes.objects.delete_namespaced_custom_object(G, V, namespace, "pipelines", "digits")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tasks = pipes.objects.list_namespaced_custom_object(G, V, namespace, P)["items"]
        wfs = pipes.objects.list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "workflows")["items"]
        if not tasks and not wfs:
            return
        time.sleep(0.2)
    raise AssertionError(f"left behind: {[t['metadata']['name'] for t in tasks]} "
                         f"{[w['metadata']['name'] for w in wfs]}")


# ------------------------------------------------------------------------------- validation


def _task(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in body["spec"]["tasks"] if t["name"] == name)


def _mutate(fn):
    def build() -> dict[str, Any]:
        body = pipeline_example("digits")
        fn(body)
        return body
    return build


def _dup(b):
    b["spec"]["tasks"].append(copy.deepcopy(_task(b, "train")))


def _unknown_dep(b):
    _task(b, "train")["dependsOn"] = ["clean"]


def _self_dep(b):
    _task(b, "train")["dependsOn"] = ["train"]


def _dataset_from_training(b):
    _task(b, "optimize")["spec"]["input"]["dataset"] = {"fromTask": "train"}


def _model_from_preprocessing(b):
    _task(b, "optimize")["spec"]["input"]["model"] = {"fromTask": "preprocess"}


def _dataset_from_unknown(b):
    _task(b, "train")["spec"]["input"]["dataset"] = {"fromTask": "prepare"}


def _no_tasks(b):
    b["spec"]["tasks"] = []


def _bad_task_name(b):
    _task(b, "train")["name"] = "Train_Model"


def _long_names(b):
    b["metadata"]["name"] = "c" * 30
    _task(b, "optimize")["name"] = "o" * 20


def _zero_concurrency(b):
    b["spec"]["concurrency"] = 0


def _training_without_model(b):
    del _task(b, "train")["spec"]["output"]["model"]


def _inline_keys(b):
    b["spec"]["defaults"]["storage"]["accessKey"] = "AKIA..."


def _inline_secret_env(b):
    _task(b, "train")["spec"]["steps"]["run"]["env"] = [
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}]


def _fail_fast_string(b):
    b["spec"]["failFast"] = "yes"


def _both_uri_and_from_task(b):
    _task(b, "train")["spec"]["input"]["dataset"]["uri"] = "s3://mltask-examples/x.npz"


def _model_from_unknown(b):
    _task(b, "optimize")["spec"]["input"]["model"] = {"fromTask": "distill"}


def _model_from_itself(b):
    _task(b, "optimize")["spec"]["input"]["model"] = {"fromTask": "optimize"}


def _dataset_from_itself(b):
    _task(b, "preprocess")["spec"]["input"]["dataset"] = {"fromTask": "preprocess"}


INVALID = [
    ("duplicate-task-name", _dup, "spec.tasks[3]", "Duplicate value"),
    ("unknown-dependsOn", _unknown_dep, "spec.tasks", "dependsOn names a task that is not in"),
    ("self-dependency", _self_dep, "spec.tasks", "cannot depend on itself"),
    ("dataset-from-training", _dataset_from_training, "spec.tasks",
     "input.dataset.fromTask must name a preprocessing task"),
    ("model-from-preprocessing", _model_from_preprocessing, "spec.tasks",
     "input.model.fromTask must name a training or optimization task"),
    ("dataset-from-unknown", _dataset_from_unknown, "spec.tasks",
     "input.dataset.fromTask must name a preprocessing task"),
    ("no-tasks", _no_tasks, "spec.tasks", "should have at least 1 items"),
    ("bad-task-name", _bad_task_name, "spec.tasks[1].name", "should match"),
    ("child-name-too-long", _long_names, "spec.tasks", "<pipeline>-<task> names the child"),
    ("zero-concurrency", _zero_concurrency, "spec.concurrency", "should be greater than or"),
    ("training-without-model", _training_without_model, "spec.tasks[1].spec.output",
     "spec.output.model is required when type is training"),
    ("inline-storage-keys", _inline_keys, "spec.defaults.storage.accessKey", "unknown field"),
    ("inline-secret-env", _inline_secret_env, "spec.tasks[1].spec.steps.run.env[0].value",
     "credentials must come from a Secret"),
    ("failFast-not-bool", _fail_fast_string, "spec.failFast", "boolean"),
    ("uri-and-fromTask", _both_uri_and_from_task, "spec.tasks[1].spec.input.dataset",
     "set exactly one of uri or fromTask"),
    ("model-from-unknown", _model_from_unknown, "spec.tasks",
     "input.model.fromTask must name a training or optimization task"),
    ("model-from-itself", _model_from_itself, "spec.tasks",
     "a task cannot take its input from itself"),
    ("dataset-from-itself", _dataset_from_itself, "spec.tasks",
     "a task cannot take its input from itself"),
]


@pytest.mark.parametrize(("case", "mutate", "field", "words"), INVALID,
                         ids=[c[0] for c in INVALID])
def test_invalid_pipeline_is_rejected_at_apply(pipes: Pipelines, case: str, mutate,
                                               field: str, words: str) -> None:
    body = _mutate(mutate)()
    with pytest.raises(client.ApiException) as err:
        pipes.create(body)
    text = json.loads(err.value.body)["message"]
    assert err.value.status in (400, 422), (case, err.value.status, text)
    assert field in text and words in text, text
    names = [p["metadata"]["name"] for p in pipes.objects.list_namespaced_custom_object(
        G, V, pipes.ns, "pipelines")["items"]]
    assert names == [] and pipes.children() == {}, "nothing half-created"


@pytest.mark.parametrize("cycle", ["dependsOn", "fromTask"])
def test_dependency_cycle_fails_at_once_with_no_child(pipes: Pipelines, cycle: str) -> None:
    body = pipeline_example("digits")
    if cycle == "dependsOn":
        _task(body, "preprocess")["dependsOn"] = ["optimize"]   # optimize -> preprocess (dataset)
        expect = "dependency cycle: preprocess -> optimize -> preprocess"
    else:
        _task(body, "preprocess")["dependsOn"] = ["train"]
        expect = "dependency cycle: preprocess -> train -> preprocess"
    pipes.create(body)
    st = pipes.wait_state("digits", "failed")
    assert expect in st["message"], st["message"]
    assert cond(st, "Failed")["reason"] == "InvalidSpec"
    time.sleep(1)
    assert pipes.children() == {}, "never a half-started pipeline"


def test_tasks_cannot_change_after_creation(pipes: Pipelines) -> None:
    body = pipeline_example("digits")
    pipes.create(body)
    tasks = copy.deepcopy(body["spec"]["tasks"])
    tasks[0]["spec"]["description"] = "changed"
    with pytest.raises(client.ApiException) as err:
        pipes.patch("digits", {"tasks": tasks})
    assert err.value.status == 422 and "spec.tasks cannot change" in err.value.body
    pipes.patch("digits", {"concurrency": 1, "description": "allowed"})
