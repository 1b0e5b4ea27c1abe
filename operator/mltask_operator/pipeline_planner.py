"""Pure: (Pipeline, its child MLTasks) -> which children to create or patch, and the status.

Level-based: every call looks at the whole pipeline and all its children, so running it twice,
or after a crash, gives the same answer. Stop, continue and retry cascade to the children
through their own declarative fields (spec.suspend, spec.retryGeneration). What cannot be seen
on the children is remembered in the status: the tasks a retry has yet to restart
(retryPending) and the tasks whose MLTask could not be created (a failed entry with a reason).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mltask_operator import pipeline_dag as dag
from mltask_operator import pipeline_params as params
from mltask_operator import pipeline_when
from mltask_operator.api.v1alpha1.mltask import (
    Phase,
)
from mltask_operator.api.v1alpha1.pipeline import (
    ACTIVE_STATES,
    KIND,
    FailurePolicy,
    Pipeline,
    PipelineSpec,
    PipelineStatus,
    PipelineTask,
    TaskState,
)
from mltask_operator.pipeline_status import (
    UPSTREAM_FAILED,
    UPSTREAM_SKIPPED,
    WHEN_ERROR,
    WHEN_FALSE,
    Child,
    Ended,
    NotCreated,
    build_status,
    child_view,
    names,
    overall,
    summary,
)

S = TaskState


TASK_NAME_TAKEN = "TaskNameTaken"
TASK_REJECTED = "TaskRejected"
OLD_TASK_LEFT = "OldTaskLeft"
#: A task failed with one of these reasons has no MLTask; it stays failed until a retry.
NOT_CREATED = frozenset({TASK_NAME_TAKEN, TASK_REJECTED})
HELD = "is held until spec.suspend is false"


def name_taken(pipeline: Pipeline, existing: dict[str, Any]) -> NotCreated:
    """An MLTask with a child's name exists but is not the pipeline's. Left by an earlier
    Pipeline of the same name (the garbage collector removes it) or being deleted: wait for it.
    Anyone else's: the task cannot run under that name."""
    meta = existing.get("metadata") or {}
    name = meta.get("name")
    earlier = any(o.get("kind") == KIND and o.get("name") == pipeline.name
                  and o.get("uid") != pipeline.metadata.get("uid")
                  for o in meta.get("ownerReferences") or [])
    if meta.get("deletionTimestamp") or earlier:
        return NotCreated(OLD_TASK_LEFT, f"waiting: MLTask {name} of an earlier Pipeline "
                          f"{pipeline.name} is being deleted", transient=True)
    return NotCreated(TASK_NAME_TAKEN, f"could not be created: MLTask {name} already exists "
                      "and is not owned by this Pipeline; delete or rename it, then retry")


def rejected(why: str) -> NotCreated:
    """The API server refused the task's MLTask (HTTP 422); `why` is its message."""
    return NotCreated(TASK_REJECTED, f"could not be created: {why}")


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


@dataclass
class _Work:
    """What one planning pass works on; each stage of plan_pipeline updates it in turn."""

    spec: PipelineSpec
    views: dict[str, Child]                    # task name -> its existing child
    states: dict[str, TaskState]               # task name -> state as planned so far
    plan: PipelinePlan
    unmade: dict[str, NotCreated]              # tasks whose MLTask could not be created
    queue: list[str]                           # tasks a retry has yet to restart
    children: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> MLTask body
    params: Mapping[str, Any] = field(default_factory=dict)  # the parameters' typed values
    waiting: dict[str, str] = field(default_factory=dict)  # task name -> why it waits
    ended: dict[str, Ended] = field(default_factory=dict)  # tasks ended without an MLTask
    evaluate: pipeline_when.Evaluator = pipeline_when.evaluate  # how a `when` is evaluated

    def policy(self, task: str) -> FailurePolicy:
        """What the task's failure does: its onFailure, else spec.failFast's. A task whose
        MLTask could not be created, or whose when could not be evaluated, stops the
        pipeline whatever its policy."""
        if task in self.unmade or (task in self.ended and self.ended[task].reason == WHEN_ERROR):
            return FailurePolicy.STOP
        t = next((t for t in self.spec.tasks if t.name == task), None)
        if t is not None and t.on_failure is not None:
            return t.on_failure
        return FailurePolicy.STOP if self.spec.fail_fast else FailurePolicy.CONTINUE

    def ignored(self) -> frozenset[str]:
        """The failed tasks whose failure the pipeline ignores (onFailure Ignore)."""
        return frozenset(n for n, s in self.states.items()
                         if s == S.FAILED and self.policy(n) == FailurePolicy.IGNORE)

    def stop_text(self, stopping: list[str]) -> str | None:
        """Why no new task starts: the failures in `stopping` and what made them stop."""
        if not stopping:
            return None
        errors = [n for n in stopping if n in self.ended]
        if errors:
            return f"the when of {names(errors)} could not be evaluated"
        own = all(t.on_failure is not None for t in self.spec.tasks if t.name in stopping)
        return f"{names(stopping)} failed ({'onFailure Stop' if own else 'failFast'})"

    def stopping(self) -> list[str]:
        """The failed tasks, in spec order, whose failure keeps any new task from starting."""
        return [t.name for t in self.spec.tasks if self.states.get(t.name) == S.FAILED
                and self.policy(t.name) == FailurePolicy.STOP]


