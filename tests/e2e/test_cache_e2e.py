"""Reuse of finished work under Argo's real workflow-controller (kwok nodes): a task with
caching on runs its three pods; an identical one completes from its outputs with no Workflow
and no pod; one with a changed parameter runs."""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.tasks import Tasks, cond, example

pytestmark = pytest.mark.e2e


def cached(name: str, seed: str = "0") -> dict[str, Any]:
    body = example("preprocessing")
    body["metadata"] = {"name": name}
    body["spec"]["cache"] = {"enabled": True}
    body["spec"]["config"]["parameters"]["seed"] = seed
    return body


def task_pods(tasks: Tasks, name: str) -> list[Any]:
    return tasks.core.list_namespaced_pod(tasks.ns, label_selector=f"mltask.dev/task={name}").items


def test_a_hit_under_argo_runs_no_pod_and_a_miss_runs(tasks: Tasks) -> None:
    tasks.create(cached("prep-a"))
    source = tasks.wait_state("prep-a", "completed", "done", timeout=90)["status"]
    assert len(task_pods(tasks, "prep-a")) == 3, "the source ran its download, run and upload"

    tasks.create(cached("prep-b"))
    st = tasks.wait_state("prep-b", "completed", "done", timeout=30)["status"]
    assert st["outputs"] == source["outputs"] and st["cacheKey"] == source["cacheKey"]
    assert cond(st, "Cached")["status"] == "True"
    time.sleep(2)  # let a stray Workflow or pod appear
    assert task_pods(tasks, "prep-b") == []
    assert [w["metadata"]["name"] for w in tasks.workflows()] == ["prep-a-1"]

    tasks.create(cached("prep-c", seed="1"))
    st = tasks.wait_state("prep-c", "completed", "done", timeout=90)["status"]
    assert cond(st, "Cached")["reason"] == "CacheMiss" and st["attempt"] == 1
    assert len(task_pods(tasks, "prep-c")) == 3
