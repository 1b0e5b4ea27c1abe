"""What the watches delivered, kept in memory for the reconcilers instead of a GET per event:
the fields they read of every MLTask, Workflow and Pipeline (Kopf indexes, see `main`), and
what the operator itself wrote that the watch has not delivered yet.

Kopf fills its indexes from the watches before any handler runs (and so before any key is
queued), so an object missing here does not exist, or is too new for the watch to have
delivered it; a write based on a stale read is refused by its resourceVersion all the same.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mltask_operator.labels import PIPELINE as PIPELINE_LABEL

TASK, WORKFLOW, PIPELINE = "MLTask", "Workflow", "Pipeline"
Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)

#: metadata the reconcilers read: the identity, the resourceVersion writes are conditional
#: on, the generation the status observes, and the labels and owners that link objects.
_META = ("name", "namespace", "uid", "resourceVersion", "generation", "labels",
         "ownerReferences", "deletionTimestamp", "creationTimestamp")
#: what status.observe_workflow reads of each node of a Workflow.
_NODE = ("id", "name", "type", "templateName", "phase", "message", "startedAt", "finishedAt")


def _meta(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {k: meta[k] for k in _META if meta.get(k) is not None}


def slim_object(body: Mapping[str, Any]) -> Body:
    """An MLTask or Pipeline as the reconcilers read it: all of spec and status, the metadata
    above (no annotations, managedFields or Kopf's bookkeeping)."""
    out: Body = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                 "metadata": _meta(body), "spec": dict(body.get("spec") or {})}
    if body.get("status"):
        out["status"] = dict(body["status"])
    return out


def _slim_node(node: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: node[k] for k in _NODE if node.get(k) is not None}
    outputs = node.get("outputs") or {}
    kept: dict[str, Any] = {}
    if outputs.get("parameters"):
        kept["parameters"] = [{"name": p.get("name"), "value": p.get("value", "")}
                              for p in outputs["parameters"]]
    if outputs.get("exitCode") is not None:
        kept["exitCode"] = outputs["exitCode"]
    if kept:
        out["outputs"] = kept
    return out


def slim_workflow(body: Mapping[str, Any]) -> Body:
    """A Workflow as the MLTask's status needs it: its phase and each node's phase, times,
    message and output parameters (no templates, spec or resource usage)."""
    status = body.get("status") or {}
    out: Body = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                 "metadata": _meta(body)}
    shutdown = (body.get("spec") or {}).get("shutdown")
    if shutdown:
        out["spec"] = {"shutdown": shutdown}
    if status:
        slim = {k: status[k] for k in ("phase", "message", "startedAt", "finishedAt")
                if status.get(k) is not None}
        nodes = status.get("nodes") or {}
        if nodes:
            slim["nodes"] = {nid: _slim_node(n) for nid, n in nodes.items()}
        out["status"] = slim
    return out


def upstreams(spec: Mapping[str, Any]) -> set[str]:
    """The MLTasks whose outputs a task's spec reads (input.dataset/model.fromTask)."""
    inputs = spec.get("input") or {}
    return {src["fromTask"] for src in (inputs.get("dataset"), inputs.get("model"))
            if isinstance(src, Mapping) and src.get("fromTask")}


SLIM = {TASK: slim_object, PIPELINE: slim_object, WORKFLOW: slim_workflow}


@dataclass(frozen=True, slots=True)
class Head:
    """What the resync compares without unpacking a body: its resourceVersion, status phase,
    current Workflow and upstream tasks."""

    rv: str | None
    phase: str | None
    workflow: str | None
    upstreams: tuple[str, ...]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Head:
        status = body.get("status") or {}
        return cls(_rv(body), status.get("status"), status.get("workflowName"),
                   tuple(sorted(upstreams(body.get("spec") or {}))))


@dataclass(frozen=True, slots=True)
class Entry:
    """One watched object as kept in memory: its Head, and its slim body as compressed JSON
    (about 1-2 KB for a finished task and as much for its Workflow, against 15-30 KB as Python
    objects), unpacked only when a reconcile reads it."""

    head: Head
    blob: bytes

    def body(self) -> Body:
        return json.loads(zlib.decompress(self.blob))  # type: ignore[no-any-return]


def entry(kind: str, body: Mapping[str, Any]) -> Entry:
    slim = SLIM[kind](body)
    packed = json.dumps(slim, separators=(",", ":")).encode()
    return Entry(Head.of(slim), zlib.compress(packed, 1))


def _rv(body: Mapping[str, Any] | None) -> str | None:
    return ((body or {}).get("metadata") or {}).get("resourceVersion")


