"""The task state machine against grids written out here: every pair, every cause, and its laws."""

from __future__ import annotations

import itertools

import pytest

from mltask_operator.api.v1alpha1.mltask import Phase
from mltask_operator.mltask_state_machine import (
    Cause,
    TransitionError,
    advance,
    allowed,
    begin_attempt,
)

#: Column order of the grids below.
PHASES = ("init", "running", "completed", "failed", "stopping", "stopped", "retry")

#: Cause.OBSERVED: may `current` (row) become `proposed` (column)? 1 yes, 0 no.
OBSERVED_GRID = {
    #             init running completed failed stopping stopped retry
    "init":      (1,   1,      1,        1,     1,       1,      1),
    "running":   (0,   1,      1,        1,     1,       1,      1),
    "completed": (0,   0,      1,        0,     0,       0,      0),
    "failed":    (0,   0,      0,        1,     0,       0,      0),
    "stopping":  (0,   0,      1,        1,     1,       1,      0),
    "stopped":   (0,   0,      0,        0,     0,       1,      0),
    "retry":     (0,   1,      1,        1,     1,       1,      1),
}

#: Cause.RETRY / Cause.CONTINUE: the status a new attempt starts in, per current status
#: (None: the request is refused). Note: no identity transitions for user requests.
NEW_ATTEMPT_GRID = {
    #             RETRY     CONTINUE
    "init":      (None,    None),
    "running":   (None,    None),
    "completed": ("retry", None),
    "failed":    ("retry", None),
    "stopping":  (None,    None),
    "stopped":   ("retry", "running"),
    "retry":     (None,    None),
}
CAUSE_COLUMN = {Cause.RETRY: 0, Cause.CONTINUE: 1}
TERMINAL = ("completed", "failed", "stopped")
PAIRS = list(itertools.product(PHASES, PHASES))


def test_grids_cover_every_phase() -> None:
    """A phase added to the enum without a row and column here fails this test."""
    assert set(PHASES) == {p.value for p in Phase}
    assert set(OBSERVED_GRID) == set(NEW_ATTEMPT_GRID) == set(PHASES)
    assert set(Cause) == {Cause.OBSERVED, *CAUSE_COLUMN}


@pytest.mark.parametrize(("current", "proposed"), PAIRS)
def test_observed_pair(current: str, proposed: str) -> None:
    ok = bool(OBSERVED_GRID[current][PHASES.index(proposed)])
    assert allowed(Phase(current), Phase(proposed), Cause.OBSERVED) is ok
    assert allowed(Phase(current), Phase(proposed)) is ok, "OBSERVED is the default cause"
    # an observation that is not allowed (e.g. a stale Workflow event) keeps the current status
    expected = proposed if ok else current
    assert advance(Phase(current), Phase(proposed), Cause.OBSERVED) == expected
    assert advance(Phase(current), Phase(proposed)) == expected


@pytest.mark.parametrize("cause", [Cause.RETRY, Cause.CONTINUE], ids=str)
@pytest.mark.parametrize(("current", "proposed"), PAIRS)
def test_new_attempt_pair(cause: Cause, current: str, proposed: str) -> None:
    target = NEW_ATTEMPT_GRID[current][CAUSE_COLUMN[cause]]
    ok = target == proposed
    assert allowed(Phase(current), Phase(proposed), cause) is ok
    if ok:
        assert advance(Phase(current), Phase(proposed), cause) == proposed
    else:
        with pytest.raises(TransitionError, match=f"^cannot {cause} a task that is {current}$"):
            advance(Phase(current), Phase(proposed), cause)


@pytest.mark.parametrize("cause", [Cause.RETRY, Cause.CONTINUE], ids=str)
@pytest.mark.parametrize("current", PHASES)
def test_begin_attempt(cause: Cause, current: str) -> None:
    target = NEW_ATTEMPT_GRID[current][CAUSE_COLUMN[cause]]
    if target is None:
        with pytest.raises(TransitionError, match=f"^cannot {cause} a task that is {current}$"):
            begin_attempt(Phase(current), cause)
    else:
        assert begin_attempt(Phase(current), cause) == target


@pytest.mark.parametrize("current", PHASES)
def test_begin_attempt_refuses_an_observation(current: str) -> None:
    with pytest.raises(TransitionError, match="needs retry or continue"):
        begin_attempt(Phase(current), Cause.OBSERVED)


def test_transition_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="cannot continue a task that is running"):
        begin_attempt(Phase.RUNNING, Cause.CONTINUE)


@pytest.mark.parametrize("terminal", TERMINAL)
def test_no_observed_sequence_leaves_a_terminal_status(terminal: str) -> None:
    """Exhaustive over every sequence of 1 to 4 observations (7 + 49 + 343 + 2401)."""
    checked = 0
    for length in range(1, 5):
        for seq in itertools.product(PHASES, repeat=length):
            status = Phase(terminal)
            for proposed in seq:
                status = advance(status, Phase(proposed))
            assert status == terminal, seq
            checked += 1
    assert checked == 7 + 49 + 343 + 2401


def test_stopping_never_goes_back_to_work_by_observation() -> None:
    """From stopping, any observed sequence ends stopping, stopped, completed or failed."""
    reached = set()
    for seq in itertools.product(PHASES, repeat=3):
        status = Phase.STOPPING
        for proposed in seq:
            status = advance(status, Phase(proposed))
        reached.add(str(status))
    assert reached == {"stopping", "stopped", "completed", "failed"}


MOVES = list(itertools.product([Cause.OBSERVED, Cause.RETRY, Cause.CONTINUE], PHASES))


def _paths(start: str, length: int) -> list[tuple[list[tuple[str, str]], str]]:
    """Every path of `length` accepted moves (cause, proposed) from `start`, with its end.
    A move is accepted when `advance` returns the proposed status without raising."""
    paths: list[tuple[list[tuple[str, str]], str]] = [([], start)]
    for _ in range(length):
        longer = []
        for path, status in paths:
            for cause, proposed in MOVES:
                try:
                    nxt = advance(Phase(status), Phase(proposed), cause)
                except TransitionError:
                    continue
                if nxt == proposed:
                    longer.append((path + [(str(cause), proposed)], str(nxt)))
        paths = longer
    return paths


def test_completed_runs_again_only_through_retry() -> None:
    # not by an observation, nor by continue, nor by a retry straight into running
    assert advance(Phase.COMPLETED, Phase.RUNNING) == Phase.COMPLETED
    for cause in (Cause.CONTINUE, Cause.RETRY):
        with pytest.raises(TransitionError):
            advance(Phase.COMPLETED, Phase.RUNNING, cause)
    # a retry starts the new attempt in `retry`; the new Workflow's pods then make it running
    status = begin_attempt(Phase.COMPLETED, Cause.RETRY)
    assert status == Phase.RETRY
    assert advance(status, Phase.RUNNING) == Phase.RUNNING
    # and that is the only way there in two moves; there is none in one
    assert [p for p, end in _paths("completed", 1) if end == "running"] == []
    assert [p for p, end in _paths("completed", 2) if end == "running"] == [
        [("retry", "retry"), ("observed", "running")]]


def test_stopped_continues_straight_to_running() -> None:
    assert [p for p, end in _paths("stopped", 1) if end == "running"] == [
        [("continue", "running")]]
