"""Pure: a Pipeline's status from its tasks: what it knows of each child MLTask (`Child`), the
overall phase, each task's entry, progress, the message and the conditions."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from mltask_operator.api.v1alpha1.common import MAX_MESSAGE_LENGTH
from mltask_operator.api.v1alpha1.mltask import (
    TERMINAL_PHASES,
    ExecuteStep,
    Phase,
)
from mltask_operator.api.v1alpha1.pipeline import (
    ACTIVE_STATES,
    MAX_TASK_MESSAGE_LENGTH,
    PipelineStatus,
    PipelineTask,
    PipelineTaskStatus,
    TaskState,
)
from mltask_operator.builders.mltask import child_name
from mltask_operator.status_common import bounded, conditions_for, format_duration, parse_time

S = TaskState


@dataclass(frozen=True)
class Child:
    """What the pipeline needs to know of one child MLTask."""

    task: str
    name: str
    raw: Phase                # the MLTask's own status.status
    state: TaskState          # raw, corrected for requests the MLTask has not acted on yet
    suspend: bool
    retry_generation: int
    execute_step: ExecuteStep | None = None
    attempt: int | None = None
    message: str | None = None
    output_uri: str | None = None
    start_time: datetime.datetime | None = None
    completion_time: datetime.datetime | None = None


def child_view(task: str, body: dict[str, Any]) -> Child:
    spec = body.get("spec") or {}
    st = body.get("status") or {}
    raw = Phase(st.get("status") or Phase.INIT)
    suspend = bool(spec.get("suspend"))
    retry_gen = int(spec.get("retryGeneration") or 0)
    seen_retry = st.get("observedRetryGeneration")
    state = TaskState(raw)
    if seen_retry is not None and retry_gen > seen_retry and raw in TERMINAL_PHASES \
            and not suspend:
        state = S.RETRY                      # retry requested, not yet started
    elif raw == Phase.STOPPED and not suspend:
        state = S.RUNNING                    # continue requested, not yet started
    elif suspend and raw in (Phase.INIT, Phase.RUNNING, Phase.RETRY):
        state = S.STOPPING                   # stop requested, not yet reached
    step = st.get("executeStep")
    return Child(
        task=task, name=body["metadata"]["name"], raw=raw, state=state, suspend=suspend,
        retry_generation=retry_gen,
        execute_step=ExecuteStep(step) if step else None, attempt=st.get("attempt"),
        message=st.get("message"), output_uri=(st.get("outputs") or {}).get("uri"),
        start_time=parse_time(st.get("startTime")),
        completion_time=parse_time(st.get("completionTime")),
    )


#: Why a task ended without an MLTask, or why its failure did not fail the pipeline.
WHEN_FALSE = "WhenFalse"
UPSTREAM_SKIPPED = "UpstreamSkipped"
UPSTREAM_FAILED = "UpstreamFailed"
WHEN_ERROR = "WhenError"
FAILURE_IGNORED = "FailureIgnored"


@dataclass(frozen=True)
class Ended:
    """A task settled without an MLTask: skipped, or failed because its when could not be
    evaluated. Worked out again at each reconcile from its upstream tasks."""

    state: TaskState          # SKIPPED or FAILED
    reason: str               # WHEN_FALSE, UPSTREAM_SKIPPED, UPSTREAM_FAILED or WHEN_ERROR
    message: str


@dataclass(frozen=True)
class NotCreated:
    """Why the API server did not create a task's MLTask."""

    reason: str               # TASK_NAME_TAKEN, TASK_REJECTED or OLD_TASK_LEFT
    message: str
    transient: bool = False   # it goes away by itself: wait, fail nothing


def names(names: list[str]) -> str:
    return ", ".join(names)


def overall(tasks: list[PipelineTask], states: dict[str, TaskState], suspended: bool,
            held: frozenset[str] = frozenset(), ignored: frozenset[str] = frozenset()) -> Phase:
    """The pipeline's status from its tasks' states (a task without a child is pending).
    `held`: pending tasks that would start now but for spec.suspend; a suspended pipeline
    that nothing would move on from (every task completed, failed or blocked by a failure)
    is failed, not stopped, as a suspended MLTask that failed stays failed. `ignored`: failed
    tasks whose failure does not fail the pipeline (onFailure Ignore); with the skipped
    ones they count as done."""
    vals = [states.get(t.name, S.PENDING) for t in tasks]
    if all(v in (S.COMPLETED, S.SKIPPED) or t.name in ignored
           for t, v in zip(tasks, vals, strict=True)):
        return Phase.COMPLETED
    if any(v in ACTIVE_STATES for v in vals):
        if suspended or S.STOPPING in vals:
            return Phase.STOPPING
        if S.RUNNING in vals:
            return Phase.RUNNING
        if S.RETRY in vals:
            return Phase.RETRY
        started = any(v not in (S.PENDING, S.INIT) for v in vals)
        return Phase.RUNNING if started else Phase.INIT
    if S.STOPPED in vals or held:
        return Phase.STOPPED
    return Phase.FAILED  # something failed, or pending tasks can never start