class Cache:
    """Reads of the watched objects by kind and (namespace, name).

    `indexes` are Kopf's, by kind: each maps (namespace, name) to the slim body (one value);
    `children` maps (namespace, pipeline) to the names of its MLTasks. They are bound when the
    operator starts (`bind`); tests may pass plain dicts of lists.

    A write's response is kept as an overlay until the watch delivers that version or a newer
    one, so the next reconcile of the object does not act on the version it just replaced."""

    def __init__(self) -> None:
        self._indexes: dict[str, Mapping[Key, Any]] = {}
        self._children: Mapping[Key, Any] = {}
        # (kind, namespace, name) -> (resourceVersion the write replaced, or None for a
        # create; the slim body written)
        self._overlay: dict[tuple[str, str, str], tuple[str | None, Body]] = {}
        self._lock = threading.Lock()

    def bind(self, indexes: Mapping[str, Mapping[Key, Any]],
             children: Mapping[Key, Any]) -> None:
        self._indexes, self._children = dict(indexes), children

    def _watched(self, kind: str, key: Key) -> Entry | None:
        values = self._indexes[kind].get(key)
        return next(iter(values), None) if values is not None else None

    def _freshest(self, kind: str, namespace: str, name: str) -> Entry | Body | None:
        """The watch's entry, unless the operator wrote a newer body the watch has not
        delivered yet."""
        watched = self._watched(kind, (namespace, name))
        okey = (kind, namespace, name)
        with self._lock:
            over = self._overlay.get(okey)
            if over is None:
                return watched
            replaced, written = over
            if (watched.head.rv if watched else None) == replaced:  # the watch is behind
                return written
            del self._overlay[okey]       # the watch caught up (or moved on)
            return watched

    def get(self, kind: str, namespace: str, name: str) -> Body | None:
        """The freshest body known (a copy the caller may keep)."""
        found = self._freshest(kind, namespace, name)
        return found.body() if isinstance(found, Entry) else found

    def head(self, kind: str, namespace: str, name: str) -> Head | None:
        """The freshest Head known, without unpacking the body."""
        found = self._freshest(kind, namespace, name)
        return found.head if isinstance(found, Entry) else Head.of(found) if found else None

    def task(self, namespace: str, name: str) -> Body | None:
        return self.get(TASK, namespace, name)

    def workflow(self, namespace: str, name: str) -> Body | None:
        return self.get(WORKFLOW, namespace, name)

    def pipeline(self, namespace: str, name: str) -> Body | None:
        return self.get(PIPELINE, namespace, name)

    def _child_names(self, namespace: str, pipeline: str) -> list[str]:
        names = set(self._children.get((namespace, pipeline)) or [])
        with self._lock:
            names.update(name for (kind, ns, name), (replaced, body) in self._overlay.items()
                         if kind == TASK and ns == namespace and replaced is None
                         and (body["metadata"].get("labels") or {}).get(PIPELINE_LABEL)
                         == pipeline)
        return sorted(names)

    def children(self, namespace: str, pipeline: str) -> list[Body]:
        """The MLTasks labelled as the pipeline's, those it just created included (ownership
        is for the caller to check)."""
        return [b for b in (self.task(namespace, n)
                            for n in self._child_names(namespace, pipeline)) if b]

    def child_heads(self, namespace: str, pipeline: str) -> dict[str, Head]:
        return {n: h for n in self._child_names(namespace, pipeline)
                if (h := self.head(TASK, namespace, n)) is not None}

    def keys(self, kind: str) -> list[Key]:
        return list(self._indexes.get(kind) or ())

    def wrote(self, kind: str, replaced: Mapping[str, Any] | None,
              written: Mapping[str, Any]) -> Body:
        """Record a write's response (`replaced`: the body it replaced, None for a create);
        returns it slimmed."""
        body = SLIM[kind](written)
        meta = body["metadata"]
        with self._lock:
            self._overlay[(kind, meta["namespace"], meta["name"])] = (_rv(replaced), body)
        return body

    def observed(self, kind: str, body: Mapping[str, Any]) -> bool:
        """A watch event delivered `body`: drop the overlay it supersedes. Returns whether it
        delivers exactly what this operator wrote last (nothing a reconcile has not seen)."""
        meta = body.get("metadata") or {}
        okey = (kind, meta.get("namespace", ""), meta.get("name", ""))
        rv = meta.get("resourceVersion")
        with self._lock:
            over = self._overlay.get(okey)
            if over is None or rv == over[0]:
                return False
            del self._overlay[okey]
            return _rv(over[1]) == rv

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._overlay.pop((kind, namespace, name), None)
