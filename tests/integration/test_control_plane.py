"""Proof that the test control plane is a real Kubernetes API server, not a fake.

Each test checks behaviour only a real kube-apiserver (and controller manager) has: schema
validation, watches, the status subresource, RBAC, Argo's CRD schemas, garbage collection.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from kubernetes import client, watch

from harness.controlplane import ControlPlane, versions

pytestmark = pytest.mark.integration

GROUP, VERSION, PLURAL = "harness.mltask.test", "v1", "widgets"

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["replicas"],
                                "properties": {
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "color": {"type": "string", "enum": ["red", "blue"]},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _wait(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def widget_crd(api: client.ApiClient) -> str:
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(WIDGET_CRD)
    except client.ApiException as e:
        if e.status != 409:
            raise

    def established():
        crd = ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        return any(
            c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
        )

    _wait(established, what="CRD Established")
    return f"{PLURAL}.{GROUP}"


def test_server_reports_pinned_version(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == versions()["K8S_VERSION"]


def test_crd_is_established(api: client.ApiClient, widget_crd: str) -> None:
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition(widget_crd)
    conditions = {c.type: c.status for c in crd.status.conditions}
    assert conditions["Established"] == "True"
    assert conditions["NamesAccepted"] == "True"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"replicas": "three"}, "spec.replicas"),
        ({"replicas": -1}, "spec.replicas"),
        ({"replicas": 1, "color": "green"}, "spec.color"),
        ({}, "spec.replicas"),
    ],
)
def test_schema_violation_is_rejected_with_422_naming_the_field(
    api: client.ApiClient, widget_crd: str, namespace: str, spec: dict, field: str
) -> None:
    objs = client.CustomObjectsApi(api)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(client.ApiException) as err:
        objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    assert err.value.status == 422
    message = json.loads(err.value.body)["message"]
    assert field in message, message
    # nothing was created
    listed = objs.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert listed["items"] == []


def test_watch_sees_create_and_status_subresource_update(
    api: client.ApiClient, widget_crd: str, namespace: str
) -> None:
    objs = client.CustomObjectsApi(api)
    events: list[tuple[str, dict]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            objs.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            timeout_seconds=30,
        ):
            events.append((event["type"], event["object"]))
            if event["type"] == "MODIFIED" and event["object"].get("status", {}).get("phase"):
                w.stop()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.5)  # let the watch open before creating
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget",
            "metadata": {"name": "w1"}, "spec": {"replicas": 1}}
    objs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    # status is ignored through the main resource...
    objs.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "w1", {"status": {"phase": "ignored"}}
    )
    got = objs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert "status" not in got
    # ...and written through the status subresource
    objs.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, "w1", {"status": {"phase": "Ready"}}
    )
    thread.join(timeout=30)
    types = [t for t, _ in events]
    assert "ADDED" in types
    assert events[-1][0] == "MODIFIED"
    assert events[-1][1]["status"] == {"phase": "Ready"}


def _workflow(name: str, **spec_overrides) -> dict:
    spec = {
        "entrypoint": "main",
        "templates": [
            {"name": "main", "container": {"image": "busybox:1.36", "command": ["true"]}}
        ],
    }
    spec.update(spec_overrides)
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": name}, "spec": spec}


def test_argo_full_crd_accepts_valid_and_rejects_invalid_workflow(
    api: client.ApiClient, namespace: str
) -> None:
    objs = client.CustomObjectsApi(api)
    created = objs.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows", _workflow("ok")
    )
    assert created["metadata"]["uid"]
    bad = _workflow("bad", parallelism="many")  # integer in Argo's schema
    with pytest.raises(client.ApiException) as err:
        objs.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflows", bad)
    assert err.value.status == 422
    assert "spec.parallelism" in json.loads(err.value.body)["message"]
    bad = _workflow("bad2")
    bad["spec"]["templates"][0]["container"]["resources"] = {"limits": {"cpu": ["x"]}}
    with pytest.raises(client.ApiException) as err:
        objs.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflows", bad)
    assert err.value.status == 422
    message = json.loads(err.value.body)["message"]
    assert "spec.templates[0].container.resources.limits.cpu" in message


def test_argo_workflow_crd_is_the_full_schema(control_plane: ControlPlane) -> None:
    status, body = control_plane.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/workflows.argoproj.io"
    )
    assert status == 200
    schema = json.loads(body)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    # Argo's "minimal" CRDs only carry x-kubernetes-preserve-unknown-fields
    assert "x-kubernetes-preserve-unknown-fields" not in spec
    template = spec["properties"]["templates"]["items"]["properties"]
    assert "image" in template["container"]["properties"]
    assert "tasks" in template["dag"]["properties"]


def test_service_account_without_permissions_is_forbidden(
    api: client.ApiClient, namespace: str, as_service_account
) -> None:
    sa = as_service_account(namespace, "nobody")
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(sa).list_namespaced_config_map(namespace)
    assert err.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in json.loads(err.value.body)["message"]
    # grant exactly list on configmaps: then the same identity may list, and still not delete
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    })
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
    })
    _wait(lambda: _can_list(sa, namespace), what="RBAC grant to take effect")
    with pytest.raises(client.ApiException) as err:
        client.CoreV1Api(sa).delete_namespaced_config_map("kube-root-ca.crt", namespace)
    assert err.value.status == 403


def _can_list(sa: client.ApiClient, namespace: str) -> bool:
    try:
        client.CoreV1Api(sa).list_namespaced_config_map(namespace)
        return True
    except client.ApiException as e:
        if e.status == 403:
            return False
        raise


def test_deleting_owner_garbage_collects_dependents(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    core.delete_namespaced_config_map("owner", namespace)

    def gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
            return False
        except client.ApiException as e:
            return e.status == 404

    _wait(gone, timeout=60, what="garbage collector to delete the dependent")


def test_namespace_gets_default_service_account_and_finishes_deleting(
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    _wait(lambda: _exists(lambda: core.read_namespaced_service_account("default", name)),
          what="default ServiceAccount")
    core.delete_namespace(name)
    _wait(lambda: not _exists(lambda: core.read_namespace(name)), timeout=60,
          what="namespace deletion to finish")


def _exists(read) -> bool:
    try:
        read()
        return True
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise


def test_control_plane_stops_cleanly(tmp_path) -> None:
    """A second, short-lived control plane starts on other ports and leaves no process behind."""
    cp = ControlPlane(workdir=tmp_path / "second")
    cp.start()
    pids = dict(cp.pids)
    assert cp.get("/readyz")[0] == 200
    cp.stop()

    for name, pid in pids.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
            # a zombie would still answer; ControlPlane.stop waits for its children
            raise AssertionError(f"{name} (pid {pid}) still running")
