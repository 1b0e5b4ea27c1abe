"""The finalizer-free resync: what it reconciles, and that no Kopf handler needs a finalizer."""

from __future__ import annotations

import threading
import time
from typing import Any

import kopf

from mltask_operator import resync


def obj(namespace: str, name: str, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


def test_every_object_of_every_kind_in_every_namespace_once() -> None:
    listed: list[tuple[str, str | None]] = []
    done: list[tuple[str, str, str]] = []
    world = {"a": [obj("a", "t1"), obj("a", "gone", deleting=True)], "b": [obj("b", "t2")]}

    def lister(kind: str):
        def list_objects(ns: str | None) -> list[dict[str, Any]]:
            listed.append((kind, ns))
            return world[ns] if kind == "MLTask" else [obj(ns, "p1")] if ns == "b" else []
        return list_objects

    def reconciler(kind: str):
        return lambda ns, name: done.append((kind, ns, name))

    count = resync.resync_once([("MLTask", lister("MLTask"), reconciler("MLTask")),
                                ("Pipeline", lister("Pipeline"), reconciler("Pipeline"))],
                               ["a", "b"])
    assert listed == [("MLTask", "a"), ("MLTask", "b"), ("Pipeline", "a"), ("Pipeline", "b")]
    assert done == [("MLTask", "a", "t1"), ("MLTask", "b", "t2"), ("Pipeline", "b", "p1")]
    assert count == 3, "an object being deleted is left alone"


def test_cluster_wide_lists_once_without_a_namespace() -> None:
    listed: list[str | None] = []
    resync.resync_once([("MLTask", lambda ns: listed.append(ns) or [], lambda ns, n: None)], [])
    assert listed == [None]


def test_a_failing_object_or_list_does_not_stop_the_others(caplog) -> None:
    done: list[str] = []

    def reconcile(ns: str, name: str) -> None:
        if name == "bad":
            raise RuntimeError("boom")
        done.append(name)

    def list_objects(ns: str | None) -> list[dict[str, Any]]:
        if ns == "forbidden":
            raise RuntimeError("403")
        return [obj(ns or "", "bad"), obj(ns or "", "good")]

    before = resync.metrics.RECONCILE_ERRORS.labels(kind="MLTask")._value.get()
    count = resync.resync_once([("MLTask", list_objects, reconcile)], ["forbidden", "ok"])
    assert (count, done) == (1, ["good"])
    assert resync.metrics.RECONCILE_ERRORS.labels(kind="MLTask")._value.get() == before + 1
    messages = [r.getMessage() for r in caplog.records]
    assert "Resync of MLTask ok/bad failed" in messages
    assert "Failed to list MLTasks in forbidden for the resync" in messages


def test_the_thread_repeats_until_stopped() -> None:
    passes = threading.Semaphore(0)
    r = resync.Resync([("MLTask", lambda ns: [obj("a", "t")], lambda ns, n: passes.release())],
                      [], interval=0.05)
    started = time.monotonic()
    r.start()
    for _ in range(3):
        assert passes.acquire(timeout=5)
    assert time.monotonic() - started >= 0.15, "each pass waits an interval first"
    r.stop()
    r.thread.join(timeout=5)
    assert not r.thread.is_alive()


def test_no_kopf_handler_puts_a_finalizer_on_objects() -> None:
    """Timers, daemons and on.delete make Kopf add its finalizer (nolar/kopf#1074): none."""
    from mltask_operator import main  # noqa: F401  registers the handlers

    registry = kopf.get_default_registry()
    assert not registry._spawning.get_all_handlers(), "no timers or daemons"
    changing = registry._changing.get_all_handlers()
    assert changing, "the create/update/resume handlers are registered"
    assert not [h.id for h in changing if h.requires_finalizer], "no on.delete"
    assert not [h for h in changing if h.reason == kopf.Reason.DELETE]
