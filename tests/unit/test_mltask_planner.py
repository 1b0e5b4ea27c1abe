"""The pure planner: (spec, status, whether the Workflow exists) -> the one action to take."""

from __future__ import annotations

import pytest

from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import MLTask, MLTaskStatus, StepStatus
from mltask_operator.mltask_planner import Action, Plan, plan, retry_requested
from mltask_operator.mltask_state_machine import Cause, begin_attempt

ALL = ("init", "running", "completed", "failed", "stopping", "stopped", "retry")
ACTIVE = ("init", "running", "retry", "stopping")
TERMINAL = ("completed", "failed", "stopped")


def task(*, suspend: bool = False, retry_generation: int = 0) -> MLTask:
    body = example("training")
    body["metadata"].update(namespace="ml", uid="u", generation=1)
    body["spec"].update(suspend=suspend, retryGeneration=retry_generation)
    return MLTask.model_validate(body)


def status(phase: str, attempt: int = 1, *, observed_retry: int | None = 0,
           done: tuple[str, ...] = (), failed: str | None = None) -> MLTaskStatus:
    """A status at `attempt`; `done` steps succeeded, `failed` ended Failed."""
    steps = [StepStatus(name=s, phase="Succeeded", attempt=attempt) for s in done]
    if failed:
        steps.append(StepStatus(name=failed, phase="Failed", attempt=attempt))
    return MLTaskStatus(status=phase, attempt=attempt, observed_retry_generation=observed_retry,
                        steps=steps or None)


# ------------------------------------------------------------------------------- START


@pytest.mark.parametrize("exists", [False, True])
def test_start_the_first_attempt(exists: bool) -> None:
    p = plan(task(), MLTaskStatus(), workflow_exists=exists)
    assert p == Plan(Action.START, attempt=1, start_at="download")


def test_start_ignores_the_retry_generation_the_task_was_created_with() -> None:
    """No attempt yet: a retryGeneration set at creation is a baseline, not a request."""
    p = plan(task(retry_generation=5), MLTaskStatus(), workflow_exists=False)
    assert p.action == Action.START and p.attempt == 1


# ------------------------------------------------------------------------------- RETRY


@pytest.mark.parametrize("phase", TERMINAL)
def test_retry_a_finished_task_from_the_first_step(phase: str) -> None:
    st = status(phase, attempt=2, observed_retry=1, done=("download",), failed="run")
    p = plan(task(retry_generation=2), st, workflow_exists=True)
    assert p == Plan(Action.RETRY, attempt=3, start_at="download")
    assert p.cause == Cause.RETRY
    assert begin_attempt(st.status, p.cause) == "retry"


@pytest.mark.parametrize("phase", TERMINAL)
def test_no_retry_without_a_newer_retry_generation(phase: str) -> None:
    st = status(phase, observed_retry=2)
    assert plan(task(retry_generation=2), st, workflow_exists=True).action != Action.RETRY


def test_retry_requested_needs_a_baseline_and_an_increase() -> None:
    assert retry_requested(task(retry_generation=1), status("failed", observed_retry=0))
    assert not retry_requested(task(retry_generation=1), status("failed", observed_retry=1))
    assert not retry_requested(task(retry_generation=1), status("failed", observed_retry=None))


@pytest.mark.parametrize("phase", TERMINAL)
def test_retry_while_suspended_waits(phase: str) -> None:
    """Retry and stop both asked: nothing starts until suspend is cleared, then the retry;
    meanwhile the task says the retry is held (HOLD_RETRY), so the user knows why."""
    st = status(phase, observed_retry=0, done=("download",))
    assert plan(task(suspend=True, retry_generation=1), st, True) == Plan(Action.HOLD_RETRY)
    assert plan(task(suspend=True, retry_generation=1), st, False) == Plan(Action.HOLD_RETRY)
    assert plan(task(retry_generation=1), st, True) == Plan(Action.RETRY, attempt=2,
                                                            start_at="download")


# ---------------------------------------------------------------------------- CONTINUE


@pytest.mark.parametrize(("done", "failed", "start_at"), [
    ((), "download", "download"),
    (("download",), "run", "run"),
    (("download", "run"), "upload", "upload"),
    (("download", "run"), None, "upload"),
    (("download", "run", "upload"), None, "upload"),
])
def test_continue_a_stopped_task_at_the_step_that_did_not_finish(
        done: tuple[str, ...], failed: str | None, start_at: str) -> None:
    st = status("stopped", attempt=2, done=done, failed=failed)
    p = plan(task(), st, workflow_exists=True)
    assert p == Plan(Action.CONTINUE, attempt=3, start_at=start_at)
    assert p.cause == Cause.CONTINUE
    assert begin_attempt(st.status, p.cause) == "running"


def test_continue_a_task_created_suspended() -> None:
    """Created with suspend: true (stopped at attempt 0), then suspend set back to false."""
    p = plan(task(), MLTaskStatus(status="stopped"), workflow_exists=False)
    assert p == Plan(Action.CONTINUE, attempt=1, start_at="download")


def test_continue_of_a_stopped_task_also_when_retry_was_already_seen() -> None:
    st = status("stopped", attempt=1, observed_retry=3, done=("download",))
    assert plan(task(retry_generation=3), st, True).action == Action.CONTINUE


