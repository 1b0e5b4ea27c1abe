"""Reconcilers (the one place that does I/O for a kind), and what they share: the clock, when a
status counts as changed, and the status write with its Event."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any, Protocol

from mltask_operator import metrics
from mltask_operator.cache import Cache
from mltask_operator.clients.kube import Kube
from mltask_operator.kinds import MLTASK, Kind
from mltask_operator.status_common import Transition, parse_duration

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


class _Status(Protocol):
    status: Any
    duration: str | None

    def model_copy(self, *, update: dict[str, Any] | None = None,
                   deep: bool = False) -> Any: ...

    def to_k8s(self) -> dict[str, Any]: ...


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


def write_status(kube: Kube, cache: Cache, kind: Kind, body: dict[str, Any], prev: _Status,
                 new: _Status, event: Transition | None) -> dict[str, Any]:
    """Replace the object's status if it changed (conditional on the resourceVersion read),
    then record `event`, the transition's Event, if there is one; returns the body as
    written (`body` itself when nothing changed)."""
    if unchanged(new, prev) and body.get("status"):
        return body
    out = dict(body)
    out["status"] = new.to_k8s()
    written = cache.wrote(kind.kind, body, kube.replace_status(kind, out))
    if event is not None:
        meta = body["metadata"]
        kube.event(body, "Warning" if event.warning else "Normal", event.reason, event.message)
        log.info("%s %s/%s: %s", kind.kind, meta["namespace"], meta["name"], event.message)
        counter = metrics.TRANSITIONS if kind == MLTASK else metrics.PIPELINE_TRANSITIONS
        counter.labels(status=str(new.status)).inc()
    return written
