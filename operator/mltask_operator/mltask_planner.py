"""Pure: decide the next action for a task from its spec and status (stop, continue, retry...).

Actions are declarative: `spec.suspend` stops (true) and continues (back to false) a task,
and increasing `spec.retryGeneration` retries it. They work the same from Git or kubectl patch.
An archived task (`spec.archived`) is held as a suspended one is: stopped if active, never
retried or continued until it is unarchived. A task with caching on (`spec.cache`) that would
start reuses a finished task's outputs instead when `reuse_source` finds one; it then has
completed without an attempt, and only a retry makes it run.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mltask_operator.api.v1alpha1.mltask import (
    ACTIVE_PHASES,
    TERMINAL_PHASES,
    MLTask,
    MLTaskStatus,
    Phase,
    StepName,
)
from mltask_operator.mltask_cache_key import source_key
from mltask_operator.mltask_state_machine import Cause
from mltask_operator.mltask_status import first_unfinished
from mltask_operator.status_common import parse_duration, parse_time


class Action(StrEnum):
    START = "start"                # first attempt
    RETRY = "retry"                # new attempt from the first step
    CONTINUE = "continue"          # new attempt from the step that did not finish
    ENSURE = "ensure"              # make sure the current attempt's Workflow exists
    STOP = "stop"                  # ask Argo to shut the Workflow down
    STOP_WITHOUT_WORKFLOW = "stop-without-workflow"  # stop with no Workflow to shut down
    IGNORE_RETRY = "ignore-retry"  # a retry was requested while the task is active
    HOLD_RETRY = "hold-retry"      # a retry was requested while the task is held stopped
    OBSERVE = "observe"            # nothing to change; mirror the Workflow


@dataclass(frozen=True)
class Plan:
    action: Action
    attempt: int = 0
    start_at: StepName | None = None

    @property
    def cause(self) -> Cause:
        return Cause.CONTINUE if self.action == Action.CONTINUE else Cause.RETRY


def retry_requested(task: MLTask, status: MLTaskStatus) -> bool:
    baseline = status.observed_retry_generation
    return baseline is not None and task.spec.retry_generation > baseline


def plan(task: MLTask, status: MLTaskStatus, workflow_exists: bool) -> Plan:
    spec = task.spec
    held = spec.suspend or spec.archived
    if status.attempt == 0 and status.status == Phase.COMPLETED:
        # Completed without an attempt: its outputs were reused (a cache hit). A retry runs it.
        if retry_requested(task, status):
            return Plan(Action.HOLD_RETRY) if held else Plan(Action.RETRY, attempt=1,
                                                             start_at=StepName.DOWNLOAD)
        return Plan(Action.OBSERVE)
    if status.attempt == 0:
        if held:
            if status.status == Phase.STOPPED:
                return Plan(Action.OBSERVE)
            return Plan(Action.STOP_WITHOUT_WORKFLOW)
        if status.status == Phase.STOPPED:  # created suspended, now continued
            return Plan(Action.CONTINUE, attempt=1, start_at=StepName.DOWNLOAD)
        return Plan(Action.START, attempt=1, start_at=StepName.DOWNLOAD)
    if retry_requested(task, status):
        if status.status in TERMINAL_PHASES and not held:
            return Plan(Action.RETRY, attempt=status.attempt + 1, start_at=StepName.DOWNLOAD)
        if status.status in ACTIVE_PHASES:
            return Plan(Action.IGNORE_RETRY)
        if status.status in TERMINAL_PHASES and held:
            return Plan(Action.HOLD_RETRY)  # kept as a request: runs once no longer held
    if status.status == Phase.STOPPING and not workflow_exists:
        return Plan(Action.STOP_WITHOUT_WORKFLOW)  # nothing is left for Argo to shut down
    if held:
        if status.status in (Phase.INIT, Phase.RUNNING, Phase.RETRY):
            return Plan(Action.STOP if workflow_exists else Action.STOP_WITHOUT_WORKFLOW)
        return Plan(Action.OBSERVE)
    if status.status == Phase.STOPPED:
        # The steps it kept live on the working volume; once that was released (archived),
        # the task continues from the first step.
        released = bool(status.released and status.released.work_volume)
        start = StepName.DOWNLOAD if released else (
            first_unfinished(status.steps or []) or StepName.UPLOAD)
        return Plan(Action.CONTINUE, attempt=status.attempt + 1, start_at=start)
    if status.status in ACTIVE_PHASES and not workflow_exists:
        return Plan(Action.ENSURE, attempt=status.attempt,
                    start_at=first_unfinished(status.steps or []) or StepName.DOWNLOAD)
    return Plan(Action.OBSERVE)


@dataclass(frozen=True)
class Source:
    """A completed task whose outputs another task may reuse."""

    namespace: str
    name: str
    completion_time: datetime.datetime
    outputs: dict[str, Any]
    metrics: dict[str, float] | None


def caching(task: MLTask) -> bool:
    return bool(task.spec.cache and task.spec.cache.enabled)


def reuse_source(task: MLTask, key: str, candidates: Iterable[Mapping[str, Any]],
                 now: datetime.datetime) -> Source | None:
    """The task whose outputs `task` reuses instead of starting, among the `candidates` the
    cache indexed under `key` (bodies as served), or None (a miss): one of the same namespace,
    not the task itself, still eligible (mltask_cache_key.source_key: completed by running,
    an output URI, not archived) under the same key, and completed at most spec.cache.maxAge
    ago; the latest such."""
    if not caching(task):
        return None
    assert task.spec.cache is not None
    max_age = parse_duration(task.spec.cache.max_age)
    best: Source | None = None
    for body in candidates:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        done = parse_time(status.get("completionTime"))
        if (meta.get("namespace") != task.namespace or meta.get("name") == task.name
                or source_key(body) != key or done is None or max_age is None
                or (now - done).total_seconds() > max_age or meta.get("deletionTimestamp")):
            continue
        if best is None or done > best.completion_time:
            best = Source(str(meta["namespace"]), str(meta["name"]), done,
                          dict(status["outputs"]), status.get("metrics"))
    return best
