"""Level-based reconcile of one Pipeline: read it and its child MLTasks, plan, write.

Called for every change of the Pipeline and every event of its children (Kopf handlers in
`mltask_operator.main`). Safe to run any number of times: children have deterministic names,
creation is idempotent, and status is written with the read resourceVersion.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from mltask_operator import labels, metrics
from mltask_operator.api.v1alpha1.mltask import Phase
from mltask_operator.api.v1alpha1.pipeline import KIND, Pipeline, PipelineStatus
from mltask_operator.builders.mltask import build_child
from mltask_operator.clients.kube import Kube, Rejected
from mltask_operator.handlers import Clock, reconcile_exclusively, utcnow
from mltask_operator.pipeline_planner import plan_pipeline
from mltask_operator.status import conditions_for

log = logging.getLogger(__name__)


def reconcile_pipeline(kube: Kube, namespace: str, name: str, clock: Clock = utcnow) -> None:
    """Bring one pipeline's children in line with its spec; retry on write conflicts."""
    reconcile_exclusively(KIND, namespace, name,
                          lambda: _reconcile_once(kube, namespace, name, clock))


def _children(kube: Kube, pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """The pipeline's MLTasks by task name; only those it owns (not a deleted namesake's)."""
    uid = pipeline.metadata.get("uid")
    out: dict[str, dict[str, Any]] = {}
    for body in kube.list_pipeline_tasks(pipeline.namespace, pipeline.name):
        meta = body["metadata"]
        owners = meta.get("ownerReferences") or []
        task = (meta.get("labels") or {}).get(labels.PIPELINE_TASK)
        if task and any(o.get("uid") == uid for o in owners):
            out[task] = body
    return out


def _reconcile_once(kube: Kube, namespace: str, name: str, clock: Clock) -> None:
    body = kube.get_pipeline(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return
    pipeline = Pipeline.model_validate(body)
    prev = pipeline.status or PipelineStatus()
    now = clock()
    decision = plan_pipeline(pipeline, _children(kube, pipeline), now)

    for type_, reason, text in decision.notes:
        kube.event(body, type_, reason, text)
        log.info("Pipeline %s/%s: %s", namespace, name, text)
    for child in decision.suspend:
        kube.patch_task_spec(namespace, child, {"suspend": True})
        log.info("Stopping MLTask %s/%s of Pipeline", namespace, child)
    for child in decision.resume:
        kube.patch_task_spec(namespace, child, {"suspend": False})
        log.info("Continuing MLTask %s/%s of Pipeline", namespace, child)
    for child, generation in decision.retry.items():
        kube.patch_task_spec(namespace, child, {"suspend": False, "retryGeneration": generation})
        log.info("Retrying MLTask %s/%s of Pipeline", namespace, child)
    status = decision.status
    for task in decision.create:
        child = build_child(pipeline, task, decision.outputs)
        try:
            _, created = kube.create_task(child)
        except Rejected as e:
            # Not expected once the CRDs' rules passed; report it instead of retrying blindly.
            status = _rejected(pipeline, status, task.name, str(e), now)
            break
        if created:
            child_name = child["metadata"]["name"]
            log.info("Created MLTask %s/%s for Pipeline task %s", namespace, child_name,
                     task.name)
            kube.event(body, "Normal", "TaskCreated", f"Created MLTask {child_name} for task "
                       f"{task.name}")
            metrics.PIPELINE_TASKS_CREATED.inc()
    _write(kube, body, prev, status)


def _rejected(pipeline: Pipeline, status: PipelineStatus, task: str, why: str,
              now: datetime.datetime) -> PipelineStatus:
    new = status.model_copy(deep=True)
    new.message = f"Task {task} could not be created: {why}"
    new.conditions = conditions_for(new.status, new.message, status.conditions,
                                    pipeline.metadata.get("generation"), now,
                                    reason="TaskRejected")
    return new


_REASONS = {Phase.FAILED: "Failed", Phase.COMPLETED: "Completed", Phase.STOPPED: "Stopped",
            Phase.RETRY: "Retrying", Phase.STOPPING: "Stopping", Phase.RUNNING: "Running"}


def _write(kube: Kube, body: dict[str, Any], prev: PipelineStatus,
           new: PipelineStatus) -> None:
    """Replace the status if it changed, and record an Event for every status transition."""
    if new == prev and body.get("status"):
        return
    out = dict(body)
    out["status"] = new.to_k8s()
    kube.replace_pipeline_status(out)
    meta = body["metadata"]
    if new.status != prev.status or not body.get("status"):
        warn = new.status == Phase.FAILED
        text = f"{prev.status} -> {new.status}: {new.message or ''}"
        kube.event(body, "Warning" if warn else "Normal",
                   _REASONS.get(new.status, "StatusChanged"), text)
        log.info("%s %s/%s: %s", KIND, meta["namespace"], meta["name"], text)
        metrics.PIPELINE_TRANSITIONS.labels(status=str(new.status)).inc()
