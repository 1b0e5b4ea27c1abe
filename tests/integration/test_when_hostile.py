"""A hostile `when` on the real API server, with the real operator process (issue 26, finding
1): a memory bomb fails its task with WhenError, the operator's own memory does not grow, and a
second pipeline in the same run still completes. The Argo stand-in advances the Workflows."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from harness.hostile_when import LONG, MEMORY_BOMB
from harness.pipelines import (
    Pipelines,
    model_result,
    pipeline_example,
    succeed,
    task_state,
    through_training,
)
from harness.tasks import cond

pytestmark = pytest.mark.integration


@pytest.fixture
def pipes(api: client.ApiClient, namespace: str, operator) -> Pipelines:
    return Pipelines(api, namespace)


def _peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _hostile() -> dict[str, Any]:
    """The digits example with a memory bomb as the `when` of its first task: it names no task,
    so the operator evaluates it at the pipeline's first reconcile."""
    body = pipeline_example("digits")
    body["metadata"]["name"] = "hostile"
    body["spec"]["parameters"] = [{"name": "s", "type": "string", "default": LONG}]
    body["spec"]["tasks"][0]["when"] = MEMORY_BOMB
    return body


def test_a_memory_bomb_fails_its_task_and_the_operator_serves_on(pipes: Pipelines, argo,
                                                                  namespace: str,
                                                                  operator) -> None:
    pid = operator.proc.pid
    peak = _peak_mib(pid)
    pipes.create(_hostile())
    pipes.create(pipeline_example("digits"))
    st = pipes.wait_state("hostile", "failed")
    why = f"when {MEMORY_BOMB!r} could not be evaluated: evaluation exceeded its memory " \
          "budget (128 MiB)"
    first = task_state(st, "preprocess")
    assert (first["status"], first["reason"], first["message"]) == ("failed", "WhenError", why)
    assert st["message"] == f"Task preprocess failed: {why}"
    assert cond(st, "Failed")["reason"] == "WhenError"
    assert _peak_mib(pid) - peak < 64, "the bomb went off in the operator's process"

    through_training(pipes, argo, 0.95)
    pipes.wait_child("digits-optimize")
    succeed(argo, namespace, "digits-optimize-1", model_result("digits-mlp-int8"))
    assert pipes.wait_state("digits", "completed")["progress"] == "3/3"

    assert operator.proc.poll() is None, "the operator is still running"
    time.sleep(1)
    assert not any(n.startswith("hostile-") for n in pipes.children()), "nothing created"
    assert pipes.wait_state("hostile", "failed")["message"] == st["message"], \
        "the later reconciles give the same answer"
