"""Reconcilers (the one place that does I/O for a kind), and what they share: one reconcile
at a time per object, retried on write conflicts."""

from __future__ import annotations

import datetime
import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from mltask_operator.clients.kube import Conflict

log = logging.getLogger(__name__)
Clock = Callable[[], datetime.datetime]
MAX_CONFLICT_RETRIES = 8
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def reconcile_exclusively(kind: str, namespace: str, name: str,
                          once: Callable[[], None]) -> None:
    """Run `once` for one object, never concurrently with itself; on a write conflict read
    again and recompute, up to MAX_CONFLICT_RETRIES times."""
    with _locks[(kind, namespace, name)]:
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                once()
                return
            except Conflict as e:
                log.debug("Retrying %s %s/%s after conflict: %s", kind, namespace, name, e)
        raise Conflict(f"{kind} {namespace}/{name}: too many write conflicts")
