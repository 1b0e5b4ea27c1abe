"""Test helpers over the MLTask API: create, patch, wait for a status, list Workflows and events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[2]
G, V, P = "mltask.dev", "v1alpha1", "mltasks"
#: What the upload step of examples/mltask-training.yaml reports (its result file).
RESULT = {"uri": "s3://mltask-examples/models/digits-mlp/model.joblib", "size": 37_704,
          "sha256": "ab" * 32, "id": "model-42"}


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / f"mltask-{name}.yaml").read_text())


def example_with(name: str, **changes: Any) -> dict[str, Any]:
    """An example with spec fields set: `steps__run={...}` sets spec.steps.run."""
    body = example(name)
    for path, value in changes.items():
        node = body["spec"]
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return body


class Resources:
    """Helper over one mltask.dev kind in one namespace: read, patch, wait, read its Events."""

    plural = ""
    kind = ""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def get(self, name: str) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(G, V, self.ns, self.plural, name)

    def patch(self, name: str, spec: dict[str, Any]) -> None:
        self.objects.patch_namespaced_custom_object(G, V, self.ns, self.plural, name,
                                                    {"spec": spec})

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

    def wait_event(self, name: str, reason: str, type_: str = "Normal",
                   timeout: float = 10) -> list[dict[str, Any]]:
        """The object's Events once one has this reason and type. The operator records an
        Event just after the status write it describes, so a test that has seen the status
        waits for the Event rather than reading the Events at once."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(name)
            if any(e["reason"] == reason and e["type"] == type_ for e in events):
                return events
            if time.monotonic() > deadline:
                raise AssertionError(f"no {type_} event {reason} on {name}: {events}")
            time.sleep(0.1)

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(
            self.ns,
            field_selector=f"involvedObject.name={name},involvedObject.kind={self.kind}").items
        return [{"reason": e.reason, "message": e.message, "type": e.type} for e in items]


class Tasks(Resources):
    """Small helper over the MLTask API for one namespace."""

    plural, kind = P, "MLTask"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.objects.create_namespaced_custom_object(G, V, self.ns, P, body)

    def wait_state(self, name: str, status: str, step: str | None = None,
                   timeout: float = 30) -> dict[str, Any]:
        return self.wait(
            name,
            lambda s: s.get("status") == status and (step is None or s.get("executeStep") == step),
            f"{name} to be {status}/{step}", timeout)

    def workflows(self) -> list[dict[str, Any]]:
        return self.objects.list_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.ns, "workflows")["items"]


def step(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next((s for s in status.get("steps") or [] if s["name"] == name), {})


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)
