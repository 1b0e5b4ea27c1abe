"""Kopf registrations: event handlers that keep what the watches deliver (the cache the
reconcilers read) and queue the objects an event concerns, and the startup that fills the cache,
then starts the workers and resync that drain the queue. No change handlers, timers, indexes
or on.delete: Kopf writes nothing to the objects."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import kopf

from mltask_operator import kinds, kopf_watch, metrics
from mltask_operator import labels as keys
from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.cache import PIPELINE, TASK, WORKFLOW, Cache
from mltask_operator.clients.kube import Conflict, Gone, Kube, load_config
from mltask_operator.handlers.mltask import reconcile_task
from mltask_operator.handlers.pipeline import reconcile_pipeline
from mltask_operator.kopf_persistence import NoDiffBase, NoProgress
from mltask_operator.resync import ObjectKey, Resync
from mltask_operator.settings import Settings
from mltask_operator.workqueue import WorkQueue, run_workers

log = logging.getLogger(__name__)
SETTINGS = Settings.from_env()
CACHE = Cache()
QUEUE = WorkQueue()
_kube: Kube | None = None
_resync: Resync | None = None
# Before Kopf opens a watch: its inactivity timeout must not cancel its watchers.
kopf_watch.install()


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube(load_config())
    return _kube


@kopf.on.startup(backoff=2)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf keeps nothing on the objects: no handler needs its progress or diff-base
    # annotations. Its finalizer is named so that Kopf removes the one versions with timers
    # put on every task and pipeline.
    settings.persistence.finalizer = f"{M.group}/finalizer"
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.progress_storage = NoProgress()
    # A per-object worker of Kopf's keeps its last event's body while it idles: idle briefly,
    # so the bodies of a start's listing (every task and Workflow) are not all held at once.
    settings.queueing.idle_timeout = 0.5
    settings.posting.level = logging.WARNING
    # A watch that stays silent (a connection that hangs or drops packets) is reopened from
    # its last resourceVersion after watch_idle_timeout; a refused connection is retried
    # within seconds. The initial listing comes in pages.
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.watching.inactivity_timeout = SETTINGS.watch_idle_timeout
    settings.watching.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.5
    settings.watching.chunk_size = 500
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = [0.5, 1, 1, 2, 2, 3, 3]
    if SETTINGS.namespaces:
        # Listed namespaces are fixed, and Roles in them do not let Kopf list namespaces or
        # watch CRDs cluster-wide (it would log 403s): no dynamic scanning.
        settings.scanning.disabled = True
    prime(kube(), CACHE, SETTINGS.namespaces)
    global _resync
    _resync = Resync(CACHE, QUEUE.add, SETTINGS.resync_seconds, skip=QUEUE.failing)
    run_workers(QUEUE, SETTINGS.workers, _process)
    _resync.start()
    log.info("Started mltask-operator (namespaces: %s; %d workers; resync every %ds)",
             SETTINGS.namespaces or "all", SETTINGS.workers, SETTINGS.resync_seconds)


def prime(api: Kube, cache: Cache, namespaces: list[str]) -> None:
    """Fill the cache from a paged listing of each kind before any worker runs (Kopf starts
    its watches after the startup handlers): a reconcile never mistakes an object the watch
    has not delivered yet for a missing one. The watches' own listing then queues them all."""
    for kind, selector in WATCHED:
        count = 0
        where: list[str | None] = list(namespaces) or [None]
        for namespace in where:
            count += cache.prime(kind.kind, api.list_all(kind, namespace, labels=selector))
        log.info("Listed %d %ss", count, kind.kind)


#: what the operator watches, with a label selector: its own kinds, the Workflows of its tasks
WATCHED = [(kinds.MLTASK, None), (kinds.WORKFLOW, keys.TASK), (kinds.PIPELINE, None)]
M, W, P = kinds.MLTASK, kinds.WORKFLOW, kinds.PIPELINE


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    if _resync is not None:
        _resync.stop()
    QUEUE.shutdown()


