"""Kubernetes API calls of the operator and the kubectl plugin, written once and generic over
the kinds they touch (`mltask_operator.kinds`), with explicit handling of conflicts and absence."""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from kubernetes import client, config

from mltask_operator import metrics
from mltask_operator.kinds import MLTASK, WORKFLOW, Kind

log = logging.getLogger(__name__)

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
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return CountingApiClient()


#: (connect, read) seconds for every call: a connection that hangs or drops packets fails the
#: reconcile, which is retried, instead of holding a worker until TCP gives up.
REQUEST_TIMEOUT = (5.0, 30.0)


class Kube:
    """The API calls of the reconcilers (reads come from the watches: `mltask_operator.cache`)
    and of the kubectl plugin. Every call has a timeout (REQUEST_TIMEOUT)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.timeout = REQUEST_TIMEOUT
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    # -- custom objects of any kind (MLTask, Pipeline, Workflow)

    def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if there is none of that name."""
        try:
            return cast(dict[str, Any], self.objects.get_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name,
                _request_timeout=self.timeout))
        except client.ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_page(self, kind: Kind, namespace: str | None = None, *, labels: str | None = None,
                  fields: str | None = None, limit: int = 500,
                  token: str | None = None) -> dict[str, Any]:
        """One page of the objects of a kind (in `namespace`, else cluster-wide) matching the
        selectors: the API server's list, with `metadata.continue` when there is more."""
        kwargs: dict[str, Any] = {"limit": limit, "_request_timeout": self.timeout}
        if token:
            kwargs["_continue"] = token
        if labels:
            kwargs["label_selector"] = labels
        if fields:
            kwargs["field_selector"] = fields
        if namespace:
            return cast(dict[str, Any], self.objects.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, **kwargs))
        return cast(dict[str, Any], self.objects.list_cluster_custom_object(
            kind.group, kind.version, kind.plural, **kwargs))

    def list_all(self, kind: Kind, namespace: str | None = None, *, labels: str | None = None,
             fields: str | None = None, page: int = 500) -> Iterator[dict[str, Any]]:
        """Every object of a kind matching the selectors, one page of `page` in memory at a
        time, so a large cluster is never one huge response."""
        token: str | None = None
        while True:
            rsp = self.list_page(kind, namespace, labels=labels, fields=fields, limit=page,
                                 token=token)
            token = (rsp.get("metadata") or {}).get("continue")
            yield from rsp.get("items") or []
            del rsp
            if not token:
                return

    def watch(self, kind: Kind, namespace: str | None = None, *, labels: str | None = None,
              fields: str | None = None, resource_version: str,
              seconds: int = 300) -> Any:
        """A watch of a kind from `resource_version`, as the raw response (JSON lines) the
        caller streams and closes; the API server ends it after `seconds`."""
        kwargs: dict[str, Any] = {
            "watch": True, "resource_version": resource_version, "allow_watch_bookmarks": True,
            "timeout_seconds": seconds, "_preload_content": False,
            "_request_timeout": (self.timeout[0], seconds + 30)}
        if labels:
            kwargs["label_selector"] = labels
        if fields:
            kwargs["field_selector"] = fields
        if namespace:
            return self.objects.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, **kwargs)
        return self.objects.list_cluster_custom_object(kind.group, kind.version, kind.plural,
                                                       **kwargs)

    def create(self, kind: Kind, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create, or return the existing one of the same name if it is the same owner's
        (idempotent); whether this call created it. Refused (the kind's schema, an admission
        policy): Rejected; held by someone else: OwnershipError."""
        meta = body["metadata"]
        where = f"{kind.kind} {meta['namespace']}/{meta['name']}"
        try:
            created = cast(dict[str, Any], self.objects.create_namespaced_custom_object(
                kind.group, kind.version, meta["namespace"], kind.plural, body,
                _request_timeout=self.timeout))
            return created, True
        except client.ApiException as e:
            if e.status in (400, 422):
                raise Rejected(f"{where} was rejected: {_message(e)}", kind.kind) from e
            if _namespace_terminating(e):
                raise Gone(f"{where}: its namespace is being deleted") from e
            if e.status != 409:
                raise RuntimeError(f"Failed to create {where}: {e.status} {e.reason}: "
                                   f"{_message(e)}") from e
        existing = self.get(kind, meta["namespace"], meta["name"])
        if existing is None:
            raise Conflict(f"{where} vanished")
        _check_owner(existing, body)
        return existing, False

    def create_new(self, kind: Kind, namespace: str, body: dict[str, Any], *,
                   dry_run: bool = False) -> dict[str, Any]:
        """Create an object that is new: metadata.generateName gives it a name, or its
        metadata.name must be free (else 409). Unknown fields are refused (strict field
        validation); the API server's error is raised as it is. `dry_run`: the server checks
        the object (dryRun=All) and stores nothing."""
        kwargs: dict[str, Any] = {"field_validation": "Strict",
                                  "_request_timeout": self.timeout}
        if dry_run:
            kwargs["dry_run"] = "All"
        return cast(dict[str, Any], self.objects.create_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, body, **kwargs))

    def patch(self, kind: Kind, namespace: str, name: str,
              patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386); with metadata.resourceVersion in it, a concurrent
        change raises Conflict."""
        try:
            return cast(dict[str, Any], self.objects.patch_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name, patch,
                _content_type="application/merge-patch+json", _request_timeout=self.timeout))
        except client.ApiException as e:
            _raise_conflict_or_gone(e, kind.kind, {"namespace": namespace, "name": name})
            raise

    def patch_spec(self, kind: Kind, namespace: str, name: str,
                   spec: dict[str, Any]) -> dict[str, Any]:
        return self.patch(kind, namespace, name, {"spec": spec})

    def label(self, kind: Kind, body: dict[str, Any], key: str,
              value: str | None) -> dict[str, Any]:
        """Set (or, with None, remove) one label of an object, as read (resourceVersion)."""
        meta = body["metadata"]
        return self.patch(kind, meta["namespace"], meta["name"], {"metadata": {
            "resourceVersion": meta.get("resourceVersion"), "labels": {key: value}}})

    def replace_status(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        """Write status with the body's resourceVersion: a concurrent change raises Conflict."""
        meta = body["metadata"]
        try:
            return cast(dict[str, Any], self.objects.replace_namespaced_custom_object_status(
                kind.group, kind.version, meta["namespace"], kind.plural, meta["name"], body,
                _request_timeout=self.timeout))
        except client.ApiException as e:
            _raise_conflict_or_gone(e, kind.kind, meta)
            raise

    def delete(self, kind: Kind, namespace: str, name: str,
               as_read: dict[str, Any] | None = None) -> bool:
        """Delete an object and, in the background, what it owns; False if it is gone. With
        `as_read`, only that very object as it was read (uid and resourceVersion
        preconditions): a change since raises Conflict."""
        options = client.V1DeleteOptions(propagation_policy="Background")
        if as_read is not None:
            meta = as_read["metadata"]
            options.preconditions = client.V1Preconditions(
                uid=meta.get("uid"), resource_version=meta.get("resourceVersion"))
        try:
            self.objects.delete_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name, body=options,
                _request_timeout=self.timeout)
            return True
        except client.ApiException as e:
            if e.status == 404:
                return False
            _raise_conflict_or_gone(e, kind.kind, {"namespace": namespace, "name": name})
            raise

    def stop_workflow(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Argo's graceful shutdown: running pods are stopped, exit handlers still run.
        Returns the Workflow as patched, None if it is gone."""
        try:
            return self.patch_spec(WORKFLOW, namespace, name, {"shutdown": "Stop"})
        except Gone:
            return None

    # -- core objects: working volumes, pods, Events

    def ensure_pvc(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        try:
            self.core.create_namespaced_persistent_volume_claim(  # a dict is sent as it is
                meta["namespace"], body, _request_timeout=self.timeout)  # type: ignore[arg-type]
            return True
        except client.ApiException as e:
            if _namespace_terminating(e):
                raise Gone(f"PersistentVolumeClaim {meta['namespace']}/{meta['name']}: its "
                           "namespace is being deleted") from e
            if e.status in (400, 403, 422):  # invalid, or refused by a quota or a policy
                raise Rejected(f"PersistentVolumeClaim {meta['namespace']}/{meta['name']} was "
                               f"rejected: {_message(e)}", "PersistentVolumeClaim") from e
            if e.status != 409:
                raise
        existing = self.api.sanitize_for_serialization(  # type: ignore[no-untyped-call]
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

    def pod_exists(self, namespace: str, name: str) -> bool:
        try:
            self.core.read_namespaced_pod(name, namespace, _request_timeout=self.timeout)
            return True
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise

    def pod_log(self, namespace: str, pod: str, container: str, *, follow: bool = False,
                tail: int | None = None) -> Any:
        """A container's log through the API server (the kubelet's), as the raw response the
        caller streams; following it, no read timeout."""
        return self.core.read_namespaced_pod_log(
            pod, namespace, container=container, follow=follow, tail_lines=tail,
            _preload_content=False,
            _request_timeout=self.timeout[0] if follow else self.timeout)

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Record a Kubernetes Event on an MLTask or Pipeline; never fails the reconcile."""
        meta = obj["metadata"]
        now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", MLTASK.api_version),
                "kind": obj.get("kind", MLTASK.kind),
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
            self.core.create_namespaced_event(meta["namespace"], body,  # type: ignore[arg-type]
                                              _request_timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 - an Event is best effort
            log.warning("Failed to record Event %s on %s %s/%s: %s", reason,
                        obj.get("kind", MLTASK.kind), meta["namespace"], meta["name"],
                        getattr(e, "reason", None) or e)


def _raise_conflict_or_gone(e: client.ApiException, kind: str, meta: dict[str, Any]) -> None:
    """A write's 409 or 404, as a reconcile sees it: Conflict or Gone; anything else returns."""
    where = f"{kind} {meta['namespace']}/{meta['name']}"
    if e.status == 409:
        raise Conflict(f"{where} changed") from e
    if e.status == 404:
        raise Gone(f"{where} is gone") from e


def _namespace_terminating(e: client.ApiException) -> bool:
    """A 403 for a create in a namespace being deleted: the objects in it are going too."""
    if e.status != 403:
        return False
    try:
        causes = (json.loads(e.body or "").get("details") or {}).get("causes") or []
    except (TypeError, ValueError, AttributeError):
        return False
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


def _message(e: client.ApiException) -> str:
    try:
        return str(json.loads(e.body or "").get("message") or e.reason)
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