def plan_pipeline(pipeline: Pipeline, children: dict[str, dict[str, Any]],
                  now: datetime.datetime,
                  not_created: dict[str, NotCreated] | None = None,
                  evaluate: pipeline_when.Evaluator = pipeline_when.evaluate) -> PipelinePlan:
    """Decide; `children` maps task name -> child MLTask body (only the existing ones);
    `not_created`: tasks whose MLTask this reconcile failed to create (plan again with it);
    `evaluate`: how a task's `when` is evaluated (the operator's is bounded in memory and time,
    `mltask_operator.when_sandbox`; the default runs it in this process)."""
    spec = pipeline.spec
    prev = pipeline.status or PipelineStatus()
    st = prev.model_copy(deep=True)
    generation = pipeline.metadata.get("generation")
    st.observed_generation = generation
    st.total_tasks = len(spec.tasks)
    if st.observed_retry_generation is None:
        # The retryGeneration a pipeline is created with is its baseline, not a request.
        st.observed_retry_generation = spec.retry_generation

    problems = dag.validate(spec) + params.validate(spec)
    if problems:
        msg = "Invalid pipeline: " + "; ".join(problems)
        st.retry_pending = None
        status = build_status(pipeline.name, st, prev, spec.tasks, {}, {}, Phase.FAILED, msg,
                         generation, now, reason="InvalidSpec")
        return PipelinePlan(status, invalid=True)

    views = {t.name: child_view(t.name, children[t.name]) for t in spec.tasks
             if t.name in children}
    deps = dag.graph(spec)
    ended = (S.FAILED, S.STOPPED)
    w = _Work(
        spec=spec, views=views, states={n: v.state for n, v in views.items()},
        plan=PipelinePlan(status=st),
        # Remembered in the status: tasks whose MLTask could not be created, a retry's rest.
        unmade={e.name: NotCreated(e.reason, e.message or "") for e in prev.tasks or []
                if e.status == S.FAILED and e.reason in NOT_CREATED and e.name in deps
                and e.name not in views},
        queue=[n for n in prev.retry_pending or [] if n in views and views[n].state in ended],
        children=children, params=params.resolve(spec), evaluate=evaluate)
    w.plan.outputs = {n: v.output_uri for n, v in views.items()
                      if v.state == S.COMPLETED and v.output_uri}

    retried, retry_held = _take_retry_request(w, st, prev)
    for n, nc in (not_created or {}).items():
        if nc.transient:
            w.waiting[n] = nc.message
            w.states[n] = S.INIT             # created once the namesake is gone
        else:
            w.unmade[n] = nc
    for n in w.unmade:
        w.states[n] = S.FAILED
    _cascade_suspend(w)
    _start_retries(w, retried)
    st.retry_pending = w.queue or None
    held = _start_ready(w, deps)

    states, plan = w.states, w.plan
    ignored = w.ignored()
    phase = overall(spec.tasks, states, spec.suspend, frozenset(held), ignored)
    msg = summary(spec.tasks, states, phase, w.waiting, views, w.unmade, bool(w.stopping()),
                  w.ended, ignored)
    if retry_held:
        held_text = f"retry (retryGeneration {spec.retry_generation}) {HELD}"
        msg += f"; {held_text}"
        if held_text not in (prev.message or ""):   # said once, not at every reconcile
            plan.notes.append(("Warning", "RetryHeld", f"{held_text[0].upper()}{held_text[1:]}:"
                               " set suspend to false too to retry the pipeline"))
    elif w.queue and spec.suspend:
        msg += f"; retry of {names(w.queue)} {HELD}"
    first_failed = next((t.name for t in spec.tasks if states.get(t.name) == S.FAILED
                         and t.name not in ignored), None)
    reason = None
    if phase == Phase.FAILED and first_failed in w.unmade:
        reason = w.unmade[first_failed].reason
    elif phase == Phase.FAILED and first_failed in w.ended:
        reason = w.ended[first_failed].reason
    plan.status = build_status(pipeline.name, st, prev, spec.tasks, views, states, phase, msg,
                          generation, now, reason=reason, waiting=w.waiting, unmade=w.unmade,
                          created={t.name for t in plan.create},
                          started=bool(views or plan.create), ended=w.ended,
                          ignored=ignored)
    return plan