def state_metrics(cache: Cache) -> list[Any]:
    """The gauges of what exists, counted from the cache at each scrape."""
    tasks: Counter[tuple[str, str, str]] = Counter()
    volumes: Counter[str] = Counter()
    for (ns, _), head in cache.heads(TASK):
        tasks[(ns, head.type or "", head.phase or "init")] += 1
        if head.volume_bytes:
            volumes[ns] += head.volume_bytes
    pipelines: Counter[tuple[str, str]] = Counter(
        (ns, head.phase or "init") for (ns, _), head in cache.heads(PIPELINE))
    return metrics.state_families(tasks, pipelines, volumes)


metrics.QUEUE_DEPTH.set_function(lambda: len(QUEUE))
metrics.register_state(lambda: state_metrics(CACHE))


def _process(key: ObjectKey) -> float | None:
    """Reconcile one queued object (a worker thread); raising retries it after a backoff; a
    reconcile that asks to be run again later (a TTL) is queued after that delay."""
    kind, namespace, name = key
    started = time.monotonic()
    again: float | None = None
    try:
        if kind == TASK:
            again = reconcile_task(kube(), CACHE, namespace, name,
                                   defaults=SETTINGS.run_defaults, transfer=SETTINGS.transfer,
                                   cleanup=SETTINGS.cleanup, policy=SETTINGS.policy,
                                   task_defaults=SETTINGS.task_defaults)
        else:
            again = reconcile_pipeline(kube(), CACHE, namespace, name, cleanup=SETTINGS.cleanup)
    except Conflict as e:
        # Someone else changed it since the watch delivered it: that change's event queues
        # it again, with the version a write can be based on.
        log.debug("%s %s/%s changed while reconciling: %s", kind, namespace, name, e)
    except Gone:
        return None
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
        raise
    finally:
        metrics.RECONCILE_DURATION.labels(kind=kind).observe(time.monotonic() - started)
    if _resync is not None:
        _resync.reconciled(key)
    # a TTL ends on a whole second: a little after it, so the next reconcile finds it ended
    return None if again is None else max(again, 0.0) + 0.5


# -- events: keep what they deliver, queue what they concern (type None: the initial listing)

@kopf.on.event(M.group, M.version, M.plural)
async def mltask_event(type: str | None, body: kopf.Body, namespace: str | None, name: str,
                       labels: kopf.Labels, status: kopf.Status, **_: Any) -> None:
    """A task changed: reconcile it (unless the change is the operator's own write), its
    pipeline, and the tasks waiting for its output once it completes."""
    namespace = namespace or ""
    if type == "DELETED":
        CACHE.drop(TASK, namespace, name, body.metadata.uid)
    else:
        CACHE.put(TASK, body)
        # A task the operator created (a Pipeline's) is its own write, but no reconcile has
        # seen it yet: it is queued like any new task, not left to the resync.
        if not CACHE.observed(TASK, body) or type == "ADDED":
            QUEUE.add((TASK, namespace, name))
    pipeline = labels.get(keys.PIPELINE)
    if pipeline:
        QUEUE.add((PIPELINE, namespace, pipeline))
    if status.get("status") == mltask_api.Phase.COMPLETED:
        for dependent in CACHE.waiting_for(namespace, name):
            QUEUE.add((TASK, namespace, dependent))


@kopf.on.event(W.group, W.version, W.plural, labels={keys.TASK: kopf.PRESENT})
async def workflow_event(type: str | None, body: kopf.Body, namespace: str | None, name: str,
                         labels: kopf.Labels, **_: Any) -> None:
    """A task's Workflow changed (Argo's progress, or its deletion): reconcile the task."""
    namespace = namespace or ""
    if type == "DELETED":
        CACHE.drop(WORKFLOW, namespace, name, body.metadata.uid)
    else:
        CACHE.put(WORKFLOW, body)
        if CACHE.observed(WORKFLOW, body):
            return
    QUEUE.add((TASK, namespace, labels[keys.TASK]))


@kopf.on.event(P.group, P.version, P.plural)
async def pipeline_event(type: str | None, body: kopf.Body, namespace: str | None, name: str,
                         **_: Any) -> None:
    """A pipeline changed: reconcile it (unless the change is the operator's own write)."""
    namespace = namespace or ""
    if type == "DELETED":
        CACHE.drop(PIPELINE, namespace, name, body.metadata.uid)
    else:
        CACHE.put(PIPELINE, body)
        if not CACHE.observed(PIPELINE, body):
            QUEUE.add((PIPELINE, namespace, name))
