"""Pure: what a task no longer needs and when to let it go: earlier attempts' Workflows,
superseded retry pods, the working volume, everything when archived, the task itself after
its TTL; and the status that records it (status.released, the Archived condition).

The reconciler (`handlers.mltask`) deletes what `plan_release` names, then writes the status
`record_release` returns. Deleting twice is harmless (gone is fine), so a crash between the
two only repeats a delete.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from mltask_operator.api.v1alpha1.mltask import (
    FINISHED_PHASES,
    TERMINAL_PHASES,
    MLTask,
    MLTaskStatus,
    Phase,
    ReleasedStatus,
)
from mltask_operator.builders.workflow import work_pvc_name, workflow_name
from mltask_operator.mltask_status import (
    FINISHED_NODE_PHASES,
    WorkflowObservation,
    holds_volume,
)
from mltask_operator.settings import CleanupDefaults
from mltask_operator.status_common import ARCHIVED, archived_condition

#: The Workflow names status.released keeps (the latest).
MAX_RELEASED_WORKFLOWS = 64


@dataclass
class Release:
    """What to delete now, the label change, and when the TTL ends."""

    workflows: list[str] = field(default_factory=list)
    work_volume: str | None = None
    pods: list[str] = field(default_factory=list)
    archived_label: bool | None = None   # True: add mltask.dev/archived, False: remove it
    expire_in: float | None = None       # seconds until the TTL deletes the task (<= 0: now)

    def __bool__(self) -> bool:
        return bool(self.workflows or self.work_volume or self.pods)


def volume_held(status: MLTaskStatus) -> bool:
    """Whether the task holds its working volume (status.holds_volume)."""
    failed = next((c.reason for c in status.conditions or [] if c.type == "Failed"), None)
    return holds_volume(status.attempt, bool(status.released and status.released.work_volume),
                        failed)


def in_pipeline(task: MLTask) -> bool:
    return task.spec.pipeline_ref is not None or any(
        ref.get("kind") == "Pipeline" for ref in task.metadata.get("ownerReferences") or [])


def ttl_seconds(task: MLTask, defaults: CleanupDefaults) -> int | None:
    """The task's TTL after it finished: its own, else the operator's default; a Pipeline's
    task has none (it goes with its Pipeline)."""
    if in_pipeline(task):
        return None
    own = task.spec.ttl_seconds_after_finished
    return own if own is not None else defaults.ttl_seconds_after_finished


def expires_in(phase: Phase, completion: datetime.datetime | None, ttl: int | None,
               now: datetime.datetime) -> float | None:
    """Seconds until a finished object's TTL ends (<= 0: it has), None if it has no TTL."""
    if ttl is None or phase not in FINISHED_PHASES or completion is None:
        return None
    return (completion + datetime.timedelta(seconds=ttl) - now).total_seconds()


def plan_release(task: MLTask, status: MLTaskStatus, prev: MLTaskStatus,
                 obs: WorkflowObservation | None, workflows: list[str],
                 labelled: bool, defaults: CleanupDefaults,
                 now: datetime.datetime) -> Release:
    """`status`: the status about to be written; `prev`: the one read; `obs`: the current
    attempt's Workflow; `workflows`: the task's Workflows that exist; `labelled`: whether it
    carries the archived label."""
    archived = task.spec.archived
    ended = status.status in TERMINAL_PHASES
    out = Release()
    current = workflow_name(task.name, status.attempt) if status.attempt else None
    if archived and ended:
        out.workflows = list(workflows)
    else:
        out.workflows = [w for w in workflows if w != current]
    keep = bool(task.spec.cleanup and task.spec.cleanup.keep_work_volume)
    if volume_held(status) and ((status.status == Phase.COMPLETED and not keep)
                                or (archived and ended)):
        out.work_volume = work_pvc_name(task.name)
    if obs is not None and not (archived and ended):
        before = {s.name: s for s in prev.steps or [] if s.attempt == status.attempt}
        for name, step in obs.steps.items():
            seen = before.get(name)
            just_ended = step.phase in FINISHED_NODE_PHASES and (
                seen is None or seen.phase not in FINISHED_NODE_PHASES)
            if just_ended:
                out.pods += step.superseded
    if archived and ended and not labelled:
        out.archived_label = True
    elif not archived and labelled:
        out.archived_label = False
    out.expire_in = expires_in(status.status, status.completion_time,
                               ttl_seconds(task, defaults), now)
    return out


def record_release(task: MLTask, status: MLTaskStatus, release: Release,
                   now: datetime.datetime) -> MLTaskStatus:
    """`status` with what `release` deleted added to status.released, and the Archived
    condition brought up to date (`status` itself when there is nothing to record)."""
    ever_archived = task.spec.archived or any(c.type == ARCHIVED
                                              for c in status.conditions or [])
    if not release and not ever_archived:
        return status
    new = status.model_copy(deep=True)
    if release:
        rel = (new.released or ReleasedStatus()).model_copy(deep=True)
        if release.work_volume:
            rel.work_volume, rel.work_volume_time = release.work_volume, now
        if release.workflows:
            kept = [w for w in rel.workflows or [] if w not in release.workflows]
            rel.workflows = (kept + release.workflows)[-MAX_RELEASED_WORKFLOWS:]
        if release.pods:
            rel.retry_pods = (rel.retry_pods or 0) + len(release.pods)
        rel.time = now
        new.released = rel
    new.conditions = archived_condition(new.conditions, task.spec.archived,
                                        new.status in TERMINAL_PHASES,
                                        task.metadata.get("generation"), now, "task")
    return new


def new_attempt_volume(status: MLTaskStatus) -> MLTaskStatus:
    """A new attempt makes the working volume again: it is held, no longer released."""
    if status.released and status.released.work_volume:
        status = status.model_copy(deep=True)
        assert status.released is not None
        status.released.work_volume = None
        status.released.work_volume_time = None
    return status
