"""Safety-net resync without finalizers: every MLTASK_RESYNC_SECONDS, reconcile every MLTask and
Pipeline in the watched namespaces, whether or not an event arrived.

Kopf's own timers would do this, but a timer makes Kopf put its finalizer on every object
(nolar/kopf#1074), so that deleting a task hangs once the operator is uninstalled. Events drive
everything else (an upstream `fromTask` completing included, through a Kopf index in `main.py`);
this only catches what no event announced, such as a watch event lost on a broken connection.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from mltask_operator import metrics

log = logging.getLogger(__name__)

Lister = Callable[[str | None], Iterable[dict[str, Any]]]
Reconciler = Callable[[str, str], None]


def resync_once(kinds: Iterable[tuple[str, Lister, Reconciler]],
                namespaces: list[str], stop: threading.Event | None = None) -> int:
    """Reconcile every object of every kind once; an object that fails is logged and counted,
    the others go on. `namespaces` empty: the whole cluster. Returns how many reconciled."""
    done = 0
    for kind, list_objects, reconcile in kinds:
        for scope in namespaces or [None]:
            try:
                bodies = list(list_objects(scope))
            except Exception:
                log.exception("Failed to list %ss in %s for the resync", kind,
                              scope or "all namespaces")
                continue
            for body in bodies:
                if stop is not None and stop.is_set():
                    return done
                meta = body["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                try:
                    reconcile(meta["namespace"], meta["name"])
                    done += 1
                except Exception:
                    metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
                    log.exception("Resync of %s %s/%s failed", kind, meta["namespace"],
                                  meta["name"])
    return done


class Resync:
    """A daemon thread that runs `resync_once` every `interval` seconds until stopped."""

    def __init__(self, kinds: Iterable[tuple[str, Lister, Reconciler]], namespaces: list[str],
                 interval: float) -> None:
        self.kinds, self.namespaces, self.interval = list(kinds), namespaces, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="resync", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        # The first pass waits a full interval: at start Kopf's resume handlers reconcile all.
        while not self.stopped.wait(self.interval):
            count = resync_once(self.kinds, self.namespaces, self.stopped)
            log.debug("Resynced %d objects", count)
