"""Pipelines that decide, on the real API server: a task's `when` over upstream metrics (run,
skipped, or failing the pipeline with a reason), skipped tasks in progress and `kubectl get
mlp`, and the per-task failure policy. The Argo stand-in advances each child's Workflow."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.pipelines import (
    DATASET,
    Pipelines,
    model_result,
    pipeline_example,
    succeed,
    task_state,
    through_training,
)
from harness.tasks import cond

pytestmark = pytest.mark.integration

GATE = "tasks.train.metrics.accuracy >= 0.9"


@pytest.fixture
def pipes(api: client.ApiClient, namespace: str, operator) -> Pipelines:
    return Pipelines(api, namespace)


def _fail_run(argo, ns: str, wf: str) -> None:
    argo.wait_for(ns, wf)
    for step in ("download", "run"):
        argo.update(ns, wf, argo_fn.run_pod, step)
        if step == "download":
            argo.update(ns, wf, argo_fn.finish_pod, step)
    argo.update(ns, wf, argo_fn.finish_pod, "run", "Failed", exit_code=1,
                message="ValueError: bad hyperparameters")


def _gated(when: str = GATE) -> dict[str, Any]:
    body = pipeline_example("digits")
    next(t for t in body["spec"]["tasks"] if t["name"] == "optimize")["when"] = when
    return body


@pytest.mark.parametrize("accuracy", [0.95, 0.5], ids=["above", "below"])
def test_optimization_runs_only_above_the_accuracy_threshold(pipes: Pipelines, argo,
                                                             namespace: str, control_plane,
                                                             accuracy: float) -> None:
    pipes.create(_gated())
    through_training(pipes, argo, accuracy)
    if accuracy >= 0.9:
        pipes.wait_child("digits-optimize")
        succeed(argo, namespace, "digits-optimize-1", model_result("digits-mlp-int8"))
        st = pipes.wait_state("digits", "completed")
        assert (st["progress"], st.get("skippedTasks")) == ("3/3", None)
        return
    st = pipes.wait_state("digits", "completed")
    opt = task_state(st, "optimize")
    assert (opt["status"], opt["reason"]) == ("skipped", "WhenFalse")
    assert opt["message"] == f"skipped: when {GATE!r} is false"
    assert "mltask" not in opt
    assert (st["progress"], st["completedTasks"], st["skippedTasks"]) == ("2/3 (1 skipped)", 2, 1)
    assert st["message"] == "2 of 3 tasks completed; optimize skipped"
    assert cond(st, "Succeeded")["status"] == "True"
    time.sleep(1)
    assert sorted(pipes.children()) == ["digits-preprocess", "digits-train"], "never created"
    wide = control_plane.kubectl("get", "mlp", "-n", namespace, "-o", "wide").stdout
    assert "2/3 (1 skipped)" in wide.splitlines()[1], wide


def test_a_when_that_cannot_be_evaluated_fails_the_pipeline(pipes: Pipelines, argo,
                                                           namespace: str) -> None:
    pipes.create(_gated("tasks.train.metrics.loss < 0.1"))
    through_training(pipes, argo, 0.95)
    st = pipes.wait_state("digits", "failed")
    why = ("when 'tasks.train.metrics.loss < 0.1' could not be evaluated: Key not found in "
           'map : "loss"')
    assert st["message"] == f"Task optimize failed: {why}"
    opt = task_state(st, "optimize")
    assert (opt["status"], opt["reason"], opt["message"]) == ("failed", "WhenError", why)
    failed = cond(st, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "WhenError")
    assert "digits-optimize" not in pipes.children()
    events = pipes.wait_event("digits", "Failed", "Warning")
    assert any("loss" in e["message"] for e in events if e["reason"] == "Failed"), events


@pytest.mark.parametrize(("when", "why"), [
    ("tasks.train.metrics.accuracy >=", "Syntax error"),
    ("tasks.evaluate.metrics.accuracy > 0.9", "names unknown task evaluate"),
    ("'always'", "gives a string, not a bool"),
])
def test_a_bad_when_fails_the_pipeline_before_any_task_starts(pipes: Pipelines, namespace: str,
                                                             when: str, why: str) -> None:
    pipes.create(_gated(when))
    st = pipes.wait_state("digits", "failed")
    assert st["message"].startswith(f"Invalid pipeline: task optimize: when {when!r}"), st
    assert why in st["message"]
    assert cond(st, "Failed")["reason"] == "InvalidSpec"
    time.sleep(1)
    assert pipes.children() == {}, "never half-started"


def _sweep(policy: str | None, fail_fast: bool = True) -> dict[str, Any]:
    """preprocess -> (train-logreg -> finetune), (train-mlp): train-logreg will fail."""
    body = pipeline_example("parallel-training")
    body["spec"]["failFast"] = fail_fast
    for t in body["spec"]["tasks"]:
        t["spec"].setdefault("runtime", {})["retryPolicy"] = {"limit": 0}
    logreg = next(t for t in body["spec"]["tasks"] if t["name"] == "train-logreg")
    if policy:
        logreg["onFailure"] = policy
    follow = copy.deepcopy(logreg)
    follow.pop("onFailure", None)
    follow.update(name="finetune", dependsOn=["train-logreg"])
    body["spec"]["tasks"].append(follow)
    return body


def test_an_ignored_failure_skips_its_dependents_and_the_pipeline_completes(
        pipes: Pipelines, argo, namespace: str) -> None:
    pipes.create(_sweep("Ignore"))
    pipes.wait_child("digits-sweep-preprocess")
    succeed(argo, namespace, "digits-sweep-preprocess-1", DATASET)
    pipes.wait_child("digits-sweep-train-logreg")
    _fail_run(argo, namespace, "digits-sweep-train-logreg-1")
    pipes.wait_child("digits-sweep-train-mlp")
    succeed(argo, namespace, "digits-sweep-train-mlp-1", model_result("digits-mlp"))
    st = pipes.wait_state("digits-sweep", "completed")
    logreg, follow = task_state(st, "train-logreg"), task_state(st, "finetune")
    assert (logreg["status"], logreg["reason"]) == ("failed", "FailureIgnored")
    assert (follow["status"], follow["reason"], follow["message"]) == (
        "skipped", "UpstreamFailed", "skipped: train-logreg failed (onFailure Ignore)")
    assert st["progress"] == "2/4 (1 skipped)"
    assert "digits-sweep-finetune" not in pipes.children()


@pytest.mark.parametrize(("policy", "fail_fast"), [("Continue", True), ("Stop", False)])
def test_a_tasks_policy_overrides_failfast(pipes: Pipelines, argo, namespace: str,
                                          policy: str, fail_fast: bool) -> None:
    body = _sweep(policy, fail_fast)
    body["spec"]["concurrency"] = 1          # train-mlp (spec order) first, then train-logreg
    body["spec"]["tasks"].sort(key=lambda t: t["name"] != "train-logreg")  # logreg first
    pipes.create(body)
    pipes.wait_child("digits-sweep-preprocess")
    succeed(argo, namespace, "digits-sweep-preprocess-1", DATASET)
    pipes.wait_child("digits-sweep-train-logreg")
    _fail_run(argo, namespace, "digits-sweep-train-logreg-1")
    if policy == "Stop":
        st = pipes.wait_state("digits-sweep", "failed")
        time.sleep(1)
        assert "digits-sweep-train-mlp" not in pipes.children(), "nothing new starts"
        assert task_state(st, "train-mlp")["message"] == ("not started: train-logreg failed "
                                                          "(onFailure Stop)")
        return
    pipes.wait_child("digits-sweep-train-mlp")
    # the child can exist before the status write that reports train-logreg's failure lands
    st = pipes.wait("digits-sweep", lambda s: "train-logreg failed" in s.get("message", ""),
                    "digits-sweep to report train-logreg's failure")["status"]
    assert st["status"] == "running"
    assert "train-logreg failed, independent branches go on" in st["message"]
    succeed(argo, namespace, "digits-sweep-train-mlp-1", model_result("digits-mlp"))
    st = pipes.wait_state("digits-sweep", "failed")
    assert task_state(st, "finetune")["status"] == "pending"
    assert st["progress"] == "2/4"
