"""The pure release plan: what a task no longer needs, and the status that records it."""

from __future__ import annotations

import datetime

import pytest

from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import (
    MLTask,
    MLTaskStatus,
    ReleasedStatus,
    StepStatus,
)
from mltask_operator.mltask_planner import Action, plan
from mltask_operator.mltask_release import (
    expires_in,
    new_attempt_volume,
    plan_release,
    record_release,
    ttl_seconds,
    volume_held,
)
from mltask_operator.mltask_status import StepObservation, WorkflowObservation
from mltask_operator.settings import CleanupDefaults
from mltask_operator.status_common import archived_condition

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
DEFAULTS = CleanupDefaults()


def task(**spec: object) -> MLTask:
    body = example("training")
    body["metadata"].update(namespace="ml", uid="u", generation=1)
    body["spec"].update(spec)
    return MLTask.model_validate(body)


def status(phase: str, attempt: int = 1, **kw: object) -> MLTaskStatus:
    return MLTaskStatus(status=phase, attempt=attempt, **kw)


def obs(step: str, phase: str, superseded: list[str]) -> WorkflowObservation:
    return WorkflowObservation(
        name="w", phase="Running", message=None, shutdown=None, started_at=None,
        finished_at=None, steps={step: StepObservation(name=step, phase=phase,
                                                      superseded=superseded,
                                                      retries=len(superseded))})


def release(t: MLTask, st: MLTaskStatus, prev: MLTaskStatus | None = None, *,
            workflows: list[str] | None = None, observed: WorkflowObservation | None = None,
            labelled: bool = False, defaults: CleanupDefaults = DEFAULTS):
    name = t.name
    return plan_release(t, st, prev or MLTaskStatus(), observed,
                        workflows if workflows is not None else [f"{name}-{st.attempt}"],
                        labelled, defaults, NOW)


# ------------------------------------------------------------------------ working volume


def test_a_completed_task_releases_its_volume() -> None:
    t = task()
    r = release(t, status("completed"))
    assert r.work_volume == f"{t.name}-work"
    assert r.workflows == [] and r.pods == []


@pytest.mark.parametrize("phase", ["failed", "stopped", "running", "init", "retry",
                                   "stopping"])
def test_a_task_that_may_continue_or_retry_keeps_its_volume(phase: str) -> None:
    assert release(task(), status(phase)).work_volume is None


def test_keep_work_volume_keeps_it_on_completion_too() -> None:
    r = release(task(cleanup={"keepWorkVolume": True}), status("completed"))
    assert r.work_volume is None


def test_a_released_volume_is_not_released_twice() -> None:
    st = status("completed", released=ReleasedStatus(work_volume="x-work"))
    assert not volume_held(st)
    assert release(task(), st).work_volume is None


def test_a_new_attempt_holds_the_volume_again() -> None:
    st = status("failed", released=ReleasedStatus(work_volume="x-work", work_volume_time=NOW,
                                                  workflows=["x-1"]))
    again = new_attempt_volume(st)
    assert volume_held(again) and again.released is not None
    assert again.released.workflows == ["x-1"], "the history stays"
    assert st.released is not None and st.released.work_volume == "x-work", "a copy"


def test_a_task_that_never_started_holds_no_volume() -> None:
    assert release(task(), MLTaskStatus(status="completed")).work_volume is None


# ------------------------------------------------------------------------- Workflows, pods


def test_earlier_attempts_workflows_go_the_current_one_stays() -> None:
    t = task()
    r = release(t, status("running", attempt=3),
                workflows=[f"{t.name}-1", f"{t.name}-2", f"{t.name}-3"])
    assert r.workflows == [f"{t.name}-1", f"{t.name}-2"]


def test_superseded_retry_pods_go_once_the_step_ended() -> None:
    t = task()
    running = release(t, status("running"), observed=obs("run", "Running", ["p0", "p1"]))
    assert running.pods == [], "while retrying, the failed pod stays to be looked at"
    ended = release(t, status("running"),
                    prev=status("running", steps=[StepStatus(name="run", phase="Running",
                                                             attempt=1)]),
                    observed=obs("run", "Succeeded", ["p0", "p1"]))
    assert ended.pods == ["p0", "p1"]
    again = release(t, status("running"),
                    prev=status("running", steps=[StepStatus(name="run", phase="Succeeded",
                                                             attempt=1)]),
                    observed=obs("run", "Succeeded", ["p0", "p1"]))
    assert again.pods == [], "deleted once, when the step ended"


