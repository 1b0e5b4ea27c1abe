"""Reconcilers (the one place that does I/O for a kind), and what they share: the clock, and
when a status counts as changed."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any, Protocol

Clock = Callable[[], datetime.datetime]
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class _Status(Protocol):
    duration: str | None

    def model_copy(self, *, update: dict[str, Any] | None = None,
                   deep: bool = False) -> Any: ...


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def seconds(duration: str | None) -> int | None:
    """`1h2m3s` (status.duration) -> 3723."""
    m = _DURATION.match(duration or "")
    if not duration or not m:
        return None
    h, mi, s = (int(g or 0) for g in m.groups())
    return h * 3600 + mi * 60 + s


def unchanged(new: _Status, prev: _Status) -> bool:
    """Whether writing `new` over `prev` would change nothing worth a write. The elapsed time of
    an active object (`duration`) grows by itself: it counts as a change only once it has
    grown by a minute, or a tenth of itself when that is more."""
    if new.model_copy(update={"duration": prev.duration}) != prev:
        return False
    if new.duration == prev.duration:
        return True
    before, after = seconds(prev.duration), seconds(new.duration)
    if before is None or after is None:
        return False
    return abs(after - before) < max(60, before // 10)
