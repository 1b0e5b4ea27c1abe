"""The watches' cache: slim bodies, and the operator's own writes until the watch delivers them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mltask_operator.cache import (
    OVERLAY_SECONDS,
    TASK,
    WORKFLOW,
    Cache,
    entry,
    slim_object,
    slim_workflow,
)
from mltask_operator.labels import PIPELINE as PIPELINE_LABEL
from mltask_operator.mltask_status import observe_workflow
from mltask_operator.resync import Resync, fingerprint


def task(name: str, rv: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
            "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "uid": "u1",
                         "generation": 1, "labels": extra.pop("labels", {}),
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                         "x" * 5000},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"type": "training"}, **extra}




def test_slim_task_keeps_what_reconciles_read_and_drops_the_rest() -> None:
    b = task("t", "5", status={"status": "running"})
    s = slim_object(b)
    assert s["spec"] == b["spec"] and s["status"] == b["status"]
    assert s["metadata"] == {"namespace": "ns", "name": "t", "resourceVersion": "5", "uid": "u1",
                             "generation": 1, "labels": {}}
    assert len(json.dumps(s)) < 300


def test_slim_workflow_observes_the_same_as_the_full_one() -> None:
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
          "metadata": {"namespace": "ns", "name": "t-1", "resourceVersion": "9",
                       "ownerReferences": [{"uid": "u1"}]},
          "spec": {"shutdown": "Stop", "templates": [{"name": "run", "container": {}}] * 20},
          "status": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z",
                     "nodes": {"n1": {"id": "n1", "name": "t-1.run(0)", "displayName": "run(0)",
                                      "type": "Pod", "templateName": "run",
                                      "phase": "Failed", "message": "Error (exit code 1): boom",
                                      "startedAt": "2026-01-01T00:00:01Z",
                                      "resourcesDuration": {"cpu": 3}, "hostNodeName": "n",
                                      "outputs": {"exitCode": "1", "parameters": [
                                          {"name": "metrics", "value": "{}",
                                           "valueFrom": {"path": "/x"}}],
                                          "artifacts": [{"name": "main-logs"}]}}}}}
    slim = slim_workflow(wf)
    assert observe_workflow(slim) == observe_workflow(wf)
    assert "templates" not in json.dumps(slim) and "resourcesDuration" not in json.dumps(slim)


def test_a_write_is_read_back_until_the_watch_delivers_it_or_something_newer() -> None:
    c = Cache()
    old = task("t", "5")
    c.put(TASK, old)
    c.wrote(TASK, old, task("t", "6", status={"status": "init"}))
    assert c.task("ns", "t")["status"] == {"status": "init"}, "the watch is behind: our write"
    assert c.observed(TASK, task("t", "6")), "the watch delivers exactly our write: an echo"
    c.put(TASK, task("t", "6", status={"status": "init"}))
    assert c.task("ns", "t")["metadata"]["resourceVersion"] == "6"

    c.wrote(TASK, task("t", "6"), task("t", "7", status={"status": "running"}))
    c.put(TASK, task("t", "8", status={"status": "stopping"}))
    assert not c.observed(TASK, task("t", "8")), "someone else's change: not an echo"
    assert c.task("ns", "t")["status"] == {"status": "stopping"}, "the newer one wins"


def test_created_objects_and_children_are_visible_before_the_watch_has_them() -> None:
    c = Cache()
    assert c.workflow("ns", "t-1") is None
    c.wrote(WORKFLOW, None, {"metadata": {"namespace": "ns", "name": "t-1",
                                          "resourceVersion": "3"}})
    assert c.workflow("ns", "t-1")["metadata"]["resourceVersion"] == "3"
    c.forget(WORKFLOW, "ns", "t-1")
    assert c.workflow("ns", "t-1") is None, "deleted before the watch delivered it"

    c.put(TASK, task("p-a", "1", labels={PIPELINE_LABEL: "p"}))
    c.wrote(TASK, None, task("p-b", "2", labels={PIPELINE_LABEL: "p"}))
    c.wrote(TASK, None, task("q-a", "3", labels={PIPELINE_LABEL: "q"}))
    assert [b["metadata"]["name"] for b in c.children("ns", "p")] == ["p-a", "p-b"]


def test_an_entry_is_small_and_unpacks_to_the_slim_body() -> None:
    b = task("t", "5", status={"status": "completed", "workflowName": "t-1",
                               "message": "Completed " * 50})
    b["spec"]["input"] = {"dataset": {"fromTask": "prep"}}
    e = entry(TASK, b)
    assert e.body() == slim_object(b)
    assert (e.head.rv, e.head.phase, e.head.workflow, e.head.upstreams) == (
        "5", "completed", "t-1", ("prep",))
    assert len(e.blob) < len(json.dumps(slim_object(b))) / 2


def test_links_follow_labels_and_starts_and_leave_with_the_object() -> None:
    c = Cache()
    c.put(TASK, task("p-a", "1", labels={PIPELINE_LABEL: "p"}))
    waiting = task("p-b", "2", labels={PIPELINE_LABEL: "p"})
    waiting["spec"]["input"] = {"dataset": {"fromTask": "p-a"}, "model": {"fromTask": "m"}}
    c.put(TASK, waiting)
    assert list(c.child_heads("ns", "p")) == ["p-a", "p-b"]
    assert c.waiting_for("ns", "p-a") == ["p-b"] and c.waiting_for("ns", "m") == ["p-b"]

    started = dict(waiting, status={"status": "init", "attempt": 1})
    started["metadata"] = dict(waiting["metadata"], resourceVersion="3")
    c.put(TASK, started)
    assert c.waiting_for("ns", "p-a") == [], "a started task waits for nothing"

    moved = task("p-a", "4", labels={PIPELINE_LABEL: "q"})
    c.put(TASK, moved)
    assert list(c.child_heads("ns", "p")) == ["p-b"] and list(c.child_heads("ns", "q")) == ["p-a"]
    c.drop(TASK, "ns", "p-b")
    assert c.child_heads("ns", "p") == {} and c.task("ns", "p-b") is None
    assert c._children == {("ns", "q"): {"p-a"}} and c._waiting == {}, "no empty link is kept"


def test_a_deletion_drops_what_the_operator_wrote_too() -> None:
    c = Cache()
    c.put(WORKFLOW, {"metadata": {"namespace": "ns", "name": "t-1", "resourceVersion": "1"}})
    c.wrote(WORKFLOW, {"metadata": {"resourceVersion": "1"}},
            {"metadata": {"namespace": "ns", "name": "t-1", "resourceVersion": "2"}})
    c.drop(WORKFLOW, "ns", "t-1")
    assert c.workflow("ns", "t-1") is None and c.keys(WORKFLOW) == [] and len(c) == 0


def _done(name: str, uri: str, sha256: str, at: str, ns: str = "ns", **status: Any
          ) -> dict[str, Any]:
    b = task(name, "1", status={"status": "completed", "completionTime": at,
                                "outputs": {"uri": uri, "sha256": sha256}, **status})
    b["metadata"]["namespace"] = ns
    return b


def test_a_source_written_over_later_by_another_task_is_overwritten() -> None:
    """Finding 5 of issue 26: a later run writing the same URI makes the earlier run's output
    no cache source (its sha256 no longer holds)."""
    c = Cache()
    first = _done("a", "s3://b/models/mlp/", "1" * 64, "2026-01-01T00:00:00Z")
    c.put(TASK, first)
    assert not c.overwritten(first)
    c.put(TASK, _done("other", "s3://b/models/cnn/", "2" * 64, "2026-01-01T01:00:00Z"))
    c.put(TASK, _done("earlier", "s3://b/models/mlp/", "3" * 64, "2025-12-31T00:00:00Z"))
    c.put(TASK, _done("same-bytes", "s3://b/models/mlp/", "1" * 64, "2026-01-01T02:00:00Z"))
    assert not c.overwritten(first), "another URI, an earlier write, or the same bytes"
    c.put(TASK, _done("copy", "s3://b/models/mlp/", "9" * 64, "2026-01-01T03:00:00Z",
                      conditions=[{"type": "Cached", "status": "True"}]))
    assert not c.overwritten(first), "a reused task wrote nothing"
    c.put(TASK, _done("later", "s3://b/models/mlp/model.joblib", "4" * 64,
                      "2026-01-01T04:00:00Z", ns="team-b"))
    assert c.overwritten(first), "a file inside the folder, from any namespace"


# -- a Workflow deleted a moment after the operator created it

def workflow(rv: str, uid: str = "wf-uid") -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"namespace": "ns", "name": "t-1", "resourceVersion": rv, "uid": uid,
                         "labels": {"mltask.dev/task": "t"}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _play(steps: list[str], cache: Cache) -> None:
    """What the operator's side (the create's response, `wrote`) and the watch's side (its
    events, as main.workflow_event handles them) do, in the order given."""
    for step in steps:
        if step == "create returns":
            cache.wrote(WORKFLOW, None, workflow("10"))
        elif step == "ADDED":
            cache.put(WORKFLOW, workflow("10"))
            cache.observed(WORKFLOW, workflow("10"))
        elif step == "DELETED":
            cache.drop(WORKFLOW, "ns", "t-1", "wf-uid")


#: every moment the deletion can fall in, as the operator sees it: the create's response and
#: the watch's events interleave in any order (the watch keeps ADDED before DELETED); Kopf may
#: merge ADDED and DELETED of one object into the DELETED alone (its batch window).
WINDOW = {
    "deleted before the create returns": ["ADDED", "DELETED", "create returns"],
    "deleted before the create returns, events merged": ["DELETED", "create returns"],
    "deleted between the create and ADDED, events merged": ["create returns", "DELETED"],
    "ADDED before the create returns, deleted after": ["ADDED", "create returns", "DELETED"],
    "deleted after ADDED": ["create returns", "ADDED", "DELETED"],
}


@pytest.mark.parametrize("moment", list(WINDOW))
def test_a_workflow_deleted_at_any_moment_of_the_window_reads_as_gone(moment: str) -> None:
    c = Cache()
    _play(WINDOW[moment], c)
    assert c.workflow("ns", "t-1") is None and c.head(WORKFLOW, "ns", "t-1") is None, \
        "the reconcile must see it gone, to create it again"
    c.wrote(WORKFLOW, None, workflow("12", uid="wf-uid-2"))
    assert c.workflow("ns", "t-1")["metadata"]["uid"] == "wf-uid-2", \
        "the one made again (another uid) is read back as any create"


def test_a_created_child_deleted_before_the_create_returns_is_no_child() -> None:
    c = Cache()
    child = task("p-a", "4", labels={PIPELINE_LABEL: "p"})
    c.put(TASK, child)
    c.drop(TASK, "ns", "p-a", "u1")
    c.wrote(TASK, None, child)
    assert c.children("ns", "p") == [] and c.task("ns", "p-a") is None


def test_a_write_the_watch_never_delivers_expires_and_the_resync_heals_the_task() -> None:
    """Created and deleted while the watch reconnected: neither event comes. After
    OVERLAY_SECONDS the Workflow reads as gone, and the resync queues the task (active), whose
    reconcile then makes it again."""
    clock = Clock()
    c = Cache(clock=clock)
    c.put(TASK, task("t", "5", status={"status": "init", "attempt": 1,
                                       "workflowName": "t-1"}))
    c.wrote(WORKFLOW, None, workflow("10"))
    queued: list[tuple[str, str, str]] = []
    r = Resync(c, queued.append, interval=60)
    r.reconciled((TASK, "ns", "t"))
    clock.now += OVERLAY_SECONDS
    assert c.workflow("ns", "t-1") is not None, "kept while the watch may still deliver it"
    clock.now += 1
    assert c.workflow("ns", "t-1") is None and c.head(WORKFLOW, "ns", "t-1") is None
    assert r.once() == 1 and queued == [(TASK, "ns", "t")]
    assert fingerprint(c, (TASK, "ns", "t")) == ("5", None)


def test_tombstones_and_overlays_are_forgotten_after_a_while() -> None:
    clock = Clock()
    c = Cache(clock=clock)
    c.drop(WORKFLOW, "ns", "t-1", "wf-uid")
    c.wrote(TASK, None, task("other", "3"))
    clock.now += OVERLAY_SECONDS + 1
    c.wrote(TASK, None, task("later", "4"))
    assert c._tombstones == {} and list(c._overlay) == [(TASK, "ns", "later")]