# ------------------------------------------------------------------------------- archive


def test_archiving_a_finished_task_releases_everything_and_labels_it() -> None:
    t = task(archived=True)
    r = release(t, status("failed", attempt=2), workflows=[f"{t.name}-1", f"{t.name}-2"])
    assert r.workflows == [f"{t.name}-1", f"{t.name}-2"]
    assert r.work_volume == f"{t.name}-work"
    assert r.archived_label is True


def test_an_archived_active_task_is_stopped_first() -> None:
    t = task(archived=True)
    r = release(t, status("running"))
    assert not r and r.archived_label is None
    assert plan(t, status("running"), workflow_exists=True).action == Action.STOP


def test_unarchiving_removes_the_label() -> None:
    r = release(task(), status("completed", released=ReleasedStatus(work_volume="x")),
                labelled=True)
    assert r.archived_label is False


def test_an_archived_task_holds_a_retry_and_continues_from_the_first_step_after() -> None:
    held = status("stopped", attempt=1, observed_retry_generation=0,
                  released=ReleasedStatus(work_volume="x-work"),
                  steps=[StepStatus(name="download", phase="Succeeded", attempt=1)])
    assert plan(task(archived=True, retryGeneration=1), held,
                workflow_exists=False).action == Action.HOLD_RETRY
    assert plan(task(archived=True), held, workflow_exists=False).action == Action.OBSERVE
    go = plan(task(), held, workflow_exists=False)
    assert (go.action, go.start_at) == (Action.CONTINUE, "download"), \
        "its volume was released: what download fetched is gone"


def test_the_archived_condition() -> None:
    assert archived_condition(None, False, True, 1, NOW, "task") is None
    stopping = archived_condition(None, True, False, 1, NOW, "task")
    assert stopping is not None and (stopping[0].status, stopping[0].reason) == (
        "False", "Stopping")
    done = archived_condition(stopping, True, True, 1, NOW, "task")
    assert done is not None and (done[0].status, done[0].reason) == ("True", "Archived")
    back = archived_condition(done, False, True, 2, NOW, "task")
    assert back is not None and (back[0].status, back[0].reason) == ("False", "Unarchived")


def test_record_release_says_what_and_when() -> None:
    t = task(archived=True)
    st = status("completed", attempt=2, released=ReleasedStatus(workflows=[f"{t.name}-1"],
                                                                retry_pods=1))
    r = release(t, st, workflows=[f"{t.name}-2"])
    r.pods = ["p"]
    out = record_release(t, st, r, NOW)
    assert out.released is not None
    assert out.released.work_volume == f"{t.name}-work"
    assert out.released.work_volume_time == NOW and out.released.time == NOW
    assert out.released.workflows == [f"{t.name}-1", f"{t.name}-2"]
    assert out.released.retry_pods == 2
    assert [c.type for c in out.conditions or []] == ["Archived"]


# ----------------------------------------------------------------------------------- TTL


@pytest.mark.parametrize(("phase", "expected"), [("completed", -60.0), ("failed", -60.0),
                                                 ("stopped", None), ("running", None)])
def test_ttl_runs_once_completed_or_failed(phase: str, expected: float | None) -> None:
    done = NOW - datetime.timedelta(seconds=120)
    r = release(task(ttlSecondsAfterFinished=60), status(phase, completion_time=done))
    assert r.expire_in == expected


def test_ttl_default_and_own_and_pipeline_tasks() -> None:
    defaults = CleanupDefaults(ttl_seconds_after_finished=3600)
    assert ttl_seconds(task(), defaults) == 3600
    assert ttl_seconds(task(ttlSecondsAfterFinished=0), defaults) == 0
    assert ttl_seconds(task(), DEFAULTS) is None
    child = task(ttlSecondsAfterFinished=5, pipelineRef={"name": "p"})
    assert ttl_seconds(child, defaults) is None, "a pipeline's task goes with the pipeline"


def test_expires_in() -> None:
    assert expires_in("completed", NOW, 30, NOW) == 30
    assert expires_in("completed", None, 30, NOW) is None
    assert expires_in("completed", NOW, None, NOW) is None
