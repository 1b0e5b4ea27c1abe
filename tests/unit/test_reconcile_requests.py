"""What one MLTask reconcile asks of the API server, with its reads served from the cache: four
requests to start an attempt, none for a task nothing changed, the Workflow before its volume.

The API is a recording stand-in (this is a unit test of the reconcile's decisions); the real
API server's view of the same figures is `make bench`'s."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from harness.tasks import example
from mltask_operator.cache import TASK, WORKFLOW, Cache
from mltask_operator.clients.kube import Rejected
from mltask_operator.handlers.mltask import reconcile_task
from mltask_operator.kinds import Kind

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


class RecordingKube:
    """Answers as the API server would, and records each call."""

    def __init__(self, refuse_volume: bool = False) -> None:
        self.calls: list[str] = []
        self.refuse_volume = refuse_volume
        self.rv = 100

    def _next(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        out = copy.deepcopy(body)
        out["metadata"]["resourceVersion"] = str(self.rv)
        return out

    def create(self, kind: Kind, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(f"create {kind.kind} {body['metadata']['name']}")
        return self._next(body), True

    def ensure_pvc(self, body: dict[str, Any]) -> bool:
        self.calls.append(f"create PersistentVolumeClaim {body['metadata']['name']}")
        if self.refuse_volume:
            raise Rejected("PersistentVolumeClaim ml/t-work was rejected: exceeded quota",
                           "PersistentVolumeClaim")
        return True

    def delete(self, kind: Kind, namespace: str, name: str,
               as_read: dict[str, Any] | None = None) -> bool:
        self.calls.append(f"delete {kind.kind} {name}")
        return True

    def replace_status(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(f"replace {kind.kind}/status {body['status']['status']}")
        return self._next(body)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self.calls.append(f"create Event {reason}")

    def stop_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(f"stop Workflow {name}")
        return self._next({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                           "metadata": {"name": name, "namespace": namespace},
                           "spec": {"shutdown": "Stop"}})


def world(task: dict[str, Any]) -> Cache:
    cache = Cache()
    cache.put(TASK, task)
    return cache


def new_task() -> dict[str, Any]:
    body = example("preprocessing")
    body["metadata"].update(namespace="ml", uid="u-1", resourceVersion="7", generation=1)
    return body


def test_starting_an_attempt_takes_four_requests_workflow_first() -> None:
    body = new_task()
    name = body["metadata"]["name"]
    cache = world(body)
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == [f"create Workflow {name}-1",
                          f"create PersistentVolumeClaim {name}-work",
                          "replace MLTask/status init",
                          "create Event StatusChanged"]
    st = cache.task("ml", name)["status"]
    assert (st["attempt"], st["workflowName"], st["executeStep"]) == (1, f"{name}-1",
                                                                      "prepare_file")

    kube.calls.clear()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == [], "again, with nothing changed: no request at all"
    reconcile_task(kube, cache, "ml", name,  # type: ignore[arg-type]
                   clock=lambda: NOW + datetime.timedelta(seconds=30))
    assert kube.calls == [], "30 s later: the elapsed time alone is not worth a write"


def test_a_refused_volume_deletes_the_workflow_and_fails_the_attempt() -> None:
    body = new_task()
    name = body["metadata"]["name"]
    cache = world(body)
    kube = RecordingKube(refuse_volume=True)
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == [f"create Workflow {name}-1",
                          f"create PersistentVolumeClaim {name}-work",
                          f"delete Workflow {name}-1",
                          "replace MLTask/status failed",
                          "create Event Failed"]
    st = cache.task("ml", name)["status"]
    failed = next(c for c in st["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "VolumeRejected" and "exceeded quota" in st["message"]
    assert cache.workflow("ml", f"{name}-1") is None
    kube.calls.clear()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == [], "failed stays failed until a retry"


def test_a_task_stopped_after_its_first_workflow_was_made_but_not_recorded_stops_it() -> None:
    """The leader made attempt 1's Workflow and was killed before writing the status; the
    task is then stopped. The next leader finds the Workflow (the task's own) and shuts it
    down, instead of calling the task stopped before any step ran and leaving it running."""
    body = new_task()
    name = body["metadata"]["name"]
    body["spec"]["suspend"] = True
    cache = world(body)
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"name": f"{name}-1", "namespace": "ml", "resourceVersion": "9",
                             "labels": {"mltask.dev/task": name},
                             "ownerReferences": [{"kind": "MLTask", "name": name,
                                                  "uid": "u-1", "controller": True}]}}
    cache.put(WORKFLOW, workflow)
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls[0] == f"stop Workflow {name}-1", kube.calls
    st = cache.task("ml", name)["status"]
    assert (st["attempt"], st["workflowName"], st["status"]) == (1, f"{name}-1", "stopping")


def test_a_workflow_of_a_deleted_namesake_is_not_adopted() -> None:
    body = new_task()
    name = body["metadata"]["name"]
    body["spec"]["suspend"] = True
    cache = world(body)
    cache.put(WORKFLOW, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                         "metadata": {"name": f"{name}-1", "namespace": "ml",
                                      "resourceVersion": "9", "labels": {"mltask.dev/task": name},
                                      "ownerReferences": [{"kind": "MLTask", "name": name,
                                                           "uid": "an-earlier-one"}]}})
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", name, clock=lambda: NOW)  # type: ignore[arg-type]
    st = cache.task("ml", name)["status"]
    assert (st["attempt"], st["status"]) == (0, "stopped")
    assert not any(c.startswith("stop Workflow") for c in kube.calls)
