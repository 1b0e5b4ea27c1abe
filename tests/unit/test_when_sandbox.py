"""Unit tests of a hostile `when` (issue 26, findings 1 and 2): the operator evaluates it in a
child process bounded in memory and time (`when_sandbox`), and any evaluation failure, a
budget of cel-cpp's included, fails the task with WhenError instead of the operator or the
reconcile. Real child processes, real cel-cpp; no cluster."""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.hostile_when import BUSY, ITERATIONS, LONG, MEMORY_BOMB
from harness.pipelines import pipeline_example
from mltask_operator import pipeline_when, when_sandbox
from mltask_operator.api.v1alpha1.pipeline import MAX_VALUE_LENGTH, MAX_WHEN_LENGTH, Pipeline
from mltask_operator.pipeline_planner import plan_pipeline

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
PARAMS = {"s": LONG}

TRAIN = {"train": {"status": "completed", "metrics": {"accuracy": 0.93},
                   "outputs": {"uri": "s3://m/model.joblib"}}}


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@pytest.fixture
def sandbox() -> Iterator[when_sandbox.Sandbox]:
    sb = when_sandbox.Sandbox()
    yield sb
    sb.close()


def test_the_hostile_expressions_fit_in_a_when() -> None:
    assert len(LONG) == MAX_VALUE_LENGTH
    for expression in (MEMORY_BOMB, BUSY, ITERATIONS):
        assert len(expression) <= MAX_WHEN_LENGTH
        assert pipeline_when.check(expression) is None, expression


def test_it_gives_what_the_expression_gives(sandbox: when_sandbox.Sandbox) -> None:
    ev = sandbox.evaluate
    assert ev("tasks.train.metrics.accuracy >= 0.9", TRAIN, {}) == pipeline_when.Outcome(True)
    assert ev("tasks.train.metrics.accuracy >= params.min", TRAIN,
              {"min": 0.95}) == pipeline_when.Outcome(False)
    assert ev("params.n > 1 && params.on", {}, {"n": 2, "on": True}).value is True
    assert ev("tasks.train.outputs.uri.endsWith('.joblib')", TRAIN, {}).value is True
    missing = ev("tasks.train.metrics.loss < 0.1", TRAIN, {})
    assert missing == pipeline_when.evaluate("tasks.train.metrics.loss < 0.1", TRAIN, {})
    assert missing.value is None and 'Key not found in map : "loss"' in (missing.error or "")
    assert sandbox.starts == 1, "one child serves every evaluation"


def test_a_memory_bomb_is_an_error_and_the_operator_does_not_grow(
        sandbox: when_sandbox.Sandbox) -> None:
    sandbox.evaluate("true", {}, {})        # the child runs; the parent's imports are done
    before = _rss_mib()
    out = sandbox.evaluate(MEMORY_BOMB, {}, PARAMS)
    assert out == pipeline_when.Outcome(None, "evaluation exceeded its memory budget (128 MiB)")
    assert _rss_mib() - before < 16, "the parent's memory grew"
    assert sandbox.evaluate("params.s.size() == 1024", {}, PARAMS).value is True, \
        "a new child answers after the one that ran out of memory"


def test_a_busy_expression_is_an_error_within_its_time_budget(
        sandbox: when_sandbox.Sandbox) -> None:
    sandbox.evaluate("true", {}, {})
    ticks = 0
    done = threading.Event()

    def tick() -> None:
        nonlocal ticks
        while not done.wait(0.01):
            ticks += 1

    ticker = threading.Thread(target=tick)
    ticker.start()
    started = time.monotonic()
    try:
        out = sandbox.evaluate(BUSY, {}, PARAMS)
    finally:
        done.set()
        ticker.join()
    took = time.monotonic() - started
    assert out == pipeline_when.Outcome(None, "evaluation exceeded its time budget (1 s)")
    # Tried twice (the machine may have been busy the first time), each killed after 1 s.
    assert 2 <= took < 10
    assert ticks >= 20, "the parent's other threads were held while it waited"
    assert sandbox.starts == 2 and sandbox.pid is None, "both children were killed"
    started = time.monotonic()
    assert sandbox.evaluate(BUSY, {}, PARAMS) == out
    assert time.monotonic() - started < 0.5, "the outcome is remembered, not evaluated again"
    assert sandbox.evaluate("params.s.size() == 1024", {}, PARAMS).value is True
    assert sandbox.starts == 3


