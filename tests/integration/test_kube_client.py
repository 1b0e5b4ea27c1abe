"""The operator's API client (clients.kube) against the real API server's answers."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from harness.tasks import example
from mltask_operator import kinds
from mltask_operator.clients.kube import Gone, Kube

HOLD = "mltask.dev/test-hold"


def test_a_create_in_a_namespace_being_deleted_is_gone(api: client.ApiClient,
                                                       mltask_crds: list[str]) -> None:
    """A Pipeline's reconcile that creates a task while its namespace goes (every test's
    teardown) gets Gone, not an error to log and retry with backoff."""
    core = client.CoreV1Api(api)
    ns = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    held = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="held", finalizers=[HOLD]))
    core.create_namespaced_config_map(ns, held)  # keeps the namespace Terminating
    try:
        core.delete_namespace(ns)
        body = example("training")
        body["metadata"].update(name="p-train", namespace=ns)
        with pytest.raises(Gone, match=f"MLTask {ns}/p-train: its namespace is being deleted"):
            Kube(api).create(kinds.MLTASK, body)
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "p-train-work", "namespace": ns},
               "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}
        with pytest.raises(Gone, match="PersistentVolumeClaim .*: its namespace is being"):
            Kube(api).ensure_pvc(pvc)  # not VolumeRejected: the task is not failed for it
    finally:
        core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
