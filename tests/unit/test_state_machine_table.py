"""The task state machine: every (current, proposed) pair against a table written out here."""

from __future__ import annotations

import itertools

import pytest

from mltask_operator.api.v1alpha1.mltask import Phase
from mltask_operator.state_machine import (
    Cause,
    TransitionError,
    advance,
    allowed,
    begin_attempt,
)

IN, R, C, F, SG, SD, RT = ("init", "running", "completed", "failed", "stopping", "stopped",
                          "retry")
ALL = [IN, R, C, F, SG, SD, RT]

#: Observed transitions (Workflow events, stop requests): current -> the statuses it may enter.
OBSERVED = {
    IN: {IN, R, RT, C, F, SG, SD},
    R: {R, RT, C, F, SG, SD},
    RT: {RT, R, C, F, SG, SD},
    SG: {SG, SD, C, F},
    C: {C},
    F: {F},
    SD: {SD},
}
#: User actions that start a new attempt: current -> the status the attempt starts in.
RETRY = {F: RT, SD: RT, C: RT}
CONTINUE = {SD: R}


@pytest.mark.parametrize(("current", "proposed"), list(itertools.product(ALL, ALL)))
def test_observed_pair(current: str, proposed: str) -> None:
    ok = proposed in OBSERVED[current]
    assert allowed(Phase(current), Phase(proposed)) is ok
    # a disallowed observation (a stale event) keeps the current status
    assert advance(Phase(current), Phase(proposed)) == (proposed if ok else current)


@pytest.mark.parametrize(("cause", "table"), [(Cause.RETRY, RETRY),
                                              (Cause.CONTINUE, CONTINUE)])
@pytest.mark.parametrize(("current", "proposed"), list(itertools.product(ALL, ALL)))
def test_new_attempt_pair(cause: Cause, table: dict[str, str], current: str,
                          proposed: str) -> None:
    ok = table.get(current) == proposed
    assert allowed(Phase(current), Phase(proposed), cause) is ok
    if ok:
        assert advance(Phase(current), Phase(proposed), cause) == proposed
    else:
        with pytest.raises(TransitionError):
            advance(Phase(current), Phase(proposed), cause)


@pytest.mark.parametrize("current", ALL)
def test_begin_attempt(current: str) -> None:
    for cause, table in ((Cause.RETRY, RETRY), (Cause.CONTINUE, CONTINUE)):
        if current in table:
            assert begin_attempt(Phase(current), cause) == table[current]
        else:
            with pytest.raises(TransitionError, match=f"cannot {cause} a task that is {current}"):
                begin_attempt(Phase(current), cause)
    with pytest.raises(TransitionError):
        begin_attempt(Phase(current), Cause.OBSERVED)


@pytest.mark.parametrize("terminal", [C, F, SD])
def test_no_observed_sequence_leaves_a_terminal_status(terminal: str) -> None:
    for seq in itertools.product(ALL, repeat=4):
        status = Phase(terminal)
        for proposed in seq:
            status = advance(status, Phase(proposed))
        assert status == terminal, seq


def test_completed_runs_again_only_through_retry() -> None:
    assert advance(Phase.COMPLETED, Phase.RUNNING) == C
    with pytest.raises(TransitionError):
        advance(Phase.COMPLETED, Phase.RUNNING, Cause.CONTINUE)
    status = begin_attempt(Phase.COMPLETED, Cause.RETRY)
    assert status == RT
    assert advance(status, Phase.RUNNING) == R
