"""Reuse of identical finished work (spec.cache) on the real API server, the operator process
running and the Argo stand-in driving the Workflows: a hit completes at once with the source's
outputs and makes no Workflow, no volume, no pods; a changed parameter or input sha256 misses
and runs; a task of another namespace is never reused; a Pipeline reuses each task of an
identical Pipeline, handing the upstream's sha256 on."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.pipelines import (
    DATASET,
    Pipelines,
    model_result,
    pipeline_example,
    succeed,
    through_training,
)
from harness.tasks import Tasks, cond, example

pytestmark = pytest.mark.integration
SHA = "0123456789abcdef" * 4


@pytest.fixture
def tasks(api: client.ApiClient, namespace: str, operator) -> Tasks:
    return Tasks(api, namespace)


@pytest.fixture
def other_namespace(api: client.ApiClient, operator) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


def cached(name: str, **spec: Any) -> dict[str, Any]:
    body = example("preprocessing")
    body["metadata"] = {"name": name}
    body["spec"]["cache"] = {"enabled": True, "maxAge": "1h"}
    body["spec"].update(spec)
    return body


def run_to_completion(tasks: Tasks, argo, body: dict[str, Any]) -> dict[str, Any]:
    """Create the task, drive its Workflow to success; its completed status."""
    name = tasks.create(body)["metadata"]["name"]
    argo.wait_for(tasks.ns, f"{name}-1")
    argo.update(tasks.ns, f"{name}-1", argo_fn.succeed_all, result=DATASET,
                metrics={"rows": 1797.0})
    return tasks.wait_state(name, "completed", "done")["status"]


def assert_ran_nothing(tasks: Tasks, name: str) -> None:
    time.sleep(1)  # let a stray Workflow or volume appear
    assert [w for w in tasks.workflows() if w["metadata"]["name"].startswith(f"{name}-")] == []
    with pytest.raises(client.ApiException) as gone:
        tasks.core.read_namespaced_persistent_volume_claim(f"{name}-work", tasks.ns)
    assert gone.value.status == 404
    assert tasks.core.list_namespaced_pod(tasks.ns).items == []


def test_an_identical_task_reuses_the_outputs_and_runs_nothing(tasks: Tasks, argo) -> None:
    source = run_to_completion(tasks, argo, cached("prep-a"))
    assert len(source["cacheKey"]) == 64
    assert (cond(source, "Cached")["status"], cond(source, "Cached")["reason"]) == (
        "False", "CacheMiss")

    # another name, other placement and retries: none of it is in the key
    body = cached("prep-b")
    body["spec"]["runtime"] = {"nodeSelector": {"pool": "cpu"}, "retryPolicy": {"limit": 0}}
    tasks.create(body)
    st = tasks.wait_state("prep-b", "completed", "done")["status"]
    assert st["outputs"] == source["outputs"] and st["metrics"] == {"rows": 1797.0}
    assert st["cacheKey"] == source["cacheKey"]
    assert st["attempt"] == 0 and "workflowName" not in st and "steps" not in st
    hit = cond(st, "Cached")
    assert (hit["status"], hit["reason"]) == ("True", "CacheHit")
    assert f"MLTask {tasks.ns}/prep-a completed at {source['completionTime']}" in hit["message"]
    assert cond(st, "Succeeded")["status"] == "True" and cond(st, "Ready")["status"] == "True"
    events = tasks.wait_event("prep-b", "CacheHit")
    assert any("prep-a" in e["message"] for e in events if e["reason"] == "CacheHit")
    assert_ran_nothing(tasks, "prep-b")

    # a copy is never a source itself: with prep-a deleted, an identical task runs
    tasks.objects.delete_namespaced_custom_object("mltask.dev", "v1alpha1", tasks.ns,
                                                  "mltasks", "prep-a")
    tasks.create(cached("prep-c"))
    argo.wait_for(tasks.ns, "prep-c-1")  # its status is written after the Workflow is made
    st = tasks.wait("prep-c", lambda s: s.get("workflowName") == "prep-c-1", "Workflow")["status"]
    assert cond(st, "Cached")["reason"] == "CacheMiss"

    # a retry of the copy runs it for real
    tasks.patch("prep-b", {"retryGeneration": 1})
    argo.wait_for(tasks.ns, "prep-b-1")
    st = tasks.wait("prep-b", lambda s: s.get("attempt") == 1, "attempt 1")["status"]
    assert (cond(st, "Cached")["status"], cond(st, "Cached")["reason"]) == ("False", "Rerun")


@pytest.mark.parametrize("change", [
    {"config": {"parameters": {"scaling": "minmax", "testSize": "0.2", "seed": "1"}}},
    {"input": {"dataset": {"uri": "s3://mltask-examples/raw/digits.csv.gz", "kind": "project",
                           "sha256": SHA}}},
], ids=["changed-parameter", "changed-input-sha256"])
def test_a_changed_parameter_or_input_sha256_misses_and_runs(tasks: Tasks, argo,
                                                             change: dict[str, Any]) -> None:
    source = run_to_completion(tasks, argo, cached("prep-a"))
    tasks.create(cached("prep-b", **copy.deepcopy(change)))
    argo.wait_for(tasks.ns, "prep-b-1")
    st = tasks.wait("prep-b", lambda s: s.get("workflowName") == "prep-b-1",
                    "its Workflow")["status"]
    assert st["cacheKey"] != source["cacheKey"]
    miss = cond(st, "Cached")
    assert (miss["status"], miss["reason"]) == ("False", "CacheMiss")
    argo.update(tasks.ns, "prep-b-1", argo_fn.succeed_all, result=DATASET)
    assert tasks.wait_state("prep-b", "completed", "done")["status"]["attempt"] == 1


def test_never_reused_across_namespaces_nor_once_archived(api: client.ApiClient, tasks: Tasks,
                                                          argo, other_namespace: str) -> None:
    source = run_to_completion(tasks, argo, cached("prep-a"))
    there = Tasks(api, other_namespace)
    there.create(cached("prep-a"))
    argo.wait_for(other_namespace, "prep-a-1")
    st = there.wait("prep-a", lambda s: s.get("workflowName") == "prep-a-1", "Workflow")["status"]
    assert st["cacheKey"] == source["cacheKey"], "the same key, another namespace: a miss"
    assert cond(st, "Cached")["reason"] == "CacheMiss"

    tasks.patch("prep-a", {"archived": True})
    tasks.wait("prep-a", lambda s: any(c["type"] == "Archived" and c["status"] == "True"
                                       for c in s.get("conditions") or []), "archived")
    tasks.create(cached("prep-b"))
    argo.wait_for(tasks.ns, "prep-b-1")  # its status is written after the Workflow is made
    st = tasks.wait("prep-b", lambda s: s.get("workflowName") == "prep-b-1", "Workflow")["status"]
    assert cond(st, "Cached")["reason"] == "CacheMiss"


def test_an_identical_pipeline_reuses_every_task(api: client.ApiClient, namespace: str,
                                                  argo, operator) -> None:
    pipes = Pipelines(api, namespace)
    tasks = Tasks(api, namespace)
    first = pipeline_example("digits")
    first["spec"]["defaults"]["cache"] = {"enabled": True}
    pipes.create(first)
    results = {"digits-preprocess-1": DATASET, "digits-train-1": model_result("digits-mlp"),
               "digits-optimize-1": model_result("digits-mlp-int8")}
    for wf, result in results.items():
        argo.wait_for(namespace, wf)
        argo.update(namespace, wf, argo_fn.succeed_all, result=result)
    done = pipes.wait_state("digits", "completed")
    train = pipes.wait_child("digits-train")
    assert train["spec"]["input"]["dataset"]["sha256"] == DATASET["sha256"]
    assert train["spec"]["cache"] == {"enabled": True, "maxAge": "168h"}

    second = pipeline_example("digits")
    second["metadata"]["name"] = "digits-again"
    second["spec"]["defaults"]["cache"] = {"enabled": True}
    pipes.create(second)
    st = pipes.wait_state("digits-again", "completed")
    assert st["progress"] == "3/3"
    assert [t["outputUri"] for t in st["tasks"]] == [t["outputUri"] for t in done["tasks"]]
    for task in ("preprocess", "train", "optimize"):
        child = tasks.get(f"digits-again-{task}")["status"]
        assert cond(child, "Cached")["status"] == "True", task
        assert f"MLTask {namespace}/digits-{task} " in cond(child, "Cached")["message"]
    time.sleep(1)
    assert sorted(w["metadata"]["name"] for w in tasks.workflows()) == sorted(results)


def test_a_pipeline_run_with_another_parameter_value_reruns_what_it_changes(
        api: client.ApiClient, namespace: str, argo, operator) -> None:
    """kubectl mltask run's use: the parameters example again, once with the same values (every
    task reused) and once with another epochs (only the training runs: the preprocessing is
    the same, and the optimization reads a model of the same sha256)."""
    pipes = Pipelines(api, namespace)
    tasks = Tasks(api, namespace)

    def run(name: str, epochs: str) -> dict[str, Any]:
        body = pipeline_example("params")
        body["metadata"]["name"] = name
        body["spec"]["defaults"]["cache"] = {"enabled": True}
        next(p for p in body["spec"]["parameters"] if p["name"] == "epochs")["value"] = epochs
        return pipes.create(body)

    run("tuned", "40")
    through_training(pipes, argo, 0.95, pipeline="tuned")
    succeed(argo, namespace, "tuned-optimize-1", model_result("digits-mlp-int8"))
    pipes.wait_state("tuned", "completed")

    run("tuned-same", "40")
    assert pipes.wait_state("tuned-same", "completed")["progress"] == "3/3"
    run("tuned-longer", "80")
    pipes.wait_child("tuned-longer-train")
    succeed(argo, namespace, "tuned-longer-train-1", model_result("digits-mlp"),
            {"accuracy": 0.95})
    assert pipes.wait_state("tuned-longer", "completed")["progress"] == "3/3"

    cached = {f"{p}-{t}": cond(tasks.get(f"{p}-{t}")["status"], "Cached")["reason"]
              for p in ("tuned-same", "tuned-longer") for t in ("preprocess", "train", "optimize")}
    assert cached == {"tuned-same-preprocess": "CacheHit", "tuned-same-train": "CacheHit",
                      "tuned-same-optimize": "CacheHit", "tuned-longer-preprocess": "CacheHit",
                      "tuned-longer-train": "CacheMiss", "tuned-longer-optimize": "CacheHit"}
    assert tasks.get("tuned-longer-train")["spec"]["config"]["parameters"]["epochs"] == "80"
    assert sorted(w["metadata"]["name"] for w in tasks.workflows()) == [
        "tuned-longer-train-1", "tuned-optimize-1", "tuned-preprocess-1", "tuned-train-1"]
