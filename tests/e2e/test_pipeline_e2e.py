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
    pipes.create(pipeline_example("cifar10"))
    st = pipes.wait_state("cifar10", "completed", timeout=150)
    assert (st["progress"], st["completedTasks"]) == ("3/3", 3)
    kids = pipes.children()
    prep, train, opt = (kids[f"cifar10-{t}"] for t in ("preprocess", "train", "optimize"))
    for child in (prep, train, opt):
        assert [s["phase"] for s in child["status"]["steps"]] == ["Succeeded"] * 3
    # what the upload step of one Workflow reported is what the next task downloads
    assert train["spec"]["input"]["dataset"]["uri"] == prep["status"]["outputs"]["uri"]
    assert opt["spec"]["input"]["model"]["uri"] == train["status"]["outputs"]["uri"]
    assert task_state(st, "train")["outputUri"] == train["status"]["outputs"]["uri"]
    # inherited GPU placement for training; preprocessing's own override keeps it on CPU
    assert node_of(tasks, step(prep["status"], "run")["pod"]) == "kwok-cpu-0"
    assert node_of(tasks, step(train["status"], "run")["pod"]) == "kwok-gpu-0"
    # each task started only after its input existed
    assert train["status"]["startTime"] >= prep["status"]["completionTime"]
    assert opt["status"]["startTime"] >= train["status"]["completionTime"]


def test_parallel_trainings_run_at_the_same_time(pipes: Pipelines, tasks: Tasks) -> None:
    body = pipeline_example("parallel-training")
    for t in ("train-resnet", "train-vit"):
        set_run_env(body, t, E2E_DURATION="6s")
    pipes.create(body)

    def both_training(s: dict[str, Any]) -> bool:
        state = {t["name"]: t for t in s.get("tasks") or []}
        return all(state.get(t, {}).get("executeStep") == "run_task"
                   and state.get(t, {}).get("status") == "running"
                   for t in ("train-resnet", "train-vit"))

    pipes.wait("cifar10-sweep", both_training, "both trainings in their run step at once",
               timeout=90)
    st = pipes.wait_state("cifar10-sweep", "completed", timeout=90)
    assert st["progress"] == "3/3"
    # preprocessing overrides the GPU default and runs on the CPU pool; the trainings on GPUs
    kids = pipes.children()
    prep = kids["cifar10-sweep-preprocess"]["status"]
    assert node_of(tasks, step(prep, "run")["pod"]) == "kwok-cpu-0"
    for t in ("train-resnet", "train-vit"):
        train = kids[f"cifar10-sweep-{t}"]["status"]
        assert node_of(tasks, step(train, "run")["pod"]) == "kwok-gpu-0"


def test_failure_in_the_middle_fails_the_pipeline(pipes: Pipelines) -> None:
    body = set_run_env(pipeline_example("cifar10"), "train", E2E_EXIT_CODE="3")
    next(t for t in body["spec"]["tasks"] if t["name"] == "train")["spec"]["runtime"][
        "retryPolicy"] = {"limit": 0}
    pipes.create(body)
    st = pipes.wait_state("cifar10", "failed", timeout=120)
    assert "train" in st["message"], st["message"]
    assert task_state(st, "train")["status"] == "failed"
    assert task_state(st, "optimize")["status"] == "pending"
    assert sorted(pipes.children()) == ["cifar10-preprocess", "cifar10-train"]
    train = pipes.children()["cifar10-train"]["status"]
    assert step(train, "run")["exitCode"] == 3


def test_stop_and_continue_cascade_through_argo(pipes: Pipelines, tasks: Tasks) -> None:
    pipes.create(set_run_env(pipeline_example("cifar10"), "train", E2E_DURATION="8s"))
    pipes.wait("cifar10", lambda s: any(t["name"] == "train" and t.get("executeStep") ==
                                        "run_task" for t in s.get("tasks") or []),
               "train in its run step", timeout=90)
    pipes.patch("cifar10", {"suspend": True})
    st = pipes.wait_state("cifar10", "stopped", timeout=60)
    assert task_state(st, "train")["status"] == "stopped"
    wf = next(w for w in tasks.workflows() if w["metadata"]["name"] == "cifar10-train-1")
    assert wf["spec"]["shutdown"] == "Stop", "stopped through Argo's own shutdown"
    assert "cifar10-optimize" not in pipes.children()

    pipes.patch("cifar10", {"suspend": False})
    st = pipes.wait_state("cifar10", "completed", timeout=120)
    train = pipes.children()["cifar10-train"]["status"]
    assert train["attempt"] == 2, "continue is a new attempt from the unfinished step"
    assert [(s["name"], s["attempt"]) for s in train["steps"]] == [
        ("download", 1), ("run", 2), ("upload", 2)]