def test_an_expression_over_cel_cpp_iteration_budget_is_an_error(
        sandbox: when_sandbox.Sandbox) -> None:
    want = pipeline_when.Outcome(None, "Iteration budget exceeded")
    assert pipeline_when.evaluate(ITERATIONS, {}, {}) == want
    assert sandbox.evaluate(ITERATIONS, {}, {}) == want
    assert sandbox.starts == 1, "an error the runtime reports keeps the child"


def test_a_killed_child_is_started_again(sandbox: when_sandbox.Sandbox) -> None:
    assert sandbox.evaluate("params.n == 1", {}, {"n": 1}).value is True
    pid = sandbox.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while sandbox.pid is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sandbox.evaluate("params.n == 2", {}, {"n": 2}).value is True
    assert sandbox.starts == 2 and sandbox.pid not in (None, pid)


def test_outcomes_are_remembered_up_to_a_bound() -> None:
    sb = when_sandbox.Sandbox(memo_size=2)
    try:
        for n in range(3):
            assert sb.evaluate("params.n >= 1", {}, {"n": n}).value is (n >= 1)
        pid = sb.pid
        sb.close()
        # The two latest come from memory: no child is started for them.
        assert sb.evaluate("params.n >= 1", {}, {"n": 2}).value is True
        assert sb.evaluate("params.n >= 1", {}, {"n": 1}).value is True
        assert sb.pid is None and sb.starts == 1
        assert sb.evaluate("params.n >= 1", {}, {"n": 0}).value is False
        assert sb.starts == 2 and sb.pid != pid
    finally:
        sb.close()


def test_worker_threads_share_it(sandbox: when_sandbox.Sandbox) -> None:
    got: dict[int, Any] = {}

    def run(n: int) -> None:
        got[n] = sandbox.evaluate("params.n % 2 == 0", {}, {"n": n}).value

    threads = [threading.Thread(target=run, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {n: n % 2 == 0 for n in range(16)}
    assert sandbox.starts == 1


# ------------------------------------------------------------------------- in the planner


def _pipeline(when: str) -> Pipeline:
    """The digits example with `when` on its first task (it names no task: evaluated at the
    pipeline's first reconcile) and a 1 KiB string parameter s."""
    body = pipeline_example("digits")
    body["metadata"].update(namespace="ml", uid="p-uid", generation=1)
    body["spec"]["parameters"] = [{"name": "s", "type": "string", "default": PARAMS["s"]}]
    body["spec"]["tasks"][0]["when"] = when
    return Pipeline.model_validate(body)


@pytest.mark.parametrize(("expression", "why", "in_process"), [
    (ITERATIONS, "Iteration budget exceeded", True),
    (MEMORY_BOMB, "evaluation exceeded its memory budget (128 MiB)", False),
])
def test_a_when_that_cannot_be_evaluated_fails_its_task_not_the_reconcile(
        sandbox: when_sandbox.Sandbox, expression: str, why: str, in_process: bool) -> None:
    p = _pipeline(expression)
    out = plan_pipeline(p, {}, NOW, **({} if in_process else {"evaluate": sandbox.evaluate}))
    assert out.create == []
    entry = next(e for e in out.status.tasks or [] if e.name == "preprocess")
    assert (entry.status, entry.reason) == ("failed", "WhenError")
    assert entry.message == f"when {expression!r} could not be evaluated: {why}"
    assert out.status.status == "failed"
