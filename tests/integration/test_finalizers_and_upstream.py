"""No finalizers: tasks and pipelines the operator handles carry none (Kopf's timers would add
one, nolar/kopf#1074), so they delete even with the operator gone; the finalizer earlier
versions left is removed; a task waiting for a standalone upstream starts on the upstream's
completion event, with no resync needed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.pipelines import Pipelines, pipeline_example
from harness.tasks import G, Tasks, V, example
from harness.waiting import wait_gone

pytestmark = pytest.mark.integration
HANDLED = "mltask.dev/last-handled-configuration"  # Kopf's diff-base annotation
OLD_FINALIZER = "mltask.dev/finalizer"


def wait_for(read: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool],
             what: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj = read()
    while not ok(obj):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {obj['metadata']}")
        time.sleep(0.1)
        obj = read()
    return obj


def handled(obj: dict[str, Any]) -> bool:
    """The operator has reconciled it: its status is written."""
    return bool((obj.get("status") or {}).get("status"))


def test_no_finalizers_so_deletion_completes_without_the_operator(
        api: client.ApiClient, argo, namespace: str, operator) -> None:
    tasks, pipes = Tasks(api, namespace), Pipelines(api, namespace)
    name = tasks.create(example("training"))["metadata"]["name"]
    argo.wait_for(namespace, f"{name}-1")
    pipeline = pipeline_example("digits")
    pname = pipeline["metadata"]["name"]
    pipes.create(pipeline)
    child = pipes.wait_child(f"{pname}-preprocess")["metadata"]["name"]
    argo.wait_for(namespace, f"{child}-1")
    # The operator has handled each of them (a timer's finalizer would be there by now), and
    # the resync (every 5 s here) has passed over them
    objs = [wait_for(lambda n=n: tasks.get(n), handled, f"MLTask {n} handled")
            for n in (name, child)]
    objs.append(wait_for(lambda: pipes.get(pname), handled, f"Pipeline {pname} handled"))
    time.sleep(6)
    objs = [tasks.get(name), tasks.get(child), pipes.get(pname)]
    assert [o["metadata"].get("finalizers") for o in objs] == [None, None, None]
    # nor any bookkeeping of Kopf's: only event handlers, so Kopf writes nothing
    assert [HANDLED in (o["metadata"].get("annotations") or {}) for o in objs] == [False] * 3

    operator.stop()  # as after `helm uninstall`
    try:
        tasks.objects.delete_namespaced_custom_object(G, V, namespace, "mltasks", name)
        tasks.objects.delete_namespaced_custom_object(G, V, namespace, "pipelines", pname)
        wait_gone(lambda: tasks.get(name), f"MLTask {name}")
        wait_gone(lambda: pipes.get(pname), f"Pipeline {pname}")
        wait_gone(lambda: tasks.get(child), f"MLTask {child} (garbage-collected)", timeout=60)
    finally:
        operator.start()


def test_the_finalizer_of_earlier_versions_is_removed(
        api: client.ApiClient, argo, namespace: str, operator) -> None:
    tasks = Tasks(api, namespace)
    body = example("training")
    name = body["metadata"]["name"] = f"old-{uuid.uuid4().hex[:6]}"
    body["metadata"]["finalizers"] = [OLD_FINALIZER, "example.com/keep"]
    tasks.create(body)
    task = wait_for(lambda: tasks.get(name),
                    lambda o: OLD_FINALIZER not in (o["metadata"].get("finalizers") or []),
                    f"{OLD_FINALIZER} removed from MLTask {name}")
    assert task["metadata"]["finalizers"] == ["example.com/keep"], "others' finalizers stay"
    argo.wait_for(namespace, f"{name}-1")
    tasks.objects.patch_namespaced_custom_object(G, V, namespace, "mltasks", name,
                                                 {"metadata": {"finalizers": None}})


def test_a_task_starts_as_soon_as_its_standalone_upstream_completes(
        api: client.ApiClient, argo, namespace: str, operator, control_plane,
        tmp_path) -> None:
    """A task waiting for another task's output (outside any Pipeline) starts on the upstream's
    completion event (the cache links waiting tasks to their upstream), not at the next
    resync: the operator here resyncs once an hour."""
    from harness.operator_proc import OperatorProcess

    operator.stop()
    own = OperatorProcess(control_plane.kubeconfig, tmp_path / "operator.log",
                          env={"MLTASK_RESYNC_SECONDS": "3600"})
    own.start()
    try:
        tasks = Tasks(api, namespace)
        upstream = example("preprocessing")
        up = upstream["metadata"]["name"]
        upstream["metadata"].pop("labels", None)
        train = example("training")
        name = train["metadata"]["name"]
        train["spec"]["input"]["dataset"] = {"fromTask": up, "kind": "project"}
        tasks.create(train)
        tasks.wait(name, lambda s: up in (s.get("message") or ""), "waiting for its upstream")
        tasks.create(upstream)
        argo.wait_for(namespace, f"{up}-1")
        argo.update(namespace, f"{up}-1", argo_fn.succeed_all,
                    result={"uri": "s3://mltask-examples/datasets/x.npz", "size": 1,
                            "sha256": "ab" * 32})
        tasks.wait_state(up, "completed")
        started = time.monotonic()
        wf = argo.wait_for(namespace, f"{name}-1", timeout=20)
        print(f"the downstream task started {time.monotonic() - started:.1f}s after its "
              "upstream completed")
        env = {e["name"]: e.get("value") for t in wf["spec"]["templates"][1:]
               for e in t["container"]["env"]}
        assert env["MLTASK_INPUT_DATASET_URI"] == "s3://mltask-examples/datasets/x.npz"
    finally:
        own.stop()
        operator.start()