# ------------------------------------------------------------------------------ ENSURE


@pytest.mark.parametrize(("phase", "done", "start_at"), [
    ("init", (), "download"),
    ("running", ("download",), "run"),
    ("retry", (), "download"),
    ("running", ("download", "run"), "upload"),
])
def test_ensure_recreates_the_current_attempts_missing_workflow(
        phase: str, done: tuple[str, ...], start_at: str) -> None:
    st = status(phase, attempt=4, done=done)
    assert plan(task(), st, workflow_exists=False) == Plan(Action.ENSURE, attempt=4,
                                                           start_at=start_at)


# -------------------------------------------------------------------------------- STOP


@pytest.mark.parametrize("phase", ["init", "running", "retry"])
def test_stop_asks_argo_to_shut_the_workflow_down(phase: str) -> None:
    assert plan(task(suspend=True), status(phase), workflow_exists=True) == Plan(Action.STOP)


# --------------------------------------------------------------- STOP_WITHOUT_WORKFLOW


@pytest.mark.parametrize("phase", ["init", "running", "retry"])
def test_stop_without_workflow_when_there_is_none(phase: str) -> None:
    assert plan(task(suspend=True), status(phase), workflow_exists=False) == \
        Plan(Action.STOP_WITHOUT_WORKFLOW)


@pytest.mark.parametrize("suspend", [True, False])
def test_stopping_whose_workflow_vanished_ends_stopped(suspend: bool) -> None:
    """Stopping waits for Argo to end the Workflow; if the Workflow is gone (deleted by hand,
    garbage collected) nothing will ever end it, so the stop completes here. Without suspend
    (continued while stopping) the next reconcile then continues the stopped task."""
    st = status("stopping", done=("download",))
    assert plan(task(suspend=suspend), st, workflow_exists=False) == \
        Plan(Action.STOP_WITHOUT_WORKFLOW)


@pytest.mark.parametrize("exists", [False, True])
def test_stop_without_workflow_for_a_task_created_suspended(exists: bool) -> None:
    assert plan(task(suspend=True), MLTaskStatus(), exists) == Plan(Action.STOP_WITHOUT_WORKFLOW)


# ------------------------------------------------------------------------ IGNORE_RETRY


@pytest.mark.parametrize("phase", ACTIVE)
@pytest.mark.parametrize("exists", [False, True])
def test_retry_of_an_active_task_is_ignored(phase: str, exists: bool) -> None:
    st = status(phase, observed_retry=0)
    assert plan(task(retry_generation=1), st, exists) == Plan(Action.IGNORE_RETRY)


def test_ignored_retry_outranks_a_stop_request() -> None:
    """The handler records the ignored retry first; the next reconcile then stops."""
    st = status("running", observed_retry=0)
    assert plan(task(suspend=True, retry_generation=1), st, True).action == \
        Action.IGNORE_RETRY
    st_seen = status("running", observed_retry=1)
    assert plan(task(suspend=True, retry_generation=1), st_seen, True).action == Action.STOP


# ----------------------------------------------------------------------------- OBSERVE


@pytest.mark.parametrize("phase", ["init", "running", "retry", "stopping"])
def test_observe_an_active_task_whose_workflow_exists(phase: str) -> None:
    assert plan(task(), status(phase), workflow_exists=True) == Plan(Action.OBSERVE)


@pytest.mark.parametrize("phase", ["completed", "failed"])
@pytest.mark.parametrize("exists", [False, True])
def test_observe_a_finished_task(phase: str, exists: bool) -> None:
    """No new attempt without a request, even if the Workflow is gone (e.g. garbage collected)."""
    assert plan(task(), status(phase), exists) == Plan(Action.OBSERVE)


@pytest.mark.parametrize("phase", ["stopping", "stopped", "completed", "failed"])
def test_observe_while_suspended_once_stopping_or_finished(phase: str) -> None:
    assert plan(task(suspend=True), status(phase), True) == Plan(Action.OBSERVE)


def test_observe_a_task_stopped_before_it_started() -> None:
    assert plan(task(suspend=True), MLTaskStatus(status="stopped"), False) == \
        Plan(Action.OBSERVE)


# ------------------------------------------------------------------------------ totality


@pytest.mark.parametrize("phase", ALL)
@pytest.mark.parametrize("suspend", [False, True])
@pytest.mark.parametrize("retry", [False, True])
@pytest.mark.parametrize("exists", [False, True])
def test_every_new_attempt_is_one_the_state_machine_allows(phase: str, suspend: bool,
                                                           retry: bool, exists: bool) -> None:
    """Whatever the inputs, a RETRY or CONTINUE plan starts from a status it may start from,
    and only START, RETRY and CONTINUE move to a new attempt number."""
    st = status(phase, attempt=2, observed_retry=0, done=("download",))
    p = plan(task(suspend=suspend, retry_generation=int(retry)), st, exists)
    if p.action in (Action.RETRY, Action.CONTINUE):
        begin_attempt(st.status, p.cause)  # raises TransitionError if not allowed
        assert p.attempt == 3 and not suspend
    elif p.action == Action.ENSURE:
        assert p.attempt == 2 and not exists
    else:
        assert p.attempt == 0 and p.start_at is None
