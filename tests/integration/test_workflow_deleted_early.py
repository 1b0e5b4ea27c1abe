"""A Workflow deleted by hand a moment after the operator created it is made again: however the
deletion falls against the create's response and the watch's events (the cache's overlay of
the operator's own writes must not keep claiming it exists; tests/unit/test_cache.py plays
every order of them)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kubernetes import client, watch

from harness.tasks import Tasks, example

pytestmark = pytest.mark.integration

#: Seconds after the watch here delivers the Workflow's ADDED at which it is deleted: at once
#: (before the operator's create has returned, often), and later across the window.
DELAYS = (0.0, 0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.4)


def test_a_workflow_deleted_just_after_its_creation_is_made_again(
        api: client.ApiClient, namespace: str, operator) -> None:
    tasks = Tasks(api, namespace)
    objects = client.CustomObjectsApi(api)
    listed = objects.list_namespaced_custom_object("argoproj.io", "v1alpha1", namespace,
                                                   "workflows")
    names = {f"early-{i}-1": delay for i, delay in enumerate(DELAYS)}
    first_uid: dict[str, str] = {}
    deleted_at: dict[str, float] = {}
    errors: list[BaseException] = []
    w = watch.Watch()

    def delete(name: str) -> None:
        try:
            objects.delete_namespaced_custom_object("argoproj.io", "v1alpha1", namespace,
                                                    "workflows", name)
            deleted_at[name] = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def deleter() -> None:
        try:
            for ev in w.stream(objects.list_namespaced_custom_object, "argoproj.io",
                               "v1alpha1", namespace, "workflows",
                               resource_version=listed["metadata"]["resourceVersion"],
                               timeout_seconds=120):
                obj: dict[str, Any] = ev["object"]
                name = obj["metadata"]["name"]
                if ev["type"] == "ADDED" and name in names and name not in first_uid:
                    first_uid[name] = obj["metadata"]["uid"]
                    if names[name]:
                        threading.Timer(names[name], delete, (name,)).start()
                    else:
                        delete(name)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    thread = threading.Thread(target=deleter, daemon=True)
    thread.start()
    time.sleep(0.5)  # the watch is open
    try:
        for i in range(len(DELAYS)):
            body = example("preprocessing")
            body["metadata"]["name"] = f"early-{i}"
            tasks.create(body)
        deadline = time.monotonic() + 30
        while len(deleted_at) < len(names) and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert not errors, errors
        assert set(deleted_at) == set(names), "every first Workflow was seen and deleted"
        late: dict[str, str] = {}
        for name in names:
            # made again within 20 s of its deletion (the issue saw 1.0 s, and never)
            wf = None
            while time.monotonic() < deleted_at[name] + 20:
                try:
                    wf = objects.get_namespaced_custom_object(
                        "argoproj.io", "v1alpha1", namespace, "workflows", name)
                except client.ApiException as e:
                    if e.status != 404:
                        raise
                    wf = None
                if wf and wf["metadata"]["uid"] != first_uid[name]:
                    break
                time.sleep(0.1)
            if not wf or wf["metadata"]["uid"] == first_uid[name]:
                task = tasks.get(name.removesuffix("-1"))
                late[name] = f"{task.get('status', {}).get('message')!r}"
        assert not late, f"not made again within 20 s: {late}\n{operator.tail(60)}"
    finally:
        w.stop()
