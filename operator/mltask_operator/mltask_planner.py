"""Pure: decide the next action for a task from its spec and status (stop, continue, retry...).

Actions are declarative: `spec.suspend` stops (true) and continues (back to false) a task,
and increasing `spec.retryGeneration` retries it. They work the same from Git or kubectl patch.
An archived task (`spec.archived`) is held as a suspended one is: stopped if active, never
retried or continued until it is unarchived.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mltask_operator.api.v1alpha1.mltask import (
    ACTIVE_PHASES,
    TERMINAL_PHASES,
    MLTask,
    MLTaskStatus,
    Phase,
    StepName,
)
from mltask_operator.mltask_state_machine import Cause
from mltask_operator.mltask_status import first_unfinished


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
