"""Level-based reconcile of one Pipeline: read it and its child MLTasks from the watches'
cache, plan, write what changed.

Called for every change of the Pipeline and every event of its children (the work queue of
`mltask_operator.main`). Safe to run any number of times: children have deterministic names,
creation is idempotent, and status is written with the read resourceVersion.

A task's `when` is evaluated in a child process bounded in memory and time
(`mltask_operator.when_sandbox`): a hostile expression fails its task, never the operator.

Archiving cascades to the children (their spec.archived); while archived the pipeline starts
nothing new, as if suspended. Once its TTL after finishing passed it is deleted, its children
with it (they never follow a TTL of their own).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from mltask_operator import kinds, labels, metrics, when_sandbox
from mltask_operator import mltask_release as rel
from mltask_operator.api.v1alpha1.mltask import TERMINAL_PHASES, Phase
from mltask_operator.api.v1alpha1.pipeline import KIND, Pipeline, PipelineStatus
from mltask_operator.builders.mltask import build_child, output_digests
from mltask_operator.cache import PIPELINE, TASK, Cache
from mltask_operator.clients.kube import Kube, OwnershipError, Rejected
from mltask_operator.handlers import Clock, utcnow, write_status
from mltask_operator.pipeline_planner import PipelinePlan, name_taken, plan_pipeline, rejected
from mltask_operator.pipeline_status import NotCreated
from mltask_operator.settings import CleanupDefaults
from mltask_operator.status_common import Transition, archived_condition, transition

log = logging.getLogger(__name__)


def reconcile_pipeline(kube: Kube, cache: Cache, namespace: str, name: str,
                       clock: Clock = utcnow,
                       cleanup: CleanupDefaults | None = None) -> float | None:
    """Bring one pipeline's children in line with its spec. A write conflict raises Conflict:
    the change that caused it arrives as a watch event and queues the pipeline again. Returns
    the seconds until its TTL ends, or None."""
    cleanup = cleanup or CleanupDefaults()
    body = cache.pipeline(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    pipeline = Pipeline.model_validate(body)
    prev = pipeline.status or PipelineStatus()
    now = clock()
    ttl = pipeline.spec.ttl_seconds_after_finished
    ttl = ttl if ttl is not None else cleanup.ttl_seconds_after_finished
    expire_in = rel.expires_in(prev.status, prev.completion_time, ttl, now)
    if expire_in is not None and expire_in <= 0:
        if kube.delete(kinds.PIPELINE, namespace, name, as_read=body):
            log.info("Deleted %s %s/%s and its tasks: %ss after it %s "
                     "(ttlSecondsAfterFinished)", KIND, namespace, name, ttl, prev.status)
            metrics.TTL_DELETED.labels(kind=KIND).inc()
        return None
    children = _children(cache, pipeline)
    archived = pipeline.spec.archived
    for child in children.values():
        if bool((child.get("spec") or {}).get("archived")) != archived:
            patched = kube.patch_spec(kinds.MLTASK, namespace, child["metadata"]["name"],
                                      {"archived": archived})
            cache.wrote(TASK, child, patched)
            log.info("%s MLTask %s/%s of Pipeline %s", "Archiving" if archived
                     else "Unarchiving", namespace, child["metadata"]["name"], name)
    # Archived, the pipeline is held as a suspended one: it stops and starts nothing new.
    planned = pipeline.model_copy(deep=True)
    planned.spec.suspend = pipeline.spec.suspend or archived
    decision = plan_pipeline(planned, children, now, evaluate=when_sandbox.evaluate)

    for type_, reason, text in decision.notes:
        kube.event(body, type_, reason, text)
        log.info("%s %s/%s: %s", KIND, namespace, name, text)
    patches = ([(c, {"suspend": True}, "Stopping") for c in decision.suspend]
               + [(c, {"suspend": False}, "Continuing") for c in decision.resume]
               + [(c, {"suspend": False, "retryGeneration": g}, "Retrying")
                  for c, g in decision.retry.items()])
    for child_name, spec, verb in patches:
        patched = kube.patch_spec(kinds.MLTASK, namespace, child_name, spec)
        cache.wrote(TASK, cache.task(namespace, child_name), patched)
        log.info("%s MLTask %s/%s of Pipeline %s", verb, namespace, child_name, name)
    decision = _create_children(kube, cache, body, planned, children, decision, now)
    labelled = labels.ARCHIVED in (pipeline.metadata.get("labels") or {})
    status = decision.status
    ended = status.status in TERMINAL_PHASES
    if (archived and ended and not labelled) or (labelled and not archived):
        body = cache.wrote(PIPELINE, body, kube.label(
            kinds.PIPELINE, body, labels.ARCHIVED, "true" if archived else None))
        log.info("%s %s %s/%s", "Archived" if archived else "Unarchived", KIND, namespace,
                 name)
    status.conditions = archived_condition(status.conditions, archived, ended,
                                               pipeline.metadata.get("generation"), now,
                                               "pipeline")
    write_status(kube, cache, kinds.PIPELINE, body, prev, status,
                 _transition(body, prev, status))
    return rel.expires_in(status.status, status.completion_time, ttl, now)


def _children(cache: Cache, pipeline: Pipeline) -> dict[str, dict[str, Any]]:
    """The pipeline's MLTasks by task name; only those it owns (not a deleted namesake's)."""
    uid = pipeline.metadata.get("uid")
    out: dict[str, dict[str, Any]] = {}
    for body in cache.children(pipeline.namespace, pipeline.name):
        meta = body["metadata"]
        owners = meta.get("ownerReferences") or []
        task = (meta.get("labels") or {}).get(labels.PIPELINE_TASK)
        if task and any(o.get("uid") == uid for o in owners):
            out[task] = body
    return out


def _create_children(kube: Kube, cache: Cache, body: dict[str, Any], pipeline: Pipeline,
                     children: dict[str, dict[str, Any]], decision: PipelinePlan,
                     now: datetime.datetime) -> PipelinePlan:
    """Create the MLTasks the plan asks for. One the API server does not create (its name is
    taken, or it is refused) is reported, and the pipeline planned again knowing it: only the
    new plan's status is written, so no entry names an MLTask that does not exist."""
    namespace, name = pipeline.namespace, pipeline.name
    not_created: dict[str, NotCreated] = {}
    while decision.create:
        digests = output_digests(children)
        for task in decision.create:
            child = build_child(pipeline, task, decision.outputs, digests)
            child_name = child["metadata"]["name"]
            try:
                made, created = kube.create(kinds.MLTASK, child)
                children[task.name] = cache.wrote(TASK, None, made) if created else made
            except Rejected as e:
                failure = rejected(str(e))
            except OwnershipError as e:
                failure = name_taken(pipeline, e.existing)
            else:
                if created:
                    log.info("Created MLTask %s/%s for Pipeline %s task %s", namespace,
                             child_name, name, task.name)
                    kube.event(body, "Normal", "TaskCreated", f"Created MLTask {child_name} "
                               f"for task {task.name}")
                    metrics.PIPELINE_TASKS_CREATED.inc()
                continue
            not_created[task.name] = failure
            text = f"Task {task.name}: {failure.message}"
            kube.event(body, "Normal" if failure.transient else "Warning", failure.reason, text)
            log.warning("%s %s/%s: %s", KIND, namespace, name, text)
            break
        else:
            return decision
        decision = plan_pipeline(pipeline, children, now, not_created,
                                 evaluate=when_sandbox.evaluate)
    return decision


def _transition(body: dict[str, Any], prev: PipelineStatus,
                new: PipelineStatus) -> Transition | None:
    """The Event of a pipeline's status write: one for every change of status."""
    if new.status == prev.status and body.get("status"):
        return None
    return transition(new.status, f"{prev.status} -> {new.status}: {new.message or ''}",
                      warning=new.status == Phase.FAILED)
