"""Pipelines under Argo's real workflow-controller, kube-scheduler and kwok nodes: the examples
as written run to completion with each upstream output handed to the next task, branches run
in parallel, and a failure in the middle stops what depends on it.

Step env knobs read by the simulation only: see tests/e2e/test_mltask_e2e.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from harness.pipelines import Pipelines, pipeline_example, task_state
from harness.tasks import Tasks, step

pytestmark = pytest.mark.e2e


@pytest.fixture
def pipes(e2e_api: client.ApiClient, tasks: Tasks) -> Pipelines:
    return Pipelines(e2e_api, tasks.ns)


def set_run_env(body: dict[str, Any], task: str, **env: str) -> dict[str, Any]:
    spec = next(t for t in body["spec"]["tasks"] if t["name"] == task)["spec"]
    spec["steps"]["run"]["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return body


def node_of(tasks: Tasks, pod: str) -> str:
    return tasks.core.read_namespaced_pod(pod, tasks.ns).spec.node_name


def test_three_stage_example_hands_each_output_on(pipes: Pipelines, tasks: Tasks) -> None:
    pipes.create(pipeline_example("digits"))
    st = pipes.wait_state("digits", "completed", timeout=150)
    assert (st["progress"], st["completedTasks"]) == ("3/3", 3)
    kids = pipes.children()
    prep, train, opt = (kids[f"digits-{t}"] for t in ("preprocess", "train", "optimize"))
    for child in (prep, train, opt):
        assert [s["phase"] for s in child["status"]["steps"]] == ["Succeeded"] * 3
    # what the upload step of one Workflow reported is what the next task downloads
    assert train["spec"]["input"]["dataset"]["uri"] == prep["status"]["outputs"]["uri"]
    assert opt["spec"]["input"]["dataset"]["uri"] == prep["status"]["outputs"]["uri"]
    assert opt["spec"]["input"]["model"]["uri"] == train["status"]["outputs"]["uri"]
    assert task_state(st, "train")["outputUri"] == train["status"]["outputs"]["uri"]
    # training's GPU placement puts it on the GPU node; the tasks asking for no GPU stay off
    # it (its taint), on the CPU node
    assert node_of(tasks, step(prep["status"], "run")["pod"]) == "kwok-cpu-0"
    assert node_of(tasks, step(train["status"], "run")["pod"]) == "kwok-gpu-0"
    assert node_of(tasks, step(opt["status"], "run")["pod"]) == "kwok-cpu-0"
    # each task started only after its input existed
    assert train["status"]["startTime"] >= prep["status"]["completionTime"]
    assert opt["status"]["startTime"] >= train["status"]["completionTime"]


def test_parallel_trainings_run_at_the_same_time(pipes: Pipelines, tasks: Tasks) -> None:
    body = pipeline_example("parallel-training")
    for t in ("train-mlp", "train-logreg"):
        set_run_env(body, t, E2E_DURATION="6s")
    pipes.create(body)

    def both_training(s: dict[str, Any]) -> bool:
        state = {t["name"]: t for t in s.get("tasks") or []}
        return all(state.get(t, {}).get("executeStep") == "run_task"
                   and state.get(t, {}).get("status") == "running"
                   for t in ("train-mlp", "train-logreg"))

    pipes.wait("digits-sweep", both_training, "both trainings in their run step at once",
               timeout=90)
    st = pipes.wait_state("digits-sweep", "completed", timeout=90)
    assert st["progress"] == "3/3"
    # the MLP asks for a GPU and runs on the GPU node; preprocessing and the logistic
    # regression ask for none and run on the CPU node
    kids = pipes.children()
    for t, node in (("preprocess", "kwok-cpu-0"), ("train-mlp", "kwok-gpu-0"),
                    ("train-logreg", "kwok-cpu-0")):
        child = kids[f"digits-sweep-{t}"]["status"]
        assert node_of(tasks, step(child, "run")["pod"]) == node, t


def test_failure_in_the_middle_fails_the_pipeline(pipes: Pipelines) -> None:
    body = set_run_env(pipeline_example("digits"), "train", E2E_EXIT_CODE="3")
    next(t for t in body["spec"]["tasks"] if t["name"] == "train")["spec"]["runtime"][
        "retryPolicy"] = {"limit": 0}
    pipes.create(body)
    st = pipes.wait_state("digits", "failed", timeout=120)
    assert "train" in st["message"], st["message"]
    assert task_state(st, "train")["status"] == "failed"
    assert task_state(st, "optimize")["status"] == "pending"
    assert sorted(pipes.children()) == ["digits-preprocess", "digits-train"]
    train = pipes.children()["digits-train"]["status"]
    assert step(train, "run")["exitCode"] == 3


def test_stop_and_continue_cascade_through_argo(pipes: Pipelines, tasks: Tasks) -> None:
    pipes.create(set_run_env(pipeline_example("digits"), "train", E2E_DURATION="8s"))
    pipes.wait("digits", lambda s: any(t["name"] == "train" and t.get("executeStep") ==
                                        "run_task" for t in s.get("tasks") or []),
               "train in its run step", timeout=90)
    pipes.patch("digits", {"suspend": True})
    st = pipes.wait_state("digits", "stopped", timeout=60)
    assert task_state(st, "train")["status"] == "stopped"
    wf = next(w for w in tasks.workflows() if w["metadata"]["name"] == "digits-train-1")
    assert wf["spec"]["shutdown"] == "Stop", "stopped through Argo's own shutdown"
    assert "digits-optimize" not in pipes.children()

    pipes.patch("digits", {"suspend": False})
    st = pipes.wait_state("digits", "completed", timeout=120)
    train = pipes.children()["digits-train"]["status"]
    assert train["attempt"] == 2, "continue is a new attempt from the unfinished step"
    assert [(s["name"], s["attempt"]) for s in train["steps"]] == [
        ("download", 1), ("run", 2), ("upload", 2)]


@pytest.mark.parametrize("accuracy", [0.97, 0.6], ids=["above", "below"])
def test_optimization_runs_only_above_the_threshold_under_argo(pipes: Pipelines,
                                                                accuracy: float) -> None:
    """The metrics come from the run step's output parameter as Argo's controller reports it;
    the operator reads them from the MLTask's status and evaluates the optimize task's when."""
    body = set_run_env(pipeline_example("digits"), "train",
                       E2E_METRICS=f'{{"accuracy": {accuracy}}}')
    next(t for t in body["spec"]["tasks"] if t["name"] == "optimize")["when"] = \
        "tasks.train.metrics.accuracy >= 0.9"
    pipes.create(body)
    st = pipes.wait_state("digits", "completed", timeout=150)
    train = pipes.children()["digits-train"]["status"]
    assert train["metrics"]["accuracy"] == accuracy
    if accuracy >= 0.9:
        assert (st["progress"], task_state(st, "optimize")["status"]) == ("3/3", "completed")
        assert "digits-optimize" in pipes.children()
    else:
        assert st["progress"] == "2/3 (1 skipped)"
        assert task_state(st, "optimize")["status"] == "skipped"
        assert sorted(pipes.children()) == ["digits-preprocess", "digits-train"]


@pytest.mark.parametrize("reported", ["0.95", "0.85"], ids=["above", "below"])
def test_parameters_reach_the_pods_and_the_condition_under_argo(pipes: Pipelines,
                                                                reported: str) -> None:
    """The parameters example: the training's env is written with a parameter, which the
    operator replaces before Argo's controller runs the pod; what the run step then reports
    decides, against params.minAccuracy, whether the optimization runs."""
    body = pipeline_example("params")
    body["spec"]["parameters"].append({"name": "reported", "type": "float", "default": "0",
                                       "value": reported})
    set_run_env(body, "train", E2E_METRICS='{"accuracy": $(params.reported)}',
                PYTHONHASHSEED="$(params.seed)")
    pipes.create(body)
    st = pipes.wait_state("digits-tuned", "completed", timeout=150)
    train = pipes.children()["digits-tuned-train"]
    env = {e["name"]: e["value"] for e in train["spec"]["steps"]["run"]["env"]}
    assert env == {"E2E_METRICS": f'{{"accuracy": {float(reported)!r}}}', "PYTHONHASHSEED": "0"}
    assert train["spec"]["config"]["parameters"]["learningRate"] == "0.001"
    assert train["status"]["metrics"]["accuracy"] == float(reported)
    if float(reported) >= 0.9:
        assert (st["progress"], task_state(st, "optimize")["status"]) == ("3/3", "completed")
    else:
        assert st["progress"] == "2/3 (1 skipped)"
        assert task_state(st, "optimize")["reason"] == "WhenFalse"
        assert sorted(pipes.children()) == ["digits-tuned-preprocess", "digits-tuned-train"]
