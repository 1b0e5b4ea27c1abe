"""The task state machine: which `status` transitions are allowed, as a pure table.

Terminal states (completed, failed, stopped) are left only by starting a new attempt
(retry or continue); a stale observation can never move a finished task back to running.
"""

from __future__ import annotations

from enum import StrEnum

from mltask_operator.api.v1alpha1.mltask import Phase


class Cause(StrEnum):
    """Why the status may change."""

    OBSERVED = "observed"   # the Workflow was seen in a new state
    RETRY = "retry"         # the user asked for a new attempt from the first step
    CONTINUE = "continue"   # the user asked to resume a stopped task


P = Phase
#: Transitions caused by observing the Workflow (and stop requests).
OBSERVED: dict[Phase, frozenset[Phase]] = {
    P.INIT: frozenset({P.RUNNING, P.RETRY, P.COMPLETED, P.FAILED, P.STOPPING, P.STOPPED}),
    P.RUNNING: frozenset({P.RETRY, P.COMPLETED, P.FAILED, P.STOPPING, P.STOPPED}),
    P.RETRY: frozenset({P.RUNNING, P.COMPLETED, P.FAILED, P.STOPPING, P.STOPPED}),
    P.STOPPING: frozenset({P.STOPPED, P.COMPLETED, P.FAILED}),
    P.COMPLETED: frozenset(),
    P.FAILED: frozenset(),
    P.STOPPED: frozenset(),
}
#: Transitions that start a new attempt, by the user's request.
NEW_ATTEMPT: dict[Cause, dict[Phase, Phase]] = {
    Cause.RETRY: {P.FAILED: P.RETRY, P.STOPPED: P.RETRY, P.COMPLETED: P.RETRY},
    Cause.CONTINUE: {P.STOPPED: P.RUNNING},
}


class TransitionError(ValueError):
    """A transition the state machine does not allow."""


def allowed(current: Phase, proposed: Phase, cause: Cause = Cause.OBSERVED) -> bool:
    if current == proposed and cause == Cause.OBSERVED:
        return True
    if cause == Cause.OBSERVED:
        return proposed in OBSERVED[current]
    return NEW_ATTEMPT[cause].get(current) == proposed


def advance(current: Phase, proposed: Phase, cause: Cause = Cause.OBSERVED) -> Phase:
    """The next status: `proposed` if allowed; an observed transition that is not allowed
    (e.g. a stale event after completion) keeps `current`; a disallowed request raises."""
    if allowed(current, proposed, cause):
        return proposed
    if cause == Cause.OBSERVED:
        return current
    raise TransitionError(f"cannot {cause} a task that is {current}")


def begin_attempt(current: Phase, cause: Cause) -> Phase:
    """The status a new attempt starts in (retry or running), or TransitionError."""
    if cause == Cause.OBSERVED:
        raise TransitionError("a new attempt needs retry or continue")
    target = NEW_ATTEMPT[cause].get(current)
    if target is None:
        raise TransitionError(f"cannot {cause} a task that is {current}")
    return target