def summary(tasks: list[PipelineTask], states: dict[str, TaskState], phase: Phase,
             waiting: dict[str, str], views: dict[str, Child], unmade: dict[str, NotCreated],
             stopping: bool, ended: dict[str, Ended] | None = None,
             ignored: frozenset[str] = frozenset()) -> str:
    """The pipeline's message; `stopping`: a failure keeps new tasks from starting."""
    ended = ended or {}

    def with_state(*wanted: TaskState) -> list[str]:
        return [t.name for t in tasks if states.get(t.name, S.PENDING) in wanted]

    failed = [n for n in with_state(S.FAILED) if n not in ignored]
    skipped = with_state(S.SKIPPED)
    if phase == Phase.COMPLETED:
        if not skipped and not ignored:
            return f"All {len(tasks)} tasks completed"
        done = len(with_state(S.COMPLETED))
        parts = [f"{done} of {len(tasks)} tasks completed"]
        if skipped:
            parts.append(f"{names(skipped)} skipped")
        if ignored:
            parts.append(f"{names(sorted(ignored))} failed (onFailure Ignore)")
        return "; ".join(parts)
    if phase == Phase.FAILED:
        if failed:
            first = failed[0]
            why = unmade[first].message if first in unmade else (
                ended[first].message if first in ended else (
                    views[first].message if first in views else None))
            detail = f": {why}" if why else ""
            return f"Task {names(failed)} failed{detail}"
        stuck = [f"{n} {why}" for n, why in waiting.items()]
        return "Pipeline cannot go on: " + "; ".join(stuck)
    if phase in (Phase.STOPPING, Phase.STOPPED):
        parts = [f"{names(x)} {what}" for x, what in (
            (with_state(S.STOPPING, S.INIT, S.RUNNING, S.RETRY), "stopping"),
            (with_state(S.STOPPED), "stopped"), (with_state(S.PENDING), "not started"),
            (with_state(S.FAILED), "failed")) if x]
        return ("Stopping: " if phase == Phase.STOPPING else "Stopped: ") + "; ".join(parts)
    if phase == Phase.RETRY:
        return f"Retrying: {names(with_state(S.RETRY))}"
    if phase == Phase.INIT:
        return f"Starting: {names(with_state(S.INIT))}"
    running = with_state(S.RUNNING, S.RETRY, S.INIT)
    out = f"Running: {names(running)}"
    if unmade:
        out += f"; {names(list(unmade))} could not be created, no new task starts"
    elif failed:
        out += f"; {names(failed)} failed, " + (
            "no new task starts" if stopping else "independent branches go on")
    return out


def build_status(pipeline: str, st: PipelineStatus, prev: PipelineStatus, tasks: list[PipelineTask],
            views: dict[str, Child], states: dict[str, TaskState], phase: Phase, message: str,
            generation: int | None, now: datetime.datetime, *, reason: str | None = None,
            waiting: dict[str, str] | None = None, unmade: dict[str, NotCreated] | None = None,
            created: set[str] | None = None, started: bool = False,
            ended: dict[str, Ended] | None = None,
            ignored: frozenset[str] = frozenset()) -> PipelineStatus:
    waiting = waiting or {}
    unmade = unmade or {}
    ended = ended or {}
    entries = []
    for t in tasks:
        v = views.get(t.name)
        state = states.get(t.name, S.PENDING)
        if v is None:
            nc = unmade.get(t.name)
            settled = ended.get(t.name)
            entries.append(PipelineTaskStatus(
                name=t.name, status=state,
                mltask=child_name(pipeline, t.name) if t.name in (created or ()) else None,
                message=bounded(nc.message if nc else (
                    settled.message if settled else waiting.get(t.name)),
                    MAX_TASK_MESSAGE_LENGTH),
                reason=nc.reason if nc else (settled.reason if settled else None)))
            continue
        entries.append(PipelineTaskStatus(
            name=t.name, mltask=v.name, status=state, execute_step=v.execute_step,
            attempt=v.attempt,
            message=bounded(waiting.get(t.name) or v.message, MAX_TASK_MESSAGE_LENGTH),
            output_uri=v.output_uri, start_time=v.start_time,
            completion_time=v.completion_time,
            reason=FAILURE_IGNORED if t.name in ignored else None))
    done = sum(1 for e in entries if e.status == S.COMPLETED)
    skipped = sum(1 for e in entries if e.status == S.SKIPPED)
    st.tasks = entries
    st.completed_tasks = done
    st.skipped_tasks = skipped or None
    st.progress = f"{done}/{len(tasks)}" + (f" ({skipped} skipped)" if skipped else "")
    st.status = phase
    st.message = bounded(message, MAX_MESSAGE_LENGTH)
    if started and st.start_time is None:
        st.start_time = now
    if phase in TERMINAL_PHASES:
        if prev.status != phase or prev.completion_time is None:
            st.completion_time = now
    else:
        st.completion_time = None
    if st.start_time is not None:
        end = st.completion_time or now
        st.duration = format_duration((end - st.start_time).total_seconds())
    st.conditions = conditions_for(phase, message, prev.conditions, generation, now,
                                   reason=reason)
    return st
