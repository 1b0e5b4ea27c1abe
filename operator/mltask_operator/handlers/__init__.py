"""Reconcilers (the one place that does I/O for a kind), and what they share: the clock, and
when a status counts as changed."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, Protocol

from mltask_operator.status import parse_duration

Clock = Callable[[], datetime.datetime]


class _Status(Protocol):
    duration: str | None

    def model_copy(self, *, update: dict[str, Any] | None = None,
                   deep: bool = False) -> Any: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def unchanged(new: _Status, prev: _Status) -> bool:
    """Whether writing `new` over `prev` would change nothing worth a write. The elapsed time of
    an active object (`duration`) grows by itself: it counts as a change only once it has
    grown by a minute, or a tenth of itself when that is more."""
    if new.model_copy(update={"duration": prev.duration}) != prev:
        return False
    if new.duration == prev.duration:
        return True
    before, after = parse_duration(prev.duration), parse_duration(new.duration)
    if before is None or after is None:
        return False
    return abs(after - before) < max(60, before // 10)
