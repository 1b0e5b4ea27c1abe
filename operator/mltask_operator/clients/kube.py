"""Kubernetes API calls of the operator, each with explicit handling of conflicts and absence."""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client, config

from mltask_operator import metrics
from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1 import pipeline as pipeline_api
from mltask_operator.api.v1alpha1.common import API_VERSION, GROUP, VERSION

log = logging.getLogger(__name__)

ARGO_GROUP, ARGO_VERSION, WORKFLOWS = "argoproj.io", "v1alpha1", "workflows"
COMPONENT = "mltask-operator"


class Conflict(Exception):
    """The object changed since it was read; read it again and recompute."""


class Gone(Exception):
    """The object was deleted since it was read: nothing to reconcile."""


class Rejected(RuntimeError):
    """The API server refused an object the operator built (HTTP 400, 403 or 422): its
    schema, a quota or an admission policy. `kind`: the refused object's kind."""

    def __init__(self, message: str, kind: str = "") -> None:
        super().__init__(message)
        self.kind = kind


class OwnershipError(RuntimeError):
    """An object with the deterministic name exists but belongs to someone else."""

    def __init__(self, message: str, existing: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.existing: dict[str, Any] = existing or {}  # the object that holds the name


def classify(method: str, url: str) -> tuple[str, str, str] | None:
    """(verb, resource[/subresource], dry run) of a request URL, as the API server names them
    in apiserver_request_total (GET of a collection is LIST, or WATCH)."""
    parts = urlsplit(url)
    segs = [s for s in parts.path.split("/") if s]
    if not segs or segs[0] not in ("api", "apis"):
        return None
    rest = segs[2:] if segs[0] == "api" else segs[3:]
    if len(rest) >= 3 and rest[0] == "namespaces":
        rest = rest[2:]
    if not rest:
        return None
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource += "/" + rest[2]
    query = parse_qs(parts.query)
    verb = method.upper()
    if verb == "GET":
        verb = "GET" if name else ("WATCH" if query.get("watch", [""])[0] in ("true", "1",
                                                                           "True") else "LIST")
    return verb, resource, "dry run" if "dryRun" in query else ""


class CountingApiClient(client.ApiClient):
    """The operator's API client: counts every request by verb, resource and HTTP code
    (mltask_api_requests_total)."""

    def call_api(self, method, url, *args, **kwargs):  # type: ignore[no-untyped-def]
        key = classify(method, url)
        code = "error"
        try:
            response = super().call_api(method, url, *args, **kwargs)
            code = str(response.status)
            return response
        except client.ApiException as e:
            code = str(e.status)
            raise
        finally:
            if key is not None:
                metrics.API_REQUESTS.labels(key[0], key[1], code).inc()


def load_config() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the KUBECONFIG."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return CountingApiClient()


#: (connect, read) seconds for every call: a connection that hangs or drops packets fails the
#: reconcile, which is retried, instead of holding a worker until TCP gives up.
REQUEST_TIMEOUT = (5.0, 30.0)


class Kube:
    """Typed wrapper over the API calls the reconcilers need (reads come from the watches:
    `mltask_operator.cache`). Every call has a timeout (REQUEST_TIMEOUT)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.timeout = REQUEST_TIMEOUT
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    def _get(self, group: str, version: str, plural: str, namespace: str,
             name: str) -> dict[str, Any] | None:
        try:
            return self.objects.get_namespaced_custom_object(
                group, version, namespace, plural, name, _request_timeout=self.timeout)
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_objects(self, group: str, version: str, plural: str, namespace: str | None = None,
                     label_selector: str | None = None, page: int = 500
                     ) -> Iterator[dict[str, Any]]:
        """Every object of a kind (in `namespace`, else cluster-wide), one page of `page` in
        memory at a time."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page, "_request_timeout": self.timeout}
            if token:
                kwargs["_continue"] = token
            if label_selector:
                kwargs["label_selector"] = label_selector
            if namespace:
                rsp = self.objects.list_namespaced_custom_object(group, version, namespace,
                                                                 plural, **kwargs)
            else:
                rsp = self.objects.list_cluster_custom_object(group, version, plural, **kwargs)
            token = (rsp.get("metadata") or {}).get("continue")
            yield from rsp.get("items") or []
            del rsp
            if not token:
                return

    def _replace_status(self, plural: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        try:
            return self.objects.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], body,
                _request_timeout=self.timeout)
        except client.ApiException as e:
            _raise_conflict_or_gone(e, kind, meta)
            raise

    # -- MLTask

    def replace_task_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write status with the body's resourceVersion: a concurrent change raises Conflict."""
        return self._replace_status(mltask_api.PLURAL, mltask_api.KIND, body)

    def create_task(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create, or return the existing one of the same name if it is ours (idempotent)."""
        meta = body["metadata"]
        try:
            return self.objects.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], mltask_api.PLURAL, body,
                _request_timeout=self.timeout), True
        except client.ApiException as e:
            if e.status == 422:
                raise Rejected(f"MLTask {meta['namespace']}/{meta['name']} was rejected: "
                               f"{_message(e)}") from e
            if e.status != 409:
                raise
        existing = self._get(GROUP, VERSION, mltask_api.PLURAL, meta["namespace"], meta["name"])
        if existing is None:
            raise Conflict(f"MLTask {meta['namespace']}/{meta['name']} vanished")
        _check_owner(existing, body)
        return existing, False

    def delete_task(self, body: dict[str, Any]) -> bool:
        """Delete an MLTask (its TTL ended) with everything it owns, only as read (uid and
        resourceVersion preconditions): a change since raises Conflict. False if gone."""
        return self._delete_object(mltask_api.PLURAL, mltask_api.KIND, body)

    def label_task(self, body: dict[str, Any], key: str, value: str | None) -> dict[str, Any]:
        """Set (or, with None, remove) one label of an MLTask, as read (resourceVersion)."""
        return self._label(mltask_api.PLURAL, mltask_api.KIND, body, key, value)

    def _delete_object(self, plural: str, kind: str, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        try:
            self.objects.delete_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, meta["name"],
                body=client.V1DeleteOptions(
                    propagation_policy="Background",
                    preconditions=client.V1Preconditions(
                        uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))),
                _request_timeout=self.timeout)
            return True
        except client.ApiException as e:
            if e.status == 404:
                return False
            _raise_conflict_or_gone(e, kind, meta)
            raise

    def _label(self, plural: str, kind: str, body: dict[str, Any], key: str,
               value: str | None) -> dict[str, Any]:
        meta = body["metadata"]
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion"),
                              "labels": {key: value}}}
        try:
            return self.objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], plural, meta["name"], patch,
                _request_timeout=self.timeout)
        except client.ApiException as e:
            _raise_conflict_or_gone(e, kind, meta)
            raise

    def patch_task_spec(self, namespace: str, name: str,
                        spec: dict[str, Any]) -> dict[str, Any]:
        return self.objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, mltask_api.PLURAL, name, {"spec": spec},
            _request_timeout=self.timeout)

    # -- Pipeline

    def replace_pipeline_status(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write status with the body's resourceVersion: a concurrent change raises Conflict."""
        return self._replace_status(pipeline_api.PLURAL, pipeline_api.KIND, body)

    def delete_pipeline(self, body: dict[str, Any]) -> bool:
        """Delete a Pipeline (its TTL ended) with its tasks, only as read. False if gone."""
        return self._delete_object(pipeline_api.PLURAL, pipeline_api.KIND, body)

    def label_pipeline(self, body: dict[str, Any], key: str,
                       value: str | None) -> dict[str, Any]:
        return self._label(pipeline_api.PLURAL, pipeline_api.KIND, body, key, value)

    # -- Workflow

    def create_workflow(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create, or return the existing one of the same name if it is ours (idempotent)."""
        meta = body["metadata"]
        try:
            created = self.objects.create_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, meta["namespace"], WORKFLOWS, body,
                _request_timeout=self.timeout)
            return created, True
        except client.ApiException as e:
            if e.status in (400, 422):  # Argo's schema, or an admission policy, refused it
                raise Rejected(f"Workflow {meta['namespace']}/{meta['name']} was rejected: "
                               f"{_message(e)}", "Workflow") from e
            if e.status != 409:
                raise RuntimeError(
                    f"Failed to create Workflow {meta['namespace']}/{meta['name']}: "
                    f"{e.status} {e.reason}: {_message(e)}") from e
        existing = self._get(ARGO_GROUP, ARGO_VERSION, WORKFLOWS, meta["namespace"],
                             meta["name"])
        if existing is None:
            raise Conflict(f"Workflow {meta['namespace']}/{meta['name']} vanished")
        _check_owner(existing, body)
        return existing, False

    def delete_workflow(self, namespace: str, name: str) -> None:
        """Delete a Workflow this reconcile created (its volume was refused); gone is fine."""
        try:
            self.objects.delete_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, namespace, WORKFLOWS, name,
                propagation_policy="Background", _request_timeout=self.timeout)
        except client.ApiException as e:
            if e.status != 404:
                raise

    def stop_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Argo's graceful shutdown: running pods are stopped, exit handlers still run.
        Returns the Workflow as patched, None if it is gone."""
        try:
            return self.objects.patch_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, namespace, WORKFLOWS, name,
                {"spec": {"shutdown": "Stop"}}, _request_timeout=self.timeout)
        except client.ApiException as e:
            if e.status != 404:
                raise
            return None

    # -- PVC

    def ensure_pvc(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        try:
            self.core.create_namespaced_persistent_volume_claim(
                meta["namespace"], body, _request_timeout=self.timeout)
            return True
        except client.ApiException as e:
            if e.status in (400, 403, 422):  # invalid, or refused by a quota or a policy
                raise Rejected(f"PersistentVolumeClaim {meta['namespace']}/{meta['name']} was "
                               f"rejected: {_message(e)}", "PersistentVolumeClaim") from e
            if e.status != 409:
                raise
        existing = self.api.sanitize_for_serialization(
            self.core.read_namespaced_persistent_volume_claim(
                meta["name"], meta["namespace"], _request_timeout=self.timeout))
        _check_owner(existing, body)
        if (existing.get("metadata") or {}).get("deletionTimestamp"):
            # Released a moment ago (the task completed, then was retried): its pods wait
            # until the new one exists; retried after a backoff.
            raise RuntimeError(f"PersistentVolumeClaim {meta['namespace']}/{meta['name']} is "
                               "still being released; it is made again once it is gone")
        return False

    def delete_pvc(self, namespace: str, name: str) -> None:
        """Release a task's working volume; gone is fine."""
        try:
            self.core.delete_namespaced_persistent_volume_claim(
                name, namespace, _request_timeout=self.timeout)
        except client.ApiException as e:
            if e.status != 404:
                raise

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod of a superseded retry; gone (or collected by Argo) is fine."""
        try:
            self.core.delete_namespaced_pod(name, namespace, _request_timeout=self.timeout)
        except client.ApiException as e:
            if e.status != 404:
                raise

    # -- Events

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on an MLTask or Pipeline; never fails the reconcile."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", API_VERSION),
                "kind": obj.get("kind", mltask_api.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body,
                                              _request_timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 - an Event is best effort
            log.warning("Failed to record Event %s on %s %s/%s: %s", reason,
                        obj.get("kind", mltask_api.KIND), meta["namespace"], meta["name"],
                        getattr(e, "reason", None) or e)


def list_objects(objects: client.CustomObjectsApi, plural: str, namespace: str | None, *,
                 field_selector: str | None = None,
                 label_selector: str | None = None) -> list[dict[str, Any]]:
    """Every mltask.dev object of `plural` in `namespace` (None: the whole cluster) matching
    the selectors, read page by page so a large cluster is never one huge response."""
    items: list[dict[str, Any]] = []
    args: dict[str, Any] = {"limit": 500}
    if field_selector:
        args["field_selector"] = field_selector
    if label_selector:
        args["label_selector"] = label_selector
    while True:
        if namespace is None:
            page = objects.list_cluster_custom_object(GROUP, VERSION, plural, **args)
        else:
            page = objects.list_namespaced_custom_object(GROUP, VERSION, namespace, plural,
                                                         **args)
        items.extend(page["items"])
        args["_continue"] = page["metadata"].get("continue")
        if not args["_continue"]:
            return items


def _raise_conflict_or_gone(e: client.ApiException, kind: str, meta: dict[str, Any]) -> None:
    """A write's 409 or 404, as a reconcile sees it: Conflict or Gone; anything else returns."""
    where = f"{kind} {meta['namespace']}/{meta['name']}"
    if e.status == 409:
        raise Conflict(f"{where} changed") from e
    if e.status == 404:
        raise Gone(f"{where} is gone") from e


def _message(e: client.ApiException) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.reason)
    except (TypeError, ValueError):
        return str(e.reason)


def _check_owner(existing: dict[str, Any], desired: dict[str, Any]) -> None:
    want = desired["metadata"]["ownerReferences"][0]["uid"]
    refs = (existing.get("metadata") or {}).get("ownerReferences") or []
    if not any(r.get("uid") == want for r in refs):
        meta = desired["metadata"]
        raise OwnershipError(
            f"{desired['kind']} {meta['namespace']}/{meta['name']} exists but is not owned by "
            f"this {desired['metadata']['ownerReferences'][0]['kind']} (uid {want}); delete or "
            "rename it", existing)
