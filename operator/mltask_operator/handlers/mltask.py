"""Level-based reconcile of one MLTask: read the task and its Workflow from the watches' cache,
decide, write what changed.

Called for every change of the task and every event of its Workflows (the work queue of
`mltask_operator.main`). Safe to run any number of times, or after a crash: children have
deterministic names, and status is written with the read resourceVersion.

Starting an attempt takes four requests: create the Workflow (first: one the cluster refuses
leaves nothing behind), create the working volume, write the status, record the Event. What the
task no longer needs (`mltask_operator.mltask_release`) is deleted before the status that records it
is written; a finished task's TTL is waited for on the work queue (the returned delay).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from mltask_operator import kinds, metrics, task_policy
from mltask_operator import labels as keys
from mltask_operator import mltask_release as rel
from mltask_operator.api.v1alpha1.common import MAX_MESSAGE_LENGTH
from mltask_operator.api.v1alpha1.mltask import (
    TERMINAL_PHASES,
    ExecuteStep,
    MLTask,
    MLTaskStatus,
    OutputStatus,
    Phase,
    StepName,
    StepStatus,
)
from mltask_operator.builders import workflow as wfb
from mltask_operator.cache import TASK, WORKFLOW, Cache, upstreams
from mltask_operator.clients.kube import Kube, OwnershipError, Rejected
from mltask_operator.handlers import Clock, utcnow, write_status
from mltask_operator.mltask_cache_key import CACHE_HIT, CACHE_MISS, CACHED, InputRef, cache_key
from mltask_operator.mltask_planner import Action, Plan, Source, caching, plan, reuse_source
from mltask_operator.mltask_state_machine import begin_attempt
from mltask_operator.mltask_status import (
    EXIT_CODE,
    FINISHED_NODE_PHASES,
    WorkflowObservation,
    compute_status,
    observe_workflow,
)
from mltask_operator.settings import (
    CleanupDefaults,
    RunStepDefaults,
    TaskDefaults,
    TaskPolicy,
    TransferDefaults,
)
from mltask_operator.status_common import (
    Transition,
    bounded,
    conditions_for,
    format_duration,
    parse_time,
    set_condition,
    transition,
)

log = logging.getLogger(__name__)


class InputsNotReady(Exception):
    """An upstream task (fromTask) has not produced its output yet."""


def resolve_inputs(cache: Cache, task: MLTask) -> wfb.ResolvedInputs:
    def from_task(name: str, kind: str) -> tuple[str, str | None]:
        upstream = cache.task(task.namespace, name)
        if upstream is None:
            raise InputsNotReady(f"waiting for MLTask {name} (not found) to produce its {kind}")
        st = upstream.get("status") or {}
        out = st.get("outputs") or {}
        if st.get("status") != Phase.COMPLETED or not out.get("uri"):
            raise InputsNotReady(f"waiting for MLTask {name} ({st.get('status', 'init')}) "
                                 f"to produce its {kind}")
        if out.get("kind") != kind:
            raise InputsNotReady(f"MLTask {name} produces a {out.get('kind')}, not a {kind}")
        return str(out["uri"]), out.get("sha256")

    refs = task.spec.input.upstreams()
    inputs = task.spec.input
    dataset = (from_task(refs["dataset"], "dataset") if "dataset" in refs
               else (inputs.dataset.uri, inputs.dataset.sha256))
    model = (from_task(refs["model"], "model") if "model" in refs
             else (inputs.model.uri, inputs.model.sha256) if inputs.model else (None, None))
    return wfb.ResolvedInputs(dataset_uri=str(dataset[0]), model_uri=model[0],
                              dataset_sha256=dataset[1], model_sha256=model[1])


def _inputs_ready_at(cache: Cache, body: dict[str, Any]) -> datetime.datetime | None:
    """When the task could first start: its creation (whole seconds), or the completion of
    the last upstream task it reads (fromTask) if later."""
    meta = body["metadata"]
    times = [parse_time(meta.get("creationTimestamp"))]
    for upstream in upstreams(body.get("spec") or {}):
        up = cache.task(meta["namespace"], upstream) or {}
        times.append(parse_time((up.get("status") or {}).get("completionTime")))
    known = [t for t in times if t is not None]
    return max(known) if known else None


def reconcile_task(kube: Kube, cache: Cache, namespace: str, name: str, clock: Clock = utcnow,
                   defaults: RunStepDefaults | None = None,
                   transfer: TransferDefaults | None = None,
                   cleanup: CleanupDefaults | None = None,
                   policy: TaskPolicy | None = None,
                   task_defaults: TaskDefaults | None = None) -> float | None:
    """Bring one task's world in line with its spec. A write conflict raises Conflict: the
    change that caused it arrives as a watch event and queues the task again. Returns the
    seconds after which to reconcile it again (its TTL's end), or None.

    `defaults`: the cluster's policy for GPU run steps; `transfer`: the project's download and
    upload steps for tasks that leave them out; `cleanup`: the default pod GC and TTL;
    `policy`: what a task may ask for its pods; `task_defaults`: pod settings of tasks that
    set none (operator settings)."""
    cleanup = cleanup or CleanupDefaults()
    body = cache.task(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None
    task = MLTask.model_validate(body)
    prev = task.status or MLTaskStatus()
    now = clock()
    new, why = _decide(kube, cache, body, task, prev, now, defaults, transfer, cleanup,
                       policy or TaskPolicy(), task_defaults)
    return _finish(kube, cache, body, task, prev, new, why, now, cleanup)


def _decide(kube: Kube, cache: Cache, body: dict[str, Any], task: MLTask, prev: MLTaskStatus,
            now: datetime.datetime, defaults: RunStepDefaults | None,
            transfer: TransferDefaults | None, cleanup: CleanupDefaults,
            policy: TaskPolicy,
            task_defaults: TaskDefaults | None = None) -> tuple[MLTaskStatus, str | None]:
    """Act on the plan (create, stop); returns the status to write and, for a new attempt,
    what its Event says."""
    namespace = task.namespace
    status = prev.model_copy(deep=True)
    if status.observed_retry_generation is None:
        # The retryGeneration a task is created with is its baseline, not a request.
        status.observed_retry_generation = task.spec.retry_generation

    if status.attempt == 0 and (task.spec.suspend or task.spec.archived):
        made = cache.workflow(namespace, wfb.workflow_name(task.name, 1))
        if made is not None and _owned(made, task):
            # Attempt 1 was begun (its Workflow made) and its status write lost: the operator
            # stopped between the two (a killed leader), then the task was stopped. Record the
            # attempt as that reconcile would have, so that the stop shuts its Workflow down
            # instead of leaving it running. (Not stopped, a start finds the Workflow (409),
            # adopts it and makes its volume.)
            log.info("Adopted Workflow %s/%s of MLTask (its status write was lost)", namespace,
                     made["metadata"]["name"])
            status = _begin_attempt(task, status, Plan(Action.START, attempt=1,
                                                       start_at=StepName.DOWNLOAD), now)
    wf_name = wfb.workflow_name(task.name, status.attempt) if status.attempt else None
    wf = cache.workflow(namespace, wf_name) if wf_name else None
    decision = plan(task, status, workflow_exists=wf is not None)

    if decision.action in (Action.START, Action.RETRY, Action.CONTINUE, Action.ENSURE):
        try:
            inputs = resolve_inputs(cache, task)
        except InputsNotReady as waiting:
            return _waiting(task, status, str(waiting), now), None
        fresh = decision.action != Action.ENSURE and decision.start_at == StepName.DOWNLOAD
        key = _cache_key(task, inputs) if fresh and caching(task) else None
        # The first attempt (a start, or the continue of a task created suspended) may reuse
        # a finished task's outputs; a retry or a later continue always runs.
        first = decision.action in (Action.START, Action.CONTINUE) and status.attempt == 0
        if first and key is not None:
            # A source whose output another task wrote over since is no source (a miss).
            fresh_sources = [b for b in cache.sources(namespace, key) if not cache.overwritten(b)]
            source = reuse_source(task, key, fresh_sources, now)
            metrics.CACHE_LOOKUPS.labels(result="hit" if source else "miss").inc()
            if source is not None:
                log.info("Reused for MLTask %s/%s the outputs of MLTask %s (cache key %s)",
                         namespace, task.name, source.name, key[:12])
                hit = _reused(task, status, source, key, now)
                return hit, hit.message
        if decision.action != Action.ENSURE:
            # Written once, with what follows: a crash before the write leaves a Workflow of
            # the deterministic name, which the next reconcile finds (409) and adopts.
            status = _begin_attempt(task, status, decision, now)
            if fresh:
                status = _cache_miss(task, status, key, first, now)
        assert decision.start_at is not None
        breaches = task_policy.spec_violations(body.get("spec") or {}, policy)
        if breaches:
            # The admission policy refuses such a spec at apply; this holds where it is not
            # installed (or for a task created before it was): the attempt fails, nothing made.
            metrics.WORKFLOWS_REFUSED.labels(reason=task_policy.REASON).inc()
            log.info("Refused MLTask %s/%s: %s", namespace, task.name,
                     "; ".join(str(v) for v in breaches))
            return _failed(task, status, task_policy.message(breaches), task_policy.REASON,
                           now), None
        wf_body = wfb.build_workflow(task, attempt=status.attempt, start_at=decision.start_at,
                                     inputs=inputs, defaults=defaults, transfer=transfer,
                                     cleanup=cleanup, task_defaults=task_defaults)
        wf_name = wf_body["metadata"]["name"]
        try:
            wf, created = _start(kube, cache, task, wf_body)
        except (Rejected, OwnershipError) as refused:
            # Retrying cannot help: the attempt fails, saying why; a retry starts a new one.
            reason = ("NameTaken" if isinstance(refused, OwnershipError) else
                      "VolumeRejected" if refused.kind == "PersistentVolumeClaim"
                      else "WorkflowRejected")
            metrics.WORKFLOWS_REFUSED.labels(reason=reason).inc()
            return _failed(task, status, str(refused), reason, now), None
        status = rel.new_attempt_volume(status)
        if created:
            log.info("Created Workflow %s/%s for MLTask attempt %d from %s", namespace,
                     wf_name, status.attempt, decision.start_at)
            metrics.WORKFLOWS_CREATED.labels(action=str(decision.action)).inc()
            ready = _inputs_ready_at(cache, body)
            if decision.action == Action.START and ready is not None:
                metrics.WORKFLOW_WAIT.labels(str(task.spec.type)).observe(
                    max((datetime.datetime.now(datetime.UTC) - ready).total_seconds(), 0))
    elif decision.action == Action.STOP:
        assert wf_name is not None and wf is not None
        if not (wf.get("spec") or {}).get("shutdown"):
            stopped = kube.stop_workflow(namespace, wf_name)
            log.info("Stopped Workflow %s/%s of MLTask", namespace, wf_name)
            wf = cache.wrote(WORKFLOW, wf, stopped) if stopped else None
    elif decision.action == Action.STOP_WITHOUT_WORKFLOW:
        status = _settle(task, status, Phase.STOPPED,
                         "Stopped" if status.steps else "Stopped before any step ran", now)
        status.steps = _steps_ended(status, now)
        _ended(status, now)
        return status, None
    elif decision.action == Action.HOLD_RETRY:
        held = (f"Retry {task.spec.retry_generation} waits: the task is archived; unarchive it "
                "to run it" if task.spec.archived else
                f"Retry {task.spec.retry_generation} waits: the task is stopped; set "
                "spec.suspend to false to run it")
        if status.message != held:
            kube.event(body, "Warning", "RetryHeld", held)
        status.message = held
        status.observed_generation = task.metadata.get("generation")
        return status, None
    elif decision.action == Action.IGNORE_RETRY:
        kube.event(body, "Warning", "RetryIgnored",
                   f"retryGeneration {task.spec.retry_generation} ignored: the task is "
                   f"{status.status}; retry applies to failed, stopped or completed tasks")
        status.observed_retry_generation = task.spec.retry_generation

    observed = compute_status(task.model_copy(update={"status": status}), wf, now)
    # A new attempt's Event says what began it ("Retry: attempt 2 starts from download"); the
    # status says where it is ("Workflow created, waiting for pods").
    begun = decision.action in (Action.START, Action.RETRY, Action.CONTINUE)
    return observed, status.message if begun else None


def _finish(kube: Kube, cache: Cache, body: dict[str, Any], task: MLTask, prev: MLTaskStatus,
            new: MLTaskStatus, why: str | None, now: datetime.datetime,
            cleanup: CleanupDefaults) -> float | None:
    """Release what the task no longer needs, write its status, and delete it once its TTL
    has passed; returns the seconds until its TTL ends."""
    namespace = task.namespace
    wf = (cache.workflow(namespace, wfb.workflow_name(task.name, new.attempt))
          if new.attempt else None)
    existing = [w for w in (wfb.workflow_name(task.name, a) for a in range(1, new.attempt + 1))
                if cache.head(WORKFLOW, namespace, w) is not None]
    labelled = keys.ARCHIVED in (task.metadata.get("labels") or {})
    obs = observe_workflow(wf) if wf else None
    release = rel.plan_release(task, new, prev, obs, existing, labelled, cleanup, now)
    if release.expire_in is not None and release.expire_in <= 0:
        ttl = rel.ttl_seconds(task, cleanup)
        if kube.delete(kinds.MLTASK, namespace, task.name, as_read=body):
            log.info("Deleted MLTask %s/%s: %ss after it %s (ttlSecondsAfterFinished)",
                     namespace, task.name, ttl, new.status)
            metrics.TTL_DELETED.labels(kind="MLTask").inc()
        return None
    _release(kube, cache, task, release)
    if release.archived_label is not None:
        body = cache.wrote(TASK, body, kube.label(kinds.MLTASK, body, keys.ARCHIVED, "true"
                                                  if release.archived_label else None))
        log.info("%s MLTask %s/%s", "Archived" if release.archived_label else "Unarchived",
                 namespace, task.name)
    new = rel.record_release(task, new, release, now)
    if write_status(kube, cache, kinds.MLTASK, body, prev, new,
                    _transition(body, prev, new, why)) is not body:
        _observe(task, prev, new, obs)
    return release.expire_in


def _observe(task: MLTask, prev: MLTaskStatus, new: MLTaskStatus,
             obs: WorkflowObservation | None) -> None:
    """Metrics of what a status write records: a task that ended, steps that finished,
    automatic retries and their causes."""
    type_ = str(task.spec.type)
    ended = new.status in TERMINAL_PHASES and (prev.status not in TERMINAL_PHASES
                                               or prev.attempt != new.attempt)
    if ended and new.start_time and new.completion_time:
        metrics.TASK_DURATION.labels(type_, str(new.status)).observe(
            (new.completion_time - new.start_time).total_seconds())
    before = {s.name: s for s in prev.steps or [] if s.attempt == new.attempt}
    for step in new.steps or []:
        if step.attempt != new.attempt:
            continue
        old = before.get(step.name)
        if step.phase in FINISHED_NODE_PHASES and (old is None
                                                   or old.phase not in FINISHED_NODE_PHASES) \
                and step.started_at and step.finished_at:
            metrics.STEP_DURATION.labels(type_, str(step.name)).observe(
                (step.finished_at - step.started_at).total_seconds())
        seen = old.retries if old else 0
        if step.retries > seen:
            causes = obs.steps[step.name].retry_causes if obs and step.name in obs.steps else []
            for i in range(seen, step.retries):
                cause = causes[i] if i < len(causes) else EXIT_CODE
                metrics.STEP_RETRIES.labels(type_, str(step.name), cause).inc()


def _release(kube: Kube, cache: Cache, task: MLTask, release: rel.Release) -> None:
    namespace = task.namespace
    for name in release.workflows:
        kube.delete(kinds.WORKFLOW, namespace, name)
        cache.forget(WORKFLOW, namespace, name)
        log.info("Deleted Workflow %s/%s of MLTask %s (and its pods)", namespace, name,
                 task.name)
    for pod in release.pods:
        kube.delete_pod(namespace, pod)
        log.info("Deleted pod %s/%s of MLTask %s: a superseded automatic retry", namespace,
                 pod, task.name)
    if release.work_volume:
        kube.delete_pvc(namespace, release.work_volume)
        log.info("Released PersistentVolumeClaim %s/%s of MLTask %s", namespace,
                 release.work_volume, task.name)


def _start(kube: Kube, cache: Cache, task: MLTask,
           wf_body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create the attempt's Workflow, then the working volume it mounts (its pods wait for
    it). The Workflow goes first so that one the cluster refuses (Argo's schema, an admission
    policy) leaves nothing behind; a volume refused (a quota, a policy) takes the Workflow
    just created with it. Returns the Workflow and whether this call created it."""
    wf, created = kube.create(kinds.WORKFLOW, wf_body)
    wf = cache.wrote(WORKFLOW, None, wf) if created else wf
    try:
        kube.ensure_pvc(wfb.build_work_pvc(task))
    except (Rejected, OwnershipError):
        if created:
            kube.delete(kinds.WORKFLOW, task.namespace, wf_body["metadata"]["name"])
            cache.forget(WORKFLOW, task.namespace, wf_body["metadata"]["name"])
        raise
    return wf, created


def _owned(obj: dict[str, Any], task: MLTask) -> bool:
    """Whether `obj` is this task's (owned by its uid, not a deleted namesake's)."""
    uid = task.metadata.get("uid")
    return bool(uid) and any(o.get("uid") == uid
                             for o in obj["metadata"].get("ownerReferences") or [])


def _begin_attempt(task: MLTask, status: MLTaskStatus, decision: Plan,
                   now: datetime.datetime) -> MLTaskStatus:
    if decision.action == Action.START:
        phase = Phase.INIT
    else:
        phase = begin_attempt(status.status, decision.cause)
    new = status.model_copy(deep=True)
    new.attempt = decision.attempt
    new.workflow_name = wfb.workflow_name(task.name, decision.attempt)
    new.status = phase
    new.completion_time = None
    new.start_time = status.start_time or now
    new.observed_retry_generation = task.spec.retry_generation
    released = decision.action == Action.CONTINUE and decision.start_at == StepName.DOWNLOAD \
        and bool(status.released and status.released.work_volume)
    if decision.action in (Action.START, Action.RETRY) or released:
        new.steps = None
        new.outputs = None
        new.metrics = None
        new.progress = None
    kept = ", ".join(s.name for s in new.steps or [] if s.name != decision.start_at)
    new.message = {
        Action.START: "Preparing the working volume and Workflow",
        Action.RETRY: f"Retry: attempt {decision.attempt} starts from download",
        Action.CONTINUE: f"Continue: attempt {decision.attempt} resumes at {decision.start_at}"
        + (f" (kept {kept})" if kept else "")
        + (" (its working volume was released: from the first step)" if released else ""),
    }[decision.action]
    new.conditions = conditions_for(phase, new.message, status.conditions,
                                    task.metadata.get("generation"), now)
    return new


def _cache_key(task: MLTask, inputs: wfb.ResolvedInputs) -> str:
    resolved = {"dataset": InputRef(inputs.dataset_uri, inputs.dataset_sha256)}
    if inputs.model_uri is not None:
        resolved["model"] = InputRef(inputs.model_uri, inputs.model_sha256)
    return cache_key(task.spec, resolved)


def _reused(task: MLTask, status: MLTaskStatus, source: Source, key: str,
            now: datetime.datetime) -> MLTaskStatus:
    """A cache hit: completed without an attempt (no Workflow, no volume, no pods), with the
    source's outputs and metrics, and the Cached condition saying where they came from."""
    done = source.completion_time.isoformat().replace("+00:00", "Z")
    message = (f"Outputs reused from MLTask {source.namespace}/{source.name} completed at "
               f"{done} (cache hit)")
    new = _settle(task, status, Phase.COMPLETED, message, now)
    new.execute_step = ExecuteStep.DONE
    new.outputs = OutputStatus.model_validate(source.outputs)
    new.metrics = dict(source.metrics) if source.metrics else None
    new.cache_key = key
    new.conditions = set_condition(new.conditions or [], CACHED, "True", CACHE_HIT, message,
                                   task.metadata.get("generation"), now)
    _ended(new, now)
    return new


def _cache_miss(task: MLTask, status: MLTaskStatus, key: str | None, first: bool,
                now: datetime.datetime) -> MLTaskStatus:
    """A new attempt from the first step: it records its cache key (None with caching off),
    and the Cached condition, once there is one, says that it runs."""
    had = any(c.type == CACHED for c in status.conditions or [])
    if key is None and not had and status.cache_key is None:
        return status
    new = status.model_copy(update={"cache_key": key})
    if key is not None or had:
        message = ("No completed task of this namespace with the same cache key within "
                   "spec.cache.maxAge: the task runs" if first and key is not None else
                   f"Attempt {status.attempt} runs: a retry or continue never reuses outputs")
        new.conditions = set_condition(new.conditions or [], CACHED, "False",
                                       CACHE_MISS if first else "Rerun", message,
                                       task.metadata.get("generation"), now)
    return new


def _steps_ended(status: MLTaskStatus, now: datetime.datetime) -> list[StepStatus] | None:
    """The current attempt's unfinished steps end Failed when its Workflow is gone (what Argo
    writes for a shut-down node), so status never shows a pod running that nothing runs."""
    if not status.steps:
        return status.steps
    return [s.model_copy(update={"phase": "Failed", "finished_at": now,
                                 "message": "Workflow gone before the step finished"})
            if s.attempt == status.attempt and s.phase not in FINISHED_NODE_PHASES else s
            for s in status.steps]


def _settle(task: MLTask, status: MLTaskStatus, phase: Phase, message: str,
            now: datetime.datetime, reason: str | None = None) -> MLTaskStatus:
    """A copy of `status` in `phase` with `message`, its conditions and observedGeneration
    brought up to date: what every write without a Workflow to observe needs."""
    generation = task.metadata.get("generation")
    new = status.model_copy(deep=True)
    new.status = phase
    new.message = message = bounded(message, MAX_MESSAGE_LENGTH)
    new.observed_generation = generation
    new.conditions = conditions_for(phase, message, status.conditions, generation, now,
                                    reason=reason)
    return new


def _failed(task: MLTask, status: MLTaskStatus, message: str, reason: str,
            now: datetime.datetime) -> MLTaskStatus:
    """The attempt could not start: its Workflow (or working volume) was refused."""
    new = _settle(task, status, Phase.FAILED, message, now, reason=reason)
    _ended(new, now)
    return new


def _ended(status: MLTaskStatus, now: datetime.datetime) -> None:
    """Stamp a status that just ended with no Workflow to observe: its completion time and
    duration, as compute_status writes them."""
    status.completion_time = now
    status.duration = format_duration((now - (status.start_time or now)).total_seconds())


def _waiting(task: MLTask, status: MLTaskStatus, message: str,
             now: datetime.datetime) -> MLTaskStatus:
    return _settle(task, status, status.status, message[0].upper() + message[1:], now,
                   reason="WaitingForInputs")


def _transition(body: dict[str, Any], prev: MLTaskStatus, new: MLTaskStatus,
                why: str | None) -> Transition | None:
    """The Event of a task's status write: one for every change of status, step or attempt
    (its message: `why`, else the new status message); a retry's start is a Warning."""
    if (new.status, new.execute_step, new.attempt) == (prev.status, prev.execute_step,
                                                       prev.attempt) and body.get("status"):
        return None
    before, after = f"{prev.status}/{prev.execute_step}", f"{new.status}/{new.execute_step}"
    message = (f"{before} -> {after}" if before != after else after) + (
        f" (attempt {new.attempt}): {why or new.message or ''}")
    warning = new.status == Phase.FAILED or (new.status == Phase.RETRY
                                             and prev.status != Phase.RETRY)
    if new.attempt == 0 and new.status == Phase.COMPLETED:   # a cache hit
        return Transition(False, CACHE_HIT, message)
    return transition(new.status, message, warning=warning)


__all__ = ["StepName", "reconcile_task", "resolve_inputs"]
