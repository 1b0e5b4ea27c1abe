"""Test helpers over the Pipeline API: create, patch, wait for a status, read children."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import yaml
from kubernetes import client

from harness.tasks import REPO, G, V
from harness.tasks import P as TASKS

PIPELINES = "pipelines"
DATASET = {"uri": "s3://ml-datasets/processed/cifar10-train.zip", "size": 1_200_000,
           "sha256": "cd" * 32}


def pipeline_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / f"pipeline-{name}.yaml").read_text())


def model_result(name: str) -> dict[str, Any]:
    return {"uri": f"s3://ml-models/{name}.pt", "size": 44_000_000, "sha256": "ef" * 32}


class Pipelines:
    """Small helper over the Pipeline API for one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.objects.create_namespaced_custom_object(G, V, self.ns, PIPELINES, body,
                                                            field_validation="Strict")

    def get(self, name: str) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(G, V, self.ns, PIPELINES, name)

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.objects.patch_namespaced_custom_object(G, V, self.ns, PIPELINES, name,
                                                    {"spec": spec})

    def children(self) -> dict[str, dict[str, Any]]:
        items = self.objects.list_namespaced_custom_object(G, V, self.ns, TASKS)["items"]
        return {i["metadata"]["name"]: i for i in items}

    def wait(self, name: str, predicate: Callable[[dict[str, Any]], bool], what: str,
             timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.get(name)
            if predicate(last.get("status") or {}):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; status: "
                             f"{json.dumps(last.get('status'), indent=1, default=str)}")

    def wait_state(self, name: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("status") == status, f"{name} to be {status}",
                         timeout)["status"]

    def wait_child(self, name: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.children().get(name)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"MLTask {name} was not created; have {sorted(self.children())}")

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name},involvedObject.kind=Pipeline"
        ).items
        return [{"reason": e.reason, "message": e.message, "type": e.type} for e in items]


def task_state(status: dict[str, Any], task: str) -> dict[str, Any]:
    return next(t for t in status.get("tasks") or [] if t["name"] == task)
