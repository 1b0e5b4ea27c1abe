"""The watches' cache: slim bodies, and the operator's own writes until the watch delivers them."""

from __future__ import annotations

import json
from typing import Any

from mltask_operator.cache import (
    TASK,
    WORKFLOW,
    Cache,
    entry,
    slim_object,
    slim_workflow,
)
from mltask_operator.labels import PIPELINE as PIPELINE_LABEL
from mltask_operator.mltask_status import observe_workflow


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
