"""Safety-net resync from memory, without finalizers: every MLTASK_RESYNC_SECONDS, queue each
MLTask and Pipeline that changed since its last successful reconcile, and each active one.

It makes no API call: it walks the watches' cache (`mltask_operator.cache`). An object is
"changed" when its resourceVersion, or that of anything its reconcile reads (the task's
current Workflow and upstream tasks, the pipeline's children), differs from what it was when
its last reconcile succeeded; a finished task nobody touches costs nothing. Active objects are
queued every pass: their elapsed time moves (see `handlers.unchanged`).

Kopf's own timers would do this, but a timer makes Kopf put its finalizer on every object
(nolar/kopf#1074), so that deleting a task hangs once the operator is uninstalled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable

from mltask_operator.api.v1alpha1.mltask import TERMINAL_PHASES
from mltask_operator.cache import PIPELINE, TASK, WORKFLOW, Cache

log = logging.getLogger(__name__)

Fingerprint = tuple[str | None, ...]
ObjectKey = tuple[str, str, str]  # (kind, namespace, name)


def fingerprint(cache: Cache, key: ObjectKey) -> Fingerprint | None:
    """The resourceVersions of what a reconcile of `key` reads; None if it is gone."""
    kind, namespace, name = key
    head = cache.head(kind, namespace, name)
    if head is None:
        return None
    if kind == TASK:
        wf = cache.head(WORKFLOW, namespace, head.workflow) if head.workflow else None
        ups = (cache.head(TASK, namespace, u) for u in head.upstreams)
        return (head.rv, wf.rv if wf else None, *(u.rv if u else None for u in ups))
    children = cache.child_heads(namespace, name)
    return (head.rv, *(f"{n}@{h.rv}" for n, h in sorted(children.items())))


def active(cache: Cache, key: ObjectKey) -> bool:
    head = cache.head(*key)
    return head is not None and head.phase not in TERMINAL_PHASES


class Resync:
    """Remembers each object's fingerprint at its last successful reconcile (`reconciled`),
    and every `interval` seconds queues (`enqueue`) those whose fingerprint moved."""

    def __init__(self, cache: Cache, enqueue: Callable[[ObjectKey], None],
                 interval: float, skip: Callable[[Hashable], bool] = lambda key: False) -> None:
        self.cache, self.enqueue, self.interval, self.skip = cache, enqueue, interval, skip
        self._seen: dict[ObjectKey, Fingerprint | None] = {}
        self._lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="resync", daemon=True)

    def reconciled(self, key: ObjectKey) -> None:
        """The reconcile of `key` succeeded: remember what it saw."""
        fp = fingerprint(self.cache, key)
        with self._lock:
            if fp is None:
                self._seen.pop(key, None)
            else:
                self._seen[key] = fp

    def once(self) -> int:
        """One pass; returns how many objects it queued."""
        queued = 0
        for kind in (TASK, PIPELINE):
            keys = [(kind, ns, name) for ns, name in self.cache.keys(kind)]
            with self._lock:
                present = set(keys)
                for gone in [k for k in self._seen if k[0] == kind and k not in present]:
                    del self._seen[gone]
            for key in keys:
                if self.stopped.is_set():
                    return queued
                if self.skip(key):
                    continue  # failing: queued already, after its backoff
                with self._lock:
                    seen = self._seen.get(key)
                if active(self.cache, key) or fingerprint(self.cache, key) != seen:
                    self.enqueue(key)
                    queued += 1
        return queued

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        # The first pass waits a full interval: at start the watches' listing queues all.
        while not self.stopped.wait(self.interval):
            try:
                log.debug("Resync queued %d objects", self.once())
            except Exception:
                log.exception("Resync pass failed")
