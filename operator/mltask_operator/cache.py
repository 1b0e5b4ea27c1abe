"""What the watches delivered, kept in memory for the reconcilers instead of a GET per event:
the fields they read of every MLTask, Workflow and Pipeline, the links between them (a
pipeline's children, the tasks waiting for an upstream's output), and what the operator itself
wrote that the watch has not delivered yet.

The store is filled before any reconcile runs: `prime` lists every kind page by page when the
operator starts (before Kopf's watches begin), then every watch event updates it (`observe`,
`drop`). So an object missing here does not exist, or is too new for the watch to have
delivered it; a write based on a stale read is refused by its resourceVersion all the same.
It is not a Kopf index: Kopf holds every listed object in memory until all of its indexes are
filled, and wakes every waiting object each time one is indexed (quadratic in the objects),
which at 10,000 tasks cost minutes of CPU and 600 MiB at each start.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mltask_operator import kinds
from mltask_operator.api.v1alpha1.common import quantity_value
from mltask_operator.api.v1alpha1.mltask import WorkVolume, input_upstreams
from mltask_operator.labels import PIPELINE as PIPELINE_LABEL
from mltask_operator.mltask_cache_key import reused, source_key
from mltask_operator.mltask_status import holds_volume

TASK, WORKFLOW, PIPELINE = kinds.MLTASK.kind, kinds.WORKFLOW.kind, kinds.PIPELINE.kind
Body = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
OverlayKey = tuple[str, str, str]  # (kind, namespace, name)

#: Seconds an overlay entry (a write the watch has not delivered) and a tombstone (a deletion
#: the watch delivered) are kept at most. The watch delivers within a second; past this the
#: watch's version is read again, so a write whose event never came (the object was created
#: and deleted while the watch reconnected) cannot hide the truth for longer: a stale read is
#: refused by its resourceVersion, and a create of something that exists answers 409.
OVERLAY_SECONDS = 30.0

#: metadata the reconcilers read: the identity, the resourceVersion writes are conditional
#: on, the generation the status observes, and the labels and owners that link objects.
_META = ("name", "namespace", "uid", "resourceVersion", "generation", "labels",
         "ownerReferences", "deletionTimestamp", "creationTimestamp")
#: what status.observe_workflow reads of each node of a Workflow.
_NODE = ("id", "name", "type", "templateName", "phase", "message", "startedAt", "finishedAt",
         "progress")


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
    return set(input_upstreams(spec.get("input") or {}).values())


SLIM = {TASK: slim_object, PIPELINE: slim_object, WORKFLOW: slim_workflow}


@dataclass(frozen=True, slots=True)
class Head:
    """What the resync, the store's links and the metrics read without unpacking a body: its
    resourceVersion, status phase, current Workflow, upstream tasks, whether it has started an
    attempt (or completed without one, its outputs reused), its pipeline (label), its type, the
    bytes of working volume it holds, the cache key under which it may be reused, and what it
    wrote (`written`: output URI, sha256 and completion time of a task that completed by
    running)."""

    rv: str | None
    phase: str | None
    workflow: str | None
    upstreams: tuple[str, ...]
    started: bool = False
    pipeline: str | None = None
    type: str | None = None
    volume_bytes: int = 0
    cache_key: str | None = None
    written: tuple[str, str | None, str] | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Head:
        status = body.get("status") or {}
        spec = body.get("spec") or {}
        labels = (body.get("metadata") or {}).get("labels") or {}
        started = bool(status.get("attempt")) or status.get("status") == "completed"
        return cls(_rv(body), status.get("status"), status.get("workflowName"),
                   tuple(sorted(upstreams(spec))), started, labels.get(PIPELINE_LABEL),
                   spec.get("type"), _volume_bytes(spec, status), source_key(body),
                   _written(status))


def _written(status: Mapping[str, Any]) -> tuple[str, str | None, str] | None:
    """(output URI, sha256, completion time) of a task that completed by running, or None."""
    out = status.get("outputs") or {}
    done = status.get("completionTime")
    if status.get("status") != "completed" or not out.get("uri") or not done or reused(status):
        return None
    return str(out["uri"]), out.get("sha256"), str(done)


def _bucket(uri: str) -> str:
    """The store's part of an output URI (s3://bucket/...): the writers index's key."""
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def overlaps(a: str, b: str) -> bool:
    """Whether writing URI `a` can change what URI `b` names (the same object, or one is a
    folder holding the other)."""
    return a == b or (a.endswith("/") and b.startswith(a)) or (b.endswith("/") and a.startswith(b))


def _volume_bytes(spec: Mapping[str, Any], status: Mapping[str, Any]) -> int:
    """The working volume's requested bytes while a task holds it (status.holds_volume); 0
    otherwise, or for a size that is not a quantity."""
    failed = next((c.get("reason") for c in status.get("conditions") or []
                   if c.get("type") == "Failed"), None)
    if not holds_volume(int(status.get("attempt") or 0),
                        bool((status.get("released") or {}).get("workVolume")), failed):
        return 0
    size = ((spec.get("runtime") or {}).get("workVolume") or {}).get("size", WorkVolume().size)
    try:
        return int(quantity_value(size))
    except ValueError:
        return 0


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
    """Reads of the watched objects by kind and (namespace, name), and the links between them.

    Written by the watch (`observe`, `drop`, and `prime` at start) on the event loop, read by
    the workers' threads. A write's response is kept as an overlay until the watch delivers
    that version or a newer one, so the next reconcile of the object does not act on the
    version it just replaced. A deletion the watch delivers before the write's response came
    back (the object was deleted a moment after it was made) leaves a tombstone of its uid, so
    that response is not kept; and no overlay outlives OVERLAY_SECONDS."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._store: dict[str, dict[Key, Entry]] = {TASK: {}, WORKFLOW: {}, PIPELINE: {}}
        # (namespace, pipeline) -> its MLTasks; (namespace, upstream) -> tasks not started yet
        # that read its output; (namespace, cache key) -> completed tasks that may be reused
        self._children: dict[Key, set[str]] = {}
        self._waiting: dict[Key, set[str]] = {}
        self._sources: dict[Key, set[str]] = {}
        # bucket (s3://name) -> the tasks (namespace, name) that completed writing into it
        self._writers: dict[str, set[Key]] = {}
        # (kind, namespace, name) -> (resourceVersion the write replaced, or None for a
        # create; the slim body written; when, by `clock`)
        self._overlay: dict[OverlayKey, tuple[str | None, Body, float]] = {}
        # uid of an object whose deletion the watch delivered -> when, by `clock`
        self._tombstones: dict[str, float] = {}
        self._clock = clock
        self._lock = threading.Lock()

    # -- the watch's side

    def put(self, kind: str, body: Mapping[str, Any]) -> Entry:
        """Store what a watch event (or the listing) delivered; returns its entry."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        new = entry(kind, body)
        with self._lock:
            old = self._store[kind].get(key)
            self._store[kind][key] = new
            if kind == TASK:
                self._link(key, old.head if old else None, new.head)
        return new

    def drop(self, kind: str, namespace: str, name: str, uid: str | None = None) -> None:
        """The watch delivered the object's deletion (`uid`: the deleted object's, remembered
        for OVERLAY_SECONDS so that a write's response that comes back later is not kept)."""
        key = (namespace, name)
        with self._lock:
            old = self._store[kind].pop(key, None)
            if kind == TASK and old is not None:
                self._link(key, old.head, None)
            self._overlay.pop((kind, namespace, name), None)
            if uid:
                now = self._clock()
                self._tombstones[uid] = now
                self._expire(now)

    def _expire(self, now: float) -> None:
        """Forget tombstones and overlay entries older than OVERLAY_SECONDS (holding the
        lock)."""
        for uid in [u for u, at in self._tombstones.items() if now - at > OVERLAY_SECONDS]:
            del self._tombstones[uid]
        for okey in [k for k, over in self._overlay.items() if now - over[2] > OVERLAY_SECONDS]:
            del self._overlay[okey]

    def _link(self, key: Key, old: Head | None, new: Head | None) -> None:
        namespace, name = key

        def move(links: dict[Key, set[str]], before: set[str], after: set[str]) -> None:
            for gone in before - after:
                names = links.get((namespace, gone))
                if names is not None:
                    names.discard(name)
                    if not names:
                        del links[(namespace, gone)]
            for added in after - before:
                links.setdefault((namespace, added), set()).add(name)

        def pipe(h: Head | None) -> set[str]:
            return {h.pipeline} if h and h.pipeline else set()

        def waits(h: Head | None) -> set[str]:
            return set(h.upstreams) if h and not h.started else set()

        def source(h: Head | None) -> set[str]:
            return {h.cache_key} if h and h.cache_key else set()

        move(self._children, pipe(old), pipe(new))
        move(self._waiting, waits(old), waits(new))
        move(self._sources, source(old), source(new))
        for h, add in ((old, False), (new, True)):
            if h is None or h.written is None:
                continue
            writers = self._writers.setdefault(_bucket(h.written[0]), set())
            if add:
                writers.add(key)
            else:
                writers.discard(key)

    def prime(self, kind: str, bodies: Iterable[Mapping[str, Any]]) -> int:
        """Store a listing, one object at a time (the caller pages it); returns the count."""
        count = 0
        for body in bodies:
            self.put(kind, body)
            count += 1
        return count

    def waiting_for(self, namespace: str, upstream: str) -> list[str]:
        """The tasks that have not started and read `upstream`'s output (fromTask)."""
        with self._lock:
            return sorted(self._waiting.get((namespace, upstream), ()))

    def sources(self, namespace: str, key: str) -> list[Body]:
        """The completed tasks of this namespace that may be reused under a cache key
        (mltask_cache_key.source_key), freshest bodies (whether each still may is for the
        caller to check: the operator's own writes are not indexed until the watch delivers
        them). A dict lookup, then one body per candidate: no API call."""
        with self._lock:
            names = sorted(self._sources.get((namespace, key), ()))
        return [b for b in (self.task(namespace, n) for n in names) if b]

    def overwritten(self, body: Mapping[str, Any]) -> bool:
        """Whether another task, of any namespace, completed writing other bytes over a completed
        task's output after it (a cache source whose output no longer holds what it made)."""
        meta = body.get("metadata") or {}
        mine = _written(body.get("status") or {})
        if mine is None:
            return False
        uri, sha256, done = mine
        me = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            writers = sorted(self._writers.get(_bucket(uri), ()))
        for key in writers:
            h = self.head(TASK, *key) if key != me else None
            if h is None or h.written is None:
                continue
            other_uri, other_sha, other_done = h.written
            if overlaps(uri, other_uri) and other_done >= done and other_sha != sha256:
                return True
        return False

    # -- the reconcilers' side

    def _freshest(self, kind: str, namespace: str, name: str) -> Entry | Body | None:
        """The watch's entry, unless the operator wrote a newer body the watch has not
        delivered yet."""
        watched = self._store[kind].get((namespace, name))
        okey = (kind, namespace, name)
        with self._lock:
            over = self._overlay.get(okey)
            if over is None:
                return watched
            replaced, written, at = over
            if (watched.head.rv if watched else None) == replaced \
                    and self._clock() - at <= OVERLAY_SECONDS:  # the watch is behind
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
        with self._lock:
            names = set(self._children.get((namespace, pipeline)) or ())
            self._expire(self._clock())
            names.update(name for (kind, ns, name), (replaced, body, _) in self._overlay.items()
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
        with self._lock:
            return list(self._store[kind])

    def heads(self, kind: str) -> list[tuple[Key, Head]]:
        """Every stored object's key and Head, as the watch delivered them (for the metrics)."""
        with self._lock:
            return [(key, e.head) for key, e in self._store[kind].items()]

    def __len__(self) -> int:
        return sum(len(v) for v in self._store.values())

    def wrote(self, kind: str, replaced: Mapping[str, Any] | None,
              written: Mapping[str, Any]) -> Body:
        """Record a write's response (`replaced`: the body it replaced, None for a create);
        returns it slimmed. Not recorded if the watch has delivered the object's deletion
        already (deleted before the response came back): the cache says it is gone."""
        body = SLIM[kind](written)
        meta = body["metadata"]
        with self._lock:
            now = self._clock()
            self._expire(now)
            if meta.get("uid") not in self._tombstones:
                self._overlay[(kind, meta["namespace"], meta["name"])] = (
                    _rv(replaced), body, now)
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
