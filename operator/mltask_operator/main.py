"""Kopf registrations: thin wrappers that hand every MLTask, Pipeline and Workflow event to the
reconcilers, and the finalizer-free resync (no timers, no on.delete: nothing needs a finalizer)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from mltask_operator import labels as keys
from mltask_operator import metrics
from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1 import pipeline as pipeline_api
from mltask_operator.api.v1alpha1.common import GROUP, VERSION
from mltask_operator.clients.kube import ARGO_GROUP, ARGO_VERSION, WORKFLOWS, Kube, load_config
from mltask_operator.handlers.mltask import reconcile_task
from mltask_operator.handlers.pipeline import reconcile_pipeline
from mltask_operator.resync import Resync
from mltask_operator.settings import Settings

log = logging.getLogger(__name__)
SETTINGS = Settings.from_env()
_kube: Kube | None = None
_resync: Resync | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube(load_config())
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Progress and diff-base live in annotations under our own prefix: never in spec, and
    # never in an unschematized status field the API server would prune.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # No handler needs a finalizer (no timers, daemons or on.delete). Kopf removes its finalizer
    # from an object no handler needs it for, but only the one named here: this name makes it
    # remove the finalizer that versions with timers put on every task and pipeline.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Without these a watch can hang silently on a half-dead connection.
    settings.watching.server_timeout = SETTINGS.watch_server_timeout
    settings.watching.client_timeout = SETTINGS.watch_client_timeout
    settings.watching.connect_timeout = 30
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = SETTINGS.workers
    if SETTINGS.namespaces:
        # Listed namespaces are fixed, and Roles in them do not let Kopf list namespaces or
        # watch CRDs cluster-wide (it would log 403s): no dynamic scanning.
        settings.scanning.disabled = True
    kube()
    global _resync
    _resync = Resync([(mltask_api.KIND, kube().list_tasks, _task),
                      (pipeline_api.KIND, kube().list_pipelines, _resync_pipeline)],
                     SETTINGS.namespaces, SETTINGS.resync_seconds)
    _resync.start()
    log.info("Started mltask-operator (namespaces: %s; resync every %ds)",
             SETTINGS.namespaces or "all", SETTINGS.resync_seconds)


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    if _resync is not None:
        _resync.stop()


def _task(namespace: str, name: str) -> None:
    """Reconcile one MLTask with the operator's settings (GPU policy, transfer steps)."""
    reconcile_task(kube(), namespace, name, defaults=SETTINGS.run_defaults,
                   transfer=SETTINGS.transfer)


def _resync_pipeline(namespace: str, name: str) -> None:
    reconcile_pipeline(kube(), namespace, name)


def _reconcile(namespace: str, name: str) -> None:
    try:
        _task(namespace, name)
    except Exception as e:
        metrics.RECONCILE_ERRORS.labels(kind=mltask_api.KIND).inc()
        raise kopf.TemporaryError(f"Reconcile of MLTask {namespace}/{name} failed: {e}",
                                  delay=5) from e


@kopf.on.resume(GROUP, VERSION, mltask_api.PLURAL)
@kopf.on.create(GROUP, VERSION, mltask_api.PLURAL)
@kopf.on.update(GROUP, VERSION, mltask_api.PLURAL, field="spec")
def task_changed(namespace: str, name: str, **_: Any) -> None:
    _reconcile(namespace, name)


@kopf.on.event(ARGO_GROUP, ARGO_VERSION, WORKFLOWS, labels={keys.TASK: kopf.PRESENT})
def workflow_event(namespace: str, labels: dict[str, str], type: str | None,
                   **_: Any) -> None:
    task = labels.get(keys.TASK)
    if not task:
        return
    try:
        _task(namespace, task)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind="Workflow").inc()
        log.exception("Reconcile of MLTask %s/%s after a Workflow %s event failed",
                      namespace, task, type)


def _upstreams(spec: kopf.Spec) -> set[str]:
    inputs = spec.get("input") or {}
    return {src["fromTask"] for src in (inputs.get("dataset"), inputs.get("model"))
            if isinstance(src, dict) and src.get("fromTask")}


@kopf.index(GROUP, VERSION, mltask_api.PLURAL,
            when=lambda spec, status, **_: bool(_upstreams(spec)) and not status.get("attempt"))
def waiting_for(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, str]:
    """Tasks that have not started because they wait for an upstream task's output (fromTask),
    by (namespace, upstream): kept in memory from the watch Kopf already runs."""
    return {(namespace, upstream): name for upstream in _upstreams(spec)}


@kopf.on.event(GROUP, VERSION, mltask_api.PLURAL,
               when=lambda status, **_: status.get("status") == mltask_api.Phase.COMPLETED)
def upstream_completed(namespace: str, name: str, waiting_for: kopf.Index, **_: Any) -> None:
    """A task completed: the tasks waiting for its output start now, not at the next resync."""
    for dependent in waiting_for.get((namespace, name), []):
        try:
            _task(namespace, dependent)
        except Exception:
            metrics.RECONCILE_ERRORS.labels(kind=mltask_api.KIND).inc()
            log.exception("Reconcile of MLTask %s/%s after its upstream MLTask %s completed "
                          "failed", namespace, dependent, name)


def _reconcile_pipeline(namespace: str, name: str) -> None:
    try:
        reconcile_pipeline(kube(), namespace, name)
    except Exception as e:
        metrics.RECONCILE_ERRORS.labels(kind=pipeline_api.KIND).inc()
        raise kopf.TemporaryError(f"Reconcile of Pipeline {namespace}/{name} failed: {e}",
                                  delay=5) from e


@kopf.on.resume(GROUP, VERSION, pipeline_api.PLURAL)
@kopf.on.create(GROUP, VERSION, pipeline_api.PLURAL)
@kopf.on.update(GROUP, VERSION, pipeline_api.PLURAL, field="spec")
def pipeline_changed(namespace: str, name: str, **_: Any) -> None:
    _reconcile_pipeline(namespace, name)


@kopf.on.event(GROUP, VERSION, mltask_api.PLURAL, labels={keys.PIPELINE: kopf.PRESENT})
def pipeline_task_event(namespace: str, labels: dict[str, str], type: str | None,
                        **_: Any) -> None:
    """A child MLTask changed: the pipeline may start the next tasks or change its status."""
    pipeline = labels.get(keys.PIPELINE)
    if not pipeline:
        return
    try:
        reconcile_pipeline(kube(), namespace, pipeline)
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind=mltask_api.KIND).inc()
        log.exception("Reconcile of Pipeline %s/%s after an MLTask %s event failed",
                      namespace, pipeline, type)
