"""What the watches' events queue (main's event handlers): a change someone else made, and a
task the operator created itself (a Pipeline's), which no reconcile has seen; not the echo of
the operator's own status write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from mltask_operator import main
from mltask_operator.cache import TASK, Cache
from mltask_operator.labels import PIPELINE as PIPELINE_LABEL
from mltask_operator.workqueue import WorkQueue


def task(rv: str, **status: Any) -> dict[str, Any]:
    return {"apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
            "metadata": {"namespace": "ns", "name": "p-train", "uid": "u1",
                         "resourceVersion": rv, "labels": {PIPELINE_LABEL: "p"}},
            "spec": {"type": "training"}, "status": status}


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkQueue]:
    monkeypatch.setattr(main, "CACHE", Cache())
    queue = WorkQueue()
    monkeypatch.setattr(main, "QUEUE", queue)
    yield queue
    queue.shutdown()


def pending(queue: WorkQueue) -> list[Any]:
    out = []
    while (key := queue.get(timeout=0.01)) is not None:
        out.append(key)
        queue.done(key)
    return out


def deliver(type_: str, raw: dict[str, Any]) -> None:
    body = kopf.Body(raw)
    asyncio.run(main.mltask_event(type=type_, body=body, namespace="ns", name="p-train",
                                  labels=body.metadata.labels, status=body.status))


def test_a_task_the_operator_created_is_queued_when_the_watch_delivers_it(
        queued: WorkQueue) -> None:
    created = task("5")
    main.CACHE.wrote(TASK, None, created)  # the Pipeline's reconcile created it
    deliver("ADDED", created)
    assert (TASK, "ns", "p-train") in pending(queued), "left to the resync (60 s)"


def test_the_echo_of_the_operators_status_write_is_not_queued(queued: WorkQueue) -> None:
    main.CACHE.put(TASK, task("5"))
    written = task("6", status="running")
    main.CACHE.wrote(TASK, task("5"), written)
    deliver("MODIFIED", written)
    assert (TASK, "ns", "p-train") not in pending(queued)
    deliver("MODIFIED", task("7", status="running"))  # someone else's change
    assert (TASK, "ns", "p-train") in pending(queued)
