"""Pure: (Pipeline, its child MLTasks) -> which children to create or patch, and the status.

Level-based: every call looks at the whole pipeline and all its children, so running it twice,
or after a crash, gives the same answer. Stop, continue and retry cascade to the children
through their own declarative fields (spec.suspend, spec.retryGeneration).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from mltask_operator import dag
from mltask_operator.api.v1alpha1.mltask import ExecuteStep, Phase
from mltask_operator.api.v1alpha1.pipeline import (
    Pipeline,
    PipelineStatus,
    PipelineTask,
    PipelineTaskStatus,
    TaskState,
)
from mltask_operator.builders.mltask import child_name
from mltask_operator.state_machine import TERMINAL
from mltask_operator.status import conditions_for, format_duration, parse_time

S = TaskState
ACTIVE = frozenset({S.INIT, S.RUNNING, S.RETRY, S.STOPPING})


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
    if seen_retry is not None and retry_gen > seen_retry and raw in TERMINAL \
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


@dataclass
class PipelinePlan:
    status: PipelineStatus
    create: list[PipelineTask] = field(default_factory=list)
    suspend: list[str] = field(default_factory=list)        # child MLTask names
    resume: list[str] = field(default_factory=list)
    retry: dict[str, int] = field(default_factory=dict)     # child name -> new retryGeneration
    outputs: dict[str, str] = field(default_factory=dict)   # task name -> output URI
    notes: list[tuple[str, str, str]] = field(default_factory=list)  # Event type, reason, text
    invalid: bool = False


def _names(names: list[str]) -> str:
    return ", ".join(names)


def overall(tasks: list[PipelineTask], states: dict[str, TaskState], suspended: bool) -> Phase:
    """The pipeline's status from its tasks' states (a task without a child is pending)."""
    vals = [states.get(t.name, S.PENDING) for t in tasks]
    if all(v == S.COMPLETED for v in vals):
        return Phase.COMPLETED
    if any(v in ACTIVE for v in vals):
        if suspended or S.STOPPING in vals:
            return Phase.STOPPING
        if S.RUNNING in vals:
            return Phase.RUNNING
        if S.RETRY in vals:
            return Phase.RETRY
        started = any(v not in (S.PENDING, S.INIT) for v in vals)
        return Phase.RUNNING if started else Phase.INIT
    if suspended or S.STOPPED in vals:
        return Phase.STOPPED
    return Phase.FAILED  # something failed, or pending tasks can never start


def plan_pipeline(pipeline: Pipeline, children: dict[str, dict[str, Any]],
                  now: datetime.datetime) -> PipelinePlan:
    """Decide; `children` maps task name -> child MLTask body (only the existing ones)."""
    spec = pipeline.spec
    prev = pipeline.status or PipelineStatus()
    st = prev.model_copy(deep=True)
    generation = pipeline.metadata.get("generation")
    st.observed_generation = generation
    st.total_tasks = len(spec.tasks)
    if st.observed_retry_generation is None:
        # The retryGeneration a pipeline is created with is its baseline, not a request.
        st.observed_retry_generation = spec.retry_generation

    problems = dag.validate(spec)
    if problems:
        msg = "Invalid pipeline: " + "; ".join(problems)
        status = _finish(pipeline.name, st, prev, spec.tasks, {}, {}, Phase.FAILED, msg,
                         generation, now, reason="InvalidSpec")
        return PipelinePlan(status, invalid=True)

    views = {t.name: child_view(t.name, children[t.name]) for t in spec.tasks
             if t.name in children}
    deps = dag.graph(spec)
    states: dict[str, TaskState] = {n: v.state for n, v in views.items()}
    plan = PipelinePlan(status=st)
    plan.outputs = {n: v.output_uri for n, v in views.items()
                    if v.state == S.COMPLETED and v.output_uri}
    waiting: dict[str, str] = {}

    # Retry: failed and stopped tasks get a new attempt; completed ones are kept.
    if spec.retry_generation > (st.observed_retry_generation or 0) and not spec.suspend:
        before = overall(spec.tasks, states, suspended=False)
        if before in (Phase.FAILED, Phase.STOPPED):
            for n, v in views.items():
                if v.state in (S.FAILED, S.STOPPED):
                    plan.retry[v.name] = v.retry_generation + 1
                    states[n] = S.RETRY
            plan.notes.append(("Normal", "Retrying", "Retry requested: new attempt for "
                               + (_names([v.task for v in views.values()
                                          if v.name in plan.retry]) or "no task")))
        else:
            plan.notes.append(("Warning", "RetryIgnored",
                               f"retryGeneration {spec.retry_generation} ignored: the pipeline "
                               f"is {before}; retry applies to failed or stopped pipelines"))
        st.observed_retry_generation = spec.retry_generation

    # Stop and continue cascade through the children's spec.suspend.
    if spec.suspend:
        for n, v in views.items():
            if not v.suspend and v.raw in (Phase.INIT, Phase.RUNNING, Phase.RETRY):
                plan.suspend.append(v.name)
                states[n] = S.STOPPING
    else:
        for n, v in views.items():
            if v.suspend and v.name not in plan.retry:
                plan.resume.append(v.name)
                if v.raw == Phase.STOPPED or states[n] == S.STOPPING:
                    states[n] = S.RUNNING

    # Start every task whose dependencies completed, within the concurrency limit.
    failed = [n for n, s in states.items() if s == S.FAILED]
    active = sum(1 for s in states.values() if s in ACTIVE)
    for t in spec.tasks:
        if t.name in views:
            continue
        if spec.suspend:
            waiting[t.name] = "not started: the pipeline is stopped"
            continue
        if spec.fail_fast and failed:
            waiting[t.name] = f"not started: {_names(failed)} failed (failFast)"
            continue
        blocked = [d for d in deps[t.name] if states.get(d, S.PENDING) != S.COMPLETED]
        if blocked:
            bad = [d for d in blocked if states.get(d) in (S.FAILED, S.STOPPED)]
            waiting[t.name] = (f"not started: {_names(bad)} did not complete" if bad
                               else f"waiting for {_names(blocked)}")
            continue
        refs = [r for r in (t.spec.input.dataset.from_task,
                            t.spec.input.model.from_task if t.spec.input.model else None) if r]
        missing = [r for r in refs if r not in plan.outputs]
        if missing:
            waiting[t.name] = (f"cannot start: {_names(missing)} completed without an output "
                               "URI (its upload step wrote no result)")
            continue
        if spec.concurrency and active >= spec.concurrency:
            waiting[t.name] = f"waiting: {spec.concurrency} tasks already running (concurrency)"
            continue
        plan.create.append(t)
        states[t.name] = S.INIT
        active += 1

    phase = overall(spec.tasks, states, spec.suspend)
    msg = _message(spec.tasks, states, phase, waiting, views, spec.fail_fast)
    plan.status = _finish(pipeline.name, st, prev, spec.tasks, views, states, phase, msg,
                          generation, now, waiting=waiting, started=bool(views or plan.create))
    return plan


def _message(tasks: list[PipelineTask], states: dict[str, TaskState], phase: Phase,
             waiting: dict[str, str], views: dict[str, Child], fail_fast: bool) -> str:
    def with_state(*wanted: TaskState) -> list[str]:
        return [t.name for t in tasks if states.get(t.name, S.PENDING) in wanted]

    failed = with_state(S.FAILED)
    if phase == Phase.COMPLETED:
        return f"All {len(tasks)} tasks completed"
    if phase == Phase.FAILED:
        if failed:
            first = views.get(failed[0])
            detail = f": {first.message}" if first and first.message else ""
            return f"Task {_names(failed)} failed{detail}"
        stuck = [f"{n} {why}" for n, why in waiting.items()]
        return "Pipeline cannot go on: " + "; ".join(stuck)
    if phase in (Phase.STOPPING, Phase.STOPPED):
        parts = [f"{_names(x)} {what}" for x, what in (
            (with_state(S.STOPPING, S.INIT, S.RUNNING, S.RETRY), "stopping"),
            (with_state(S.STOPPED), "stopped"), (with_state(S.PENDING), "not started")) if x]
        return ("Stopping: " if phase == Phase.STOPPING else "Stopped: ") + "; ".join(parts)
    if phase == Phase.RETRY:
        return f"Retrying: {_names(with_state(S.RETRY))}"
    if phase == Phase.INIT:
        return f"Starting: {_names(with_state(S.INIT))}"
    running = with_state(S.RUNNING, S.RETRY, S.INIT)
    out = f"Running: {_names(running)}"
    if failed:
        out += f"; {_names(failed)} failed, " + (
            "no new task starts" if fail_fast else "independent branches go on")
    return out


def _finish(pipeline: str, st: PipelineStatus, prev: PipelineStatus, tasks: list[PipelineTask],
            views: dict[str, Child], states: dict[str, TaskState], phase: Phase, message: str,
            generation: int | None, now: datetime.datetime, *, reason: str | None = None,
            waiting: dict[str, str] | None = None, started: bool = False) -> PipelineStatus:
    waiting = waiting or {}
    entries = []
    for t in tasks:
        v = views.get(t.name)
        state = states.get(t.name, S.PENDING)
        if v is None:
            entries.append(PipelineTaskStatus(
                name=t.name, status=state,
                mltask=None if state == S.PENDING else child_name(pipeline, t.name),
                message=waiting.get(t.name)))
            continue
        entries.append(PipelineTaskStatus(
            name=t.name, mltask=v.name, status=state, execute_step=v.execute_step,
            attempt=v.attempt, message=v.message, output_uri=v.output_uri,
            start_time=v.start_time, completion_time=v.completion_time))
    done = sum(1 for e in entries if e.status == S.COMPLETED)
    st.tasks = entries
    st.completed_tasks = done
    st.progress = f"{done}/{len(tasks)}"
    st.status = phase
    st.message = message
    if started and st.start_time is None:
        st.start_time = now
    if phase in TERMINAL:
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
