"""Pure helpers the MLTask and Pipeline statuses share: conditions (metav1.Condition upsert,
the conditions of each phase, Archived), the Event reason of each transition, and the times
and durations status carries."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import overload

from mltask_operator.api.v1alpha1.common import MAX_MESSAGE_LENGTH, Condition
from mltask_operator.api.v1alpha1.mltask import Phase

ARCHIVED = "Archived"
#: The reason of the Event a status transition records, by the status entered, for both
#: kinds; entering init or running (and a new step) is StatusChanged.
EVENT_REASONS = {
    Phase.FAILED: "Failed",
    Phase.COMPLETED: "Completed",
    Phase.STOPPED: "Stopped",
    Phase.RETRY: "Retrying",
    Phase.STOPPING: "Stopping",
}


@dataclass(frozen=True)
class Transition:
    """The Event a status write records: whether it is a Warning, its reason, its message."""

    warning: bool
    reason: str
    message: str


def transition(entered: Phase, message: str, *, warning: bool) -> Transition:
    return Transition(warning, EVENT_REASONS.get(entered, "StatusChanged"), message)


@overload
def bounded(text: str, limit: int) -> str: ...
@overload
def bounded(text: None, limit: int) -> None: ...
@overload
def bounded(text: str | None, limit: int) -> str | None: ...


def bounded(text: str | None, limit: int) -> str | None:
    """`text` cut to at most `limit` characters (what a schema's maxLength counts), saying how
    much was cut, so that no status write is refused for a long message."""
    if text is None or len(text) <= limit:
        return text
    tail = f"... ({len(text) - limit} more characters cut)"
    while True:  # the note's own length changes the count it reports
        keep = max(limit - len(tail), 0)
        note = f"... ({len(text) - keep} more characters cut)"
        if len(note) == len(tail):
            return (text[:keep] + note)[:limit]
        tail = note


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


CONDITION_TYPES = ("Succeeded", "Running", "Stopped", "Failed", "Ready")


def set_condition(conditions: list[Condition], type_: str, status: str, reason: str,
                  message: str, generation: int | None,
                  now: datetime.datetime) -> list[Condition]:
    """Upsert a condition; lastTransitionTime moves only when its status changes."""
    message = bounded(message, MAX_MESSAGE_LENGTH)
    out: list[Condition] = []
    found = False
    for c in conditions:
        if c.type == type_:
            found = True
            changed = c.status != status
            out.append(Condition(
                type=type_, status=status, reason=reason, message=message,
                last_transition_time=now if changed else c.last_transition_time,
                observed_generation=generation,
            ))
        else:
            out.append(c)
    if not found:
        out.append(Condition(type=type_, status=status, reason=reason, message=message,
                             last_transition_time=now, observed_generation=generation))
    return out


_REASONS = {
    Phase.INIT: "Initializing",
    Phase.RUNNING: "Running",
    Phase.RETRY: "Retrying",
    Phase.STOPPING: "Stopping",
    Phase.STOPPED: "Stopped",
    Phase.COMPLETED: "Completed",
    Phase.FAILED: "Failed",
}


def conditions_for(phase: Phase, message: str, prev: list[Condition] | None,
                   generation: int | None, now: datetime.datetime,
                   reason: str | None = None) -> list[Condition]:
    reason = reason or _REASONS[phase]
    conds = list(prev or [])

    def put(type_: str, status: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, generation, now)

    put("Succeeded", "True" if phase == Phase.COMPLETED
        else "False" if phase in (Phase.FAILED, Phase.STOPPED) else "Unknown")
    put("Running", "True" if phase in (Phase.RUNNING, Phase.RETRY, Phase.STOPPING) else "False")
    put("Stopped", "True" if phase == Phase.STOPPED else "False")
    put("Failed", "True" if phase == Phase.FAILED else "False")
    put("Ready", "True" if phase == Phase.COMPLETED else "False")
    return conds


_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(duration: str | None) -> int | None:
    """The inverse of format_duration: `1h2m3s` -> 3723; None if it is not one."""
    m = _DURATION.match(duration or "")
    if not duration or not m:
        return None
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def archived_condition(conditions: list[Condition] | None, archived: bool, ended: bool,
                       generation: int | None, now: datetime.datetime,
                       what: str) -> list[Condition] | None:
    """The Archived condition: True once archived and ended (what it held released), False
    while an archived object is still stopping, and after it was unarchived; absent for an
    object never archived."""
    had = any(c.type == ARCHIVED for c in conditions or [])
    if not archived and not had:
        return conditions
    if archived and ended:
        state, reason, message = "True", "Archived", (
            f"Archived: the {what} keeps its status, outputs and metrics; its Workflows, pods "
            "and working volume were released")
    elif archived:
        state, reason, message = "False", "Stopping", f"Archiving: the {what} is stopping first"
    else:
        state, reason, message = "False", "Unarchived", f"Unarchived: the {what} can be " \
            "retried and continued again"
    return set_condition(list(conditions or []), ARCHIVED, state, reason, message, generation,
                         now)


