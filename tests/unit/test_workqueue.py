"""The work queue: one entry per key, never two workers on one key, retries with backoff."""

from __future__ import annotations

import threading
import time

from mltask_operator.workqueue import WorkQueue, run_workers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_key_added_many_times_is_reconciled_once() -> None:
    q = WorkQueue()
    for _ in range(5):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert [q.get(timeout=0), q.get(timeout=0), q.get(timeout=0)] == ["a", "b", None]


def test_a_key_added_while_held_runs_again_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(timeout=0) is None, "never handed to a second worker while held"
    q.done("a")
    assert q.get(timeout=0) == "a", "once more, however often it was added meanwhile"
    q.done("a")
    assert q.get(timeout=0) is None


def test_retries_back_off_exponentially_and_forget_resets() -> None:
    clock = Clock()
    q = WorkQueue(base_delay=1, max_delay=5, clock=clock)
    delays = []
    for _ in range(5):
        delays.append(q.retry("a"))
        assert q.get(timeout=0) is None, "not before its backoff is over"
        clock.now += delays[-1]
        assert q.get(timeout=0) == "a"
        q.done("a")
    assert delays == [1, 2, 4, 5, 5]
    assert q.failing("a")
    q.forget("a")
    assert not q.failing("a") and q.retry("a") == 1


def test_add_cuts_a_backoff_short() -> None:
    clock = Clock()
    q = WorkQueue(base_delay=10, clock=clock)
    q.retry("a")
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.done("a")
    clock.now += 10
    assert q.get(timeout=0) is None, "the backoff's entry was superseded"


def test_workers_process_concurrently_but_never_one_key_twice_at_once() -> None:
    q = WorkQueue(base_delay=0.01)
    running: set[str] = set()
    overlaps: list[str] = []
    seen: list[str] = []
    lock = threading.Lock()
    failed_once: set[str] = set()

    def process(key: str) -> None:
        with lock:
            if key in running:
                overlaps.append(key)
            running.add(key)
        time.sleep(0.005)
        with lock:
            running.discard(key)
            seen.append(key)
        if key == "flaky" and key not in failed_once:
            failed_once.add(key)
            raise RuntimeError("transient")

    run_workers(q, 4, process)
    for i in range(200):
        q.add(f"k{i % 10}")
    q.add("flaky")
    deadline = time.monotonic() + 10
    while (len(q) or seen.count("flaky") < 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    q.shutdown()
    assert not overlaps
    assert {f"k{i}" for i in range(10)} <= set(seen)
    assert seen.count("flaky") == 2, "a reconcile that raised is retried"
    assert not q.failing("flaky"), "and forgotten once it succeeded"
