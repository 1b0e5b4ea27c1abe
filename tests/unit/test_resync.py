"""The resync from memory: what it queues (changed or active objects only, no API call), and
that no Kopf handler makes Kopf write to the objects (no finalizer, no bookkeeping)."""

from __future__ import annotations

import threading
import time
from typing import Any

import kopf

from mltask_operator import resync
from mltask_operator.cache import PIPELINE, TASK, WORKFLOW, Cache
from mltask_operator.labels import PIPELINE as PIPELINE_LABEL


def body(ns: str, name: str, rv: str, status: str | None = None,
         labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"metadata": {"namespace": ns, "name": name, "resourceVersion": rv,
                                        "labels": labels or {}},
                           "spec": spec}
    if status:
        out["status"] = {"status": status, "workflowName": f"{name}-1"}
    return out


class World:
    """A Cache filled as the watches fill it."""

    def __init__(self) -> None:
        self.cache = Cache()

    def put(self, kind: str, b: dict[str, Any]) -> None:
        self.cache.put(kind, b)

    def drop(self, kind: str, ns: str, name: str) -> None:
        self.cache.drop(kind, ns, name)


def test_a_finished_object_nothing_touched_is_not_queued_again() -> None:
    w = World()
    w.put(TASK, body("a", "done", "1", "completed"))
    w.put(WORKFLOW, body("a", "done-1", "7"))
    w.put(TASK, body("a", "failed", "2", "failed"))
    w.put(PIPELINE, body("b", "p", "3", "completed"))
    queued: list[tuple[str, str, str]] = []
    r = resync.Resync(w.cache, queued.append, interval=60)
    assert r.once() == 3, "never reconciled: every object is queued"
    for key in list(queued):
        r.reconciled(key)
    queued.clear()
    assert r.once() == 0 and queued == [], "nothing changed: nothing queued, no API call"

    w.put(WORKFLOW, body("a", "done-1", "8"))          # its Workflow moved
    w.put(TASK, body("a", "failed", "9", "failed"))    # the task itself moved
    assert r.once() == 2
    assert sorted(queued) == [(TASK, "a", "done"), (TASK, "a", "failed")]


def test_active_objects_are_queued_every_pass() -> None:
    w = World()
    w.put(TASK, body("a", "running", "1", "running"))
    w.put(TASK, body("a", "new", "2"))
    w.put(PIPELINE, body("a", "p", "3", "init"))
    queued: list[tuple[str, str, str]] = []
    r = resync.Resync(w.cache, queued.append, interval=60)
    for key in [(TASK, "a", "running"), (TASK, "a", "new"), (PIPELINE, "a", "p")]:
        r.reconciled(key)
    assert r.once() == 3, "their elapsed time moves"


def test_upstream_and_children_changes_count() -> None:
    w = World()
    w.put(TASK, body("a", "up", "1", "completed"))
    w.put(TASK, body("a", "down", "2", "failed", input={"dataset": {"fromTask": "up"}}))
    w.put(PIPELINE, body("a", "p", "3", "completed"))
    w.put(TASK, body("a", "p-train", "4", "completed", labels={PIPELINE_LABEL: "p"}))
    queued: list[tuple[str, str, str]] = []
    r = resync.Resync(w.cache, queued.append, interval=60)
    for kind, name in [(TASK, "up"), (TASK, "down"), (PIPELINE, "p"), (TASK, "p-train")]:
        r.reconciled((kind, "a", name))
    assert r.once() == 0
    w.put(TASK, body("a", "up", "5", "completed"))
    w.put(TASK, body("a", "p-train", "6", "completed", labels={PIPELINE_LABEL: "p"}))
    r.once()
    assert sorted(queued) == sorted([(PIPELINE, "a", "p"), (TASK, "a", "down"),
                                     (TASK, "a", "p-train"), (TASK, "a", "up")])


def test_failing_objects_are_left_to_their_backoff_and_gone_ones_forgotten() -> None:
    w = World()
    w.put(TASK, body("a", "bad", "1", "failed"))
    w.put(TASK, body("a", "gone", "2", "failed"))
    queued: list[tuple[str, str, str]] = []
    r = resync.Resync(w.cache, queued.append, interval=60,
                      skip=lambda key: key == (TASK, "a", "bad"))
    r.reconciled((TASK, "a", "gone"))
    w.drop(TASK, "a", "gone")
    assert r.once() == 0, "the failing one waits for its retry; the deleted one is gone"
    assert (TASK, "a", "gone") not in r._seen


def test_the_thread_repeats_until_stopped() -> None:
    w = World()
    w.put(TASK, body("a", "t", "1", "running"))
    passes = threading.Semaphore(0)
    r = resync.Resync(w.cache, lambda key: passes.release(), interval=0.05)
    started = time.monotonic()
    r.start()
    for _ in range(3):
        assert passes.acquire(timeout=5)
    assert time.monotonic() - started >= 0.15, "each pass waits an interval first"
    r.stop()
    r.thread.join(timeout=5)
    assert not r.thread.is_alive()


def test_no_kopf_handler_makes_kopf_write_to_objects() -> None:
    """Timers, daemons and on.delete make Kopf add its finalizer (nolar/kopf#1074), and
    create/update/resume handlers make it write its diff-base and progress annotations: the
    operator has only event handlers, so Kopf writes nothing. No index either: Kopf holds every
    listed object until all indexes are filled, waking each waiting object per object indexed
    (quadratic), which cost minutes and 600 MiB at a start with 10,000 tasks."""
    from mltask_operator import main  # noqa: F401  registers the handlers

    registry = kopf.get_default_registry()
    assert not registry._spawning.get_all_handlers(), "no timers or daemons"
    assert not registry._changing.get_all_handlers(), "no create/update/resume/delete handlers"
    assert registry._watching.get_all_handlers(), "event handlers queue the objects"
    assert not registry._indexing.get_all_handlers(), "the cache keeps what the watches deliver"


def test_kopf_keeps_no_per_object_state_and_copies_no_body() -> None:
    """The operator's storages for Kopf: no diff-base, no progress, no copy of the body."""
    from mltask_operator.kopf_persistence import NoDiffBase, NoProgress

    body = kopf.Body({"metadata": {"name": "t", "annotations": {"a": "b"}}, "spec": {"x": 1}})
    patch = kopf.Patch()
    diffbase, progress = NoDiffBase(), NoProgress()
    assert diffbase.build(body=body) == {} and diffbase.fetch(body=body) is None
    diffbase.store(body=body, patch=patch, essence={"spec": {}})
    progress.store(key=kopf.HandlerId("h"), record={}, body=body, patch=patch)
    progress.touch(body=body, patch=patch, value="x")
    assert progress.fetch(key=kopf.HandlerId("h"), body=body) is None
    essence = {"spec": {"x": 1}}
    assert progress.clear(essence=essence) is essence
    assert not patch, "nothing is written to the object"