def _take_retry_request(w: _Work, st: PipelineStatus,
                        prev: PipelineStatus) -> tuple[list[str], bool]:
    """A new spec.retryGeneration: failed and stopped tasks get a new attempt (queued in
    w.queue), tasks that could not be created are created again; completed ones are kept.
    Held while the pipeline is suspended. Returns the tasks retried and whether it is held."""
    spec = w.spec
    if spec.retry_generation <= (st.observed_retry_generation or 0):
        return [], False
    if spec.suspend:
        return [], True
    retried: list[str] = []
    before = overall(spec.tasks, {**w.states, **dict.fromkeys(w.unmade, S.FAILED)},
                     suspended=False)
    if before in (Phase.FAILED, Phase.STOPPED):
        w.queue = [t.name for t in spec.tasks if t.name in w.views
                   and w.views[t.name].state in (S.FAILED, S.STOPPED)]
        retried = [t.name for t in spec.tasks if t.name in w.queue or t.name in w.unmade]
        w.unmade = {}
        if not retried:
            w.plan.notes.append((
                "Warning", "NothingToRetry",
                f"retryGeneration {spec.retry_generation}: nothing to retry, no task "
                f"failed or stopped; the pipeline stays {before}"
                + (f" ({prev.message})" if prev.message else "")))
    else:
        w.plan.notes.append(("Warning", "RetryIgnored",
                             f"retryGeneration {spec.retry_generation} ignored: the "
                             f"pipeline is {before}; retry applies to failed or stopped "
                             "pipelines"))
    st.observed_retry_generation = spec.retry_generation
    return retried, False


def _room(w: _Work, not_counted: set[str] | frozenset[str] = frozenset()) -> int | None:
    """How many more children may be active under spec.concurrency (None: no limit), the
    tasks in `not_counted` aside."""
    if not w.spec.concurrency:
        return None
    active = sum(1 for n, s in w.states.items() if s in ACTIVE_STATES and n not in not_counted)
    return max(w.spec.concurrency - active, 0)


def _cascade_suspend(w: _Work) -> None:
    """Stop and continue cascade through the children's spec.suspend (a child waiting for its
    retry is left alone: the retry un-suspends it). Continue restarts stopped children in
    spec order as far as spec.concurrency leaves room; the rest stay stopped and wait."""
    spec = w.spec
    if spec.suspend:
        for n, v in w.views.items():
            if not v.suspend and v.raw in (Phase.INIT, Phase.RUNNING, Phase.RETRY):
                w.plan.suspend.append(v.name)
                w.states[n] = S.STOPPING
        return
    room = _room(w)
    for n, v in w.views.items():
        if not v.suspend or n in w.queue:
            continue
        starts = v.raw == Phase.STOPPED  # a new attempt; a child still stopping is active
        if starts and room is not None and room <= 0:
            w.waiting[n] = (f"continue waiting: {spec.concurrency} tasks already running "
                            "(concurrency)")
            continue
        w.plan.resume.append(v.name)
        if starts or w.states[n] == S.STOPPING:
            w.states[n] = S.RUNNING
        if starts and room is not None:
            room -= 1


def _start_retries(w: _Work, retried: list[str]) -> None:
    """The retry's new attempts, in spec order, as far as spec.concurrency leaves room; the
    rest stay in w.queue."""
    spec = w.spec
    if w.queue and not spec.suspend:
        room = _room(w)
        if room is None:
            room = len(w.queue)
        for n in w.queue[:room]:
            w.plan.retry[w.views[n].name] = w.views[n].retry_generation + 1
            w.states[n] = S.RETRY
        w.queue = w.queue[room:]
        for n in w.queue:
            w.states[n] = S.RETRY
            w.waiting[n] = (f"retry waiting: {spec.concurrency} tasks already running "
                            "(concurrency)")
    if retried:
        text = f"Retry requested: new attempt for {names(retried)}"
        if w.queue and not spec.suspend:
            text += f"; {names(w.queue)} wait for room (concurrency {spec.concurrency})"
        w.plan.notes.append(("Normal", "Retrying", text))


