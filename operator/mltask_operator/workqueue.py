"""The queue of objects to reconcile and the threads that drain it (client-go's workqueue).

A key is in the queue at most once, and never handed to two workers at once: a burst of events
for one object is one reconcile, and one object's reconciles never overlap. A key added while
a worker holds it runs again once the worker is done. A reconcile that raises is retried with
an exponential backoff per key; one that succeeds resets the key's backoff.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

Key = Hashable


class WorkQueue:
    def __init__(self, base_delay: float = 0.5, max_delay: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.base_delay, self.max_delay, self.clock = base_delay, max_delay, clock
        self._ready: deque[Key] = deque()
        self._queued: set[Key] = set()        # in _ready
        self._waiting: dict[Key, float] = {}  # key -> when it is due (a retry's backoff)
        self._heap: list[tuple[float, int, Key]] = []
        self._seq = itertools.count()
        self._active: set[Key] = set()        # held by a worker
        self._again: set[Key] = set()         # added while held: runs again after
        self._failures: dict[Key, int] = {}
        self._cond = threading.Condition()
        self._shutdown = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._queued) + len(self._waiting)

    def add(self, key: Key) -> None:
        """Reconcile `key` as soon as a worker is free (once, however often it is added)."""
        with self._cond:
            if key in self._active:
                self._again.add(key)
            elif key not in self._queued:
                self._waiting.pop(key, None)  # due now, not at the end of its backoff
                self._queued.add(key)
                self._ready.append(key)
                self._cond.notify()

    def add_after(self, key: Key, delay: float) -> None:
        with self._cond:
            if key in self._queued or key in self._active:
                return
            due = self.clock() + delay
            if key in self._waiting and self._waiting[key] <= due:
                return
            self._waiting[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cond.notify()

    def retry(self, key: Key) -> float:
        """Add `key` again after its backoff: base_delay doubled per failure in a row, at most
        max_delay. Returns the delay."""
        with self._cond:
            n = self._failures.get(key, 0)
            self._failures[key] = n + 1
        delay = min(self.base_delay * 2.0 ** n, self.max_delay)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        """The key's reconcile succeeded: its next failure starts the backoff afresh."""
        with self._cond:
            self._failures.pop(key, None)

    def failing(self, key: Key) -> bool:
        with self._cond:
            return key in self._failures

    def get(self, timeout: float | None = None) -> Key | None:
        """The next key to reconcile, now held by the caller until `done(key)`; None on
        shutdown or timeout."""
        deadline = None if timeout is None else self.clock() + timeout
        with self._cond:
            while True:
                if self._shutdown:
                    return None
                self._promote()
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._active.add(key)
                    return key
                wait = self._heap[0][0] - self.clock() if self._heap else None
                if deadline is not None:
                    left = deadline - self.clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(None if wait is None else max(wait, 0.001))

    def done(self, key: Key) -> None:
        with self._cond:
            self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                if key not in self._queued:
                    self._waiting.pop(key, None)
                    self._queued.add(key)
                    self._ready.append(key)
                    self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()

    def _promote(self) -> None:
        """Move the keys whose backoff is over to the ready queue."""
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._waiting.get(key) != due:
                continue  # added again since, or due earlier
            del self._waiting[key]
            if key in self._active:
                self._again.add(key)
            elif key not in self._queued:
                self._queued.add(key)
                self._ready.append(key)


def run_workers(queue: WorkQueue, count: int, process: Callable[[Any], float | None],
                name: str = "reconcile") -> list[threading.Thread]:
    """Start `count` daemon threads that take keys from `queue` and call `process`; a key whose
    process raises is retried after its backoff, one that returns is forgotten, and queued
    again after the seconds it returns, if any (controller-runtime's RequeueAfter)."""

    def loop() -> None:
        while True:
            key = queue.get()
            if key is None:
                return
            try:
                again = process(key)
            except Exception:
                queue.done(key)
                delay = queue.retry(key)
                log.exception("Reconcile of %s failed; retrying in %.1fs", _show(key), delay)
            else:
                queue.done(key)
                queue.forget(key)
                if again is not None:
                    queue.add_after(key, again)

    threads = [threading.Thread(target=loop, name=f"{name}-{i}", daemon=True)
               for i in range(count)]
    for t in threads:
        t.start()
    return threads


def _show(key: Key) -> str:
    if isinstance(key, tuple) and len(key) == 3:
        kind, namespace, name = key
        return f"{kind} {namespace}/{name}"
    return str(key)