def _start_ready(w: _Work, deps: dict[str, list[str]]) -> list[str]:
    """Settle, dependencies first, every task without an MLTask whose dependencies ended: skip
    it, fail it (a when that cannot be evaluated) or start it, within the concurrency limit.
    Returns the tasks that would start now but for spec.suspend."""
    spec, states = w.spec, w.states
    queued = set(w.queue) if not spec.suspend else set()
    room = _room(w, queued)
    held: list[str] = []
    create: list[PipelineTask] = []
    for t in dag.order(spec):
        if t.name in w.views or t.name in w.unmade or t.name in w.waiting:
            continue
        stopping = w.stopping()
        if not stopping and _settle(w, t, deps[t.name]):
            continue
        why = _blocked(t, deps[t.name], states, w.plan.outputs, w.stop_text(stopping),
                       w.unmade, spec.suspend)
        if why:
            w.waiting[t.name] = why
            continue
        if spec.suspend:
            w.waiting[t.name] = "not started: the pipeline is stopped"
            held.append(t.name)
            continue
        if room is not None and room <= 0:
            w.waiting[t.name] = (f"waiting: {spec.concurrency} tasks already running "
                                 "(concurrency)")
            continue
        create.append(t)
        states[t.name] = S.INIT
        if room is not None:
            room -= 1
    w.plan.create += [t for t in spec.tasks if t in create]
    return held


_FINISHED_OK = (S.COMPLETED, S.SKIPPED)


def _settle(w: _Work, task: PipelineTask, deps: list[str]) -> bool:
    """Once every dependency of `task` completed, was skipped or failed with its failure
    ignored: skip the task if it needs what a skipped or ignored task did not make, or if its
    when is false; fail it if its when cannot be evaluated. True if it was settled so."""
    states = w.states
    if any(states.get(d, S.PENDING) not in _FINISHED_OK and
           not (states.get(d) == S.FAILED and w.policy(d) == FailurePolicy.IGNORE)
           for d in deps):
        return False
    failed = [d for d in deps if states.get(d) == S.FAILED]
    inputs = set(task.spec.input.upstreams().values())
    skipped_inputs = [d for d in deps if d in inputs and states.get(d) == S.SKIPPED]
    if failed:
        ended = Ended(S.SKIPPED, UPSTREAM_FAILED,
                      f"skipped: {names(failed)} failed (onFailure Ignore)")
    elif skipped_inputs:
        ended = Ended(S.SKIPPED, UPSTREAM_SKIPPED,
                      f"skipped: {names(skipped_inputs)} was skipped and made no output")
    elif deps and all(states.get(d) == S.SKIPPED for d in deps):
        ended = Ended(S.SKIPPED, UPSTREAM_SKIPPED, f"skipped: {names(deps)} skipped")
    elif task.when:
        outcome = w.evaluate(
            task.when, {d: _when_view(w, d) for d in deps}, w.params)
        if outcome.error is not None:
            ended = Ended(S.FAILED, WHEN_ERROR,
                          f"when {task.when!r} could not be evaluated: {outcome.error}")
        elif outcome.value:
            return False
        else:
            ended = Ended(S.SKIPPED, WHEN_FALSE, f"skipped: when {task.when!r} is false")
    else:
        return False
    w.ended[task.name] = ended
    states[task.name] = ended.state
    return True


def _when_view(w: _Work, task: str) -> dict[str, Any]:
    """What a `when` sees of an upstream task: its state, metrics and outputs."""
    status = (w.children.get(task) or {}).get("status") or {}
    return {"status": str(w.states.get(task, S.PENDING)),
            "metrics": dict(status.get("metrics") or {}),
            "outputs": dict(status.get("outputs") or {})}


def _blocked(task: PipelineTask, deps: list[str], states: dict[str, TaskState],
             outputs: dict[str, str], stopping: str | None, unmade: dict[str, NotCreated],
             suspended: bool) -> str | None:
    """Why a task without an MLTask cannot start, or None if it could start now;
    `stopping`: why no new task starts (a failure that stops the pipeline), if one does."""
    if unmade:
        return f"not started: {names(list(unmade))} could not be created"
    if stopping:
        return f"not started: {stopping}"
    blocked = [d for d in deps if states.get(d, S.PENDING) not in _FINISHED_OK]
    if blocked:
        bad = [d for d in blocked if states.get(d) == S.FAILED]
        if bad:
            return f"not started: {names(bad)} did not complete"
        return "not started: the pipeline is stopped" if suspended \
            else f"waiting for {names(blocked)}"
    missing = [r for r in task.spec.input.upstreams().values() if r not in outputs]
    if missing:
        return (f"cannot start: {names(missing)} completed without an output URI (its upload "
                "step wrote no result)")
    return None
