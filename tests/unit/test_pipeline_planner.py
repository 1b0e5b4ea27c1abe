"""Unit tests of the pure Pipeline code: the task graph, the child builder and the planner."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest
from pydantic.alias_generators import to_snake

from harness.pipelines import pipeline_example
from mltask_operator import pipeline_dag as dag
from mltask_operator.api.v1alpha1.pipeline import Pipeline
from mltask_operator.builders.mltask import build_child, child_spec
from mltask_operator.pipeline_planner import name_taken, plan_pipeline, rejected
from mltask_operator.pipeline_status import child_view, overall

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


def pipeline(name: str = "digits", **spec: Any) -> Pipeline:
    body = pipeline_example(name)
    body["metadata"].update(namespace="ml", uid="p-uid", generation=1)
    body["spec"].update(spec)
    return Pipeline.model_validate(body)


def child(p: Pipeline, task: str, status: str | None = None, *, uri: str | None = None,
          suspend: bool = False, retry_generation: int = 0,
          observed_retry: int | None = 0) -> dict[str, Any]:
    t = next(x for x in p.spec.tasks if x.name == task)
    body = build_child(p, t, dict.fromkeys(dag.dependencies(t), "s3://up"))
    body["spec"]["suspend"] = suspend
    body["spec"]["retryGeneration"] = retry_generation
    if status:
        body["status"] = {"status": status, "attempt": 1, "observedRetryGeneration": observed_retry}
        if uri:
            body["status"]["outputs"] = {"kind": "x", "name": "x", "uri": uri}
    return body


# ------------------------------------------------------------------------------------- dag


def test_dependencies_include_fromtask_references() -> None:
    p = pipeline()
    assert dag.graph(p.spec) == {"preprocess": [], "train": ["preprocess"],
                                 "optimize": ["preprocess", "train"]}


def test_find_cycle_returns_the_path() -> None:
    assert dag.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_validate_names_the_task() -> None:
    body = pipeline_example("digits")
    body["spec"]["tasks"][1]["dependsOn"] = ["nope", "train"]
    body["spec"]["tasks"][2]["spec"]["input"]["model"] = {"fromTask": "preprocess"}
    problems = dag.validate(Pipeline.model_validate(body).spec)
    assert problems == ["task train: dependsOn names unknown task nope",
                        "task train: depends on itself",
                        "task optimize: input.model.fromTask preprocess is a preprocessing "
                        "task and produces no model"]


# --------------------------------------------------------------------------------- builder


def test_child_inherits_defaults_unless_it_overrides_them() -> None:
    body = pipeline_example("digits")
    body["metadata"].update(namespace="ml", uid="p-uid", generation=1)
    body["spec"]["defaults"].update(nodeSelector={"pool": "cpu"},
                                    tolerations=[{"key": "spot", "operator": "Exists"}])
    body["spec"]["tasks"][2]["spec"]["runtime"]["tolerations"] = []  # overridden by nothing
    p = Pipeline.model_validate(body)
    pre, train, opt = p.spec.tasks
    spec = child_spec(p, pre, {})
    assert spec.runtime.node_selector == {"pool": "cpu"}
    assert [t.key for t in spec.runtime.tolerations or []] == ["spot"]
    assert spec.storage is not None and spec.storage.secret_ref.name == "s3-credentials"
    assert spec.storage.endpoint == "http://10.244.0.1:9000"
    spec = child_spec(p, train, {"preprocess": "s3://d/digits-minmax.npz"})
    assert spec.runtime.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [t.key for t in spec.runtime.tolerations or []] == ["nvidia.com/gpu"]
    assert spec.input.dataset.uri == "s3://d/digits-minmax.npz"
    assert spec.input.dataset.from_task is None
    assert spec.pipeline_ref is not None and spec.pipeline_ref.name == "digits"
    assert train.spec.input.dataset.from_task == "preprocess", "the template is not mutated"
    spec = child_spec(p, opt, {"preprocess": "s3://d/digits-minmax.npz", "train": "s3://m"})
    assert spec.runtime.node_selector == {"pool": "cpu"} and spec.runtime.tolerations == []
    assert (spec.input.dataset.uri, spec.input.model.uri) == ("s3://d/digits-minmax.npz",
                                                              "s3://m")


def test_child_metadata_never_copies_the_pipeline_labels() -> None:
    body = pipeline_example("digits")
    body["metadata"].update(namespace="ml", uid="p-uid",
                            labels={"app.kubernetes.io/instance": "apps", "team": "cv"})
    p = Pipeline.model_validate(body)
    out = build_child(p, p.spec.tasks[0], {})
    assert out["metadata"]["name"] == "digits-preprocess"
    assert set(out["metadata"]["labels"]) == {"mltask.dev/pipeline", "mltask.dev/pipeline-task",
                                              "app.kubernetes.io/managed-by"}
    assert out["metadata"]["ownerReferences"][0]["uid"] == "p-uid"


# --------------------------------------------------------------------------------- planner


def test_first_reconcile_creates_only_the_roots() -> None:
    p = pipeline()
    out = plan_pipeline(p, {}, NOW)
    assert [t.name for t in out.create] == ["preprocess"]
    assert out.status.status == "init" and out.status.progress == "0/3"
    assert out.status.start_time == NOW
    train = out.status.tasks[1]
    assert (train.status, train.message) == ("pending", "waiting for preprocess")


def test_completed_upstream_hands_its_output_on() -> None:
    p = pipeline()
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d/ds.zip")}
    out = plan_pipeline(p, kids, NOW)
    assert [t.name for t in out.create] == ["train"]
    assert out.outputs == {"preprocess": "s3://d/ds.zip"}
    assert out.status.status == "running" and out.status.progress == "1/3"


def test_completed_without_output_uri_blocks_and_fails() -> None:
    p = pipeline()
    out = plan_pipeline(p, {"preprocess": child(p, "preprocess", "completed")}, NOW)
    assert out.create == []
    assert out.status.status == "failed"
    assert "preprocess completed without an output URI" in out.status.message


def test_all_completed() -> None:
    p = pipeline()
    kids = {t: child(p, t, "completed", uri=f"s3://{t}") for t in ("preprocess", "train",
                                                                   "optimize")}
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "completed" and out.status.completion_time == NOW
    again = plan_pipeline(p.model_copy(update={"status": out.status}), kids,
                          NOW + datetime.timedelta(minutes=5))
    assert again.status.completion_time == NOW, "completion time is set once"


def test_parallel_branches_and_concurrency() -> None:
    p = pipeline("parallel-training")
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d")}
    assert [t.name for t in plan_pipeline(p, kids, NOW).create] == ["train-mlp", "train-logreg"]
    capped = pipeline("parallel-training", concurrency=1)
    out = plan_pipeline(capped, kids, NOW)
    assert [t.name for t in out.create] == ["train-mlp"]
    assert "concurrency" in out.status.tasks[2].message


def test_fail_fast_stops_scheduling_but_waits_for_running_tasks() -> None:
    body = pipeline_example("parallel-training")
    follow = copy.deepcopy(body["spec"]["tasks"][1])
    follow.update(name="finetune", dependsOn=["train-mlp"])
    body["spec"]["tasks"].append(follow)
    body["metadata"].update(namespace="ml", uid="u")
    for fail_fast, expect_create, expect_phase in ((True, [], "failed"),
                                                   (False, ["finetune"], "running")):
        body["spec"]["failFast"] = fail_fast
        p = Pipeline.model_validate(body)
        kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
                "train-logreg": child(p, "train-logreg", "failed"),
                "train-mlp": child(p, "train-mlp", "running")}
        out = plan_pipeline(p, kids, NOW)
        assert out.create == [] and out.status.status == "running"
        kids["train-mlp"] = child(p, "train-mlp", "completed", uri="s3://m")
        out = plan_pipeline(p, kids, NOW)
        assert [t.name for t in out.create] == expect_create
        assert out.status.status == expect_phase


def test_stop_cascades_to_active_children_only() -> None:
    p = pipeline(suspend=True)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "running")}
    out = plan_pipeline(p, kids, NOW)
    assert out.suspend == ["digits-train"] and out.create == []
    assert out.status.status == "stopping"
    kids["train"] = child(p, "train", "stopped", suspend=True)
    out = plan_pipeline(p, kids, NOW)
    assert out.suspend == [] and out.status.status == "stopped"
    assert "optimize not started" in out.status.message


def test_continue_resumes_suspended_children() -> None:
    p = pipeline()
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "stopped", suspend=True)}
    out = plan_pipeline(p, kids, NOW)
    assert out.resume == ["digits-train"] and out.status.status == "running"


def test_continue_resumes_stopped_children_within_concurrency() -> None:
    """Stopped with two trainings at concurrency 2, continued at concurrency 1: one resumes,
    the other waits for room, as Argo's parallelism would have it."""
    p = pipeline("parallel-training", concurrency=1)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train-mlp": child(p, "train-mlp", "stopped", suspend=True),
            "train-logreg": child(p, "train-logreg", "stopped", suspend=True)}
    out = plan_pipeline(p, kids, NOW)
    assert out.resume == ["digits-sweep-train-mlp"], "spec order, one at a time"
    assert out.status.status == "running"
    logreg = next(t for t in out.status.tasks if t.name == "train-logreg")
    assert logreg.status == "stopped"
    assert logreg.message == "continue waiting: 1 tasks already running (concurrency)"

    # the first runs: still no room; it completes: the second resumes
    kids["train-mlp"] = child(p, "train-mlp", "running")
    out = plan_pipeline(after(p, out), kids, NOW)
    assert out.resume == []
    kids["train-mlp"] = child(p, "train-mlp", "completed", uri="s3://m")
    out = plan_pipeline(after(p, out), kids, NOW)
    assert out.resume == ["digits-sweep-train-logreg"]


def test_continue_resumes_a_child_still_stopping_whatever_the_concurrency() -> None:
    """A child that has not stopped yet is still running: un-suspending it adds nothing."""
    p = pipeline("parallel-training", concurrency=1)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train-mlp": child(p, "train-mlp", "running", suspend=True),
            "train-logreg": child(p, "train-logreg", "stopped", suspend=True)}
    out = plan_pipeline(p, kids, NOW)
    assert out.resume == ["digits-sweep-train-mlp"]


def test_retry_reruns_only_failed_and_stopped_children() -> None:
    p = pipeline(retryGeneration=1)
    p = p.model_copy(update={"status": plan_pipeline(pipeline(), {}, NOW).status})
    assert p.status is not None and p.status.observed_retry_generation == 0
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "failed", retry_generation=2, observed_retry=2)}
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {"digits-train": 3}
    assert out.status.status == "retry" and out.status.observed_retry_generation == 1
    assert out.notes[0][1] == "Retrying"


def test_retry_while_running_is_ignored() -> None:
    p = pipeline(retryGeneration=1)
    p = p.model_copy(update={"status": plan_pipeline(pipeline(), {}, NOW).status})
    out = plan_pipeline(p, {"preprocess": child(p, "preprocess", "running")}, NOW)
    assert out.retry == {} and out.notes[0][1] == "RetryIgnored"


def test_child_view_sees_requests_not_yet_acted_on() -> None:
    p = pipeline()
    assert child_view("train", child(p, "train", "failed", retry_generation=1)).state == "retry"
    assert child_view("train", child(p, "train", "stopped")).state == "running"
    assert child_view("train", child(p, "train", "running", suspend=True)).state == "stopping"
    assert child_view("train", child(p, "train")).state == "init"


@pytest.mark.parametrize(("states", "suspended", "held", "phase"), [
    ({}, False, (), "failed"),  # nothing can start: only reachable when pending tasks are blocked
    ({"a": "completed", "b": "completed"}, False, (), "completed"),
    ({"a": "init"}, False, (), "init"),
    ({"a": "completed", "b": "init"}, False, (), "running"),
    ({"a": "retry"}, False, (), "retry"),
    ({"a": "running", "b": "retry"}, False, (), "running"),
    ({"a": "running"}, True, (), "stopping"),
    ({"a": "stopped"}, True, (), "stopped"),
    ({"a": "completed"}, True, ("b",), "stopped"),  # b would start but for suspend
    ({"a": "completed"}, True, (), "failed"),       # b can never start: suspend changes nothing
    ({"a": "failed"}, True, (), "failed"),          # a failed pipeline stays failed when suspended
    ({"a": "failed", "b": "stopped"}, True, (), "stopped"),
    ({"a": "failed", "b": "running"}, False, (), "running"),
    ({"a": "failed", "b": "completed"}, False, (), "failed"),
])
def test_overall_status(states: dict[str, str], suspended: bool, held: tuple[str, ...],
                        phase: str) -> None:
    body = pipeline_example("parallel-training")
    body["spec"]["tasks"] = body["spec"]["tasks"][:2]
    body["spec"]["tasks"][0]["name"], body["spec"]["tasks"][1]["name"] = "a", "b"
    body["spec"]["tasks"][1]["spec"]["input"]["dataset"] = {"uri": "s3://x"}
    p = Pipeline.model_validate(body)
    got = overall(p.spec.tasks, states, suspended, frozenset(held))  # type: ignore[arg-type]
    assert got == phase


def test_invalid_graph_fails_without_children() -> None:
    body = pipeline_example("digits")
    body["spec"]["tasks"][0]["dependsOn"] = ["train"]
    body["metadata"].update(namespace="ml", uid="u", generation=3)
    out = plan_pipeline(Pipeline.model_validate(body), {}, NOW)
    assert out.invalid and out.create == []
    assert out.status.status == "failed"
    assert "dependency cycle: preprocess -> train -> preprocess" in out.status.message
    failed = next(c for c in out.status.conditions or [] if c.type == "Failed")
    assert (failed.status, failed.reason, failed.observed_generation) == ("True", "InvalidSpec", 3)


def after(p: Pipeline, out: Any, **spec: Any) -> Pipeline:
    """The pipeline as the next reconcile reads it: the status just planned, `spec` changed."""
    new_spec = p.spec.model_copy(update={to_snake(k): v for k, v in spec.items()})
    return p.model_copy(update={"status": out.status, "spec": new_spec})


def test_validate_names_a_task_whose_input_is_itself() -> None:
    body = pipeline_example("digits")
    body["spec"]["tasks"][0]["spec"]["input"]["dataset"] = {"fromTask": "preprocess"}
    body["spec"]["tasks"][2]["spec"]["input"]["model"] = {"fromTask": "optimize"}
    problems = dag.validate(Pipeline.model_validate(body).spec)
    assert problems == ["task preprocess: input.dataset.fromTask names the task itself",
                        "task optimize: input.model.fromTask names the task itself"]


@pytest.mark.parametrize(("own", "expect"), [
    ({}, ("trainer", "batch-low")),
    ({"serviceAccountName": "gpu-sa", "priorityClassName": "urgent"}, ("gpu-sa", "urgent")),
], ids=["inherited", "overridden"])
def test_child_inherits_service_account_and_priority_class(own: dict[str, str],
                                                           expect: tuple[str, str]) -> None:
    body = pipeline_example("digits")
    body["spec"]["defaults"].update(serviceAccountName="trainer", priorityClassName="batch-low")
    body["spec"]["tasks"][1]["spec"]["runtime"].update(own)
    body["metadata"].update(namespace="ml", uid="u")
    p = Pipeline.model_validate(body)
    out = build_child(p, p.spec.tasks[1], {"preprocess": "s3://d"})["spec"]["runtime"]
    assert (out.get("serviceAccountName"), out.get("priorityClassName")) == expect


def test_without_defaults_the_child_has_no_service_account() -> None:
    body = pipeline_example("digits")
    del body["spec"]["defaults"]
    body["metadata"].update(namespace="ml", uid="u")
    p = Pipeline.model_validate(body)
    rt = build_child(p, p.spec.tasks[0], {})["spec"]["runtime"]
    assert "serviceAccountName" not in rt and "priorityClassName" not in rt


# --------------------------------------------------------------------------- retry, suspend


def _failed_sweep(concurrency: int | None) -> tuple[Pipeline, dict[str, dict[str, Any]]]:
    """parallel-training with both trainings failed, its failed status already written."""
    p = pipeline("parallel-training", concurrency=concurrency)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train-mlp": child(p, "train-mlp", "failed"),
            "train-logreg": child(p, "train-logreg", "failed")}
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "failed"
    return after(p, out), kids


def test_retry_restarts_at_most_concurrency_children_and_queues_the_rest() -> None:
    p, kids = _failed_sweep(concurrency=1)
    p = after(p, plan_pipeline(p, kids, NOW), retryGeneration=1)
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {"digits-sweep-train-mlp": 1}, "spec order, one at a time"
    assert out.status.retry_pending == ["train-logreg"]
    assert out.status.observed_retry_generation == 1
    logreg = out.status.tasks[2]
    assert (logreg.status, logreg.mltask) == ("retry", "digits-sweep-train-logreg")
    assert "concurrency" in (logreg.message or "")
    assert out.status.status == "retry"
    assert [n[1] for n in out.notes] == ["Retrying"] and "train-logreg wait" in out.notes[0][2]

    # the first retry runs: no room for the second; the request is still remembered
    kids["train-mlp"] = child(p, "train-mlp", "running", retry_generation=1,
                                 observed_retry=1)
    p = after(p, out)
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {} and out.notes == []
    assert out.status.retry_pending == ["train-logreg"] and out.status.status == "running"

    # it completes: the second one gets its new attempt, nothing is left to remember
    kids["train-mlp"] = child(p, "train-mlp", "completed", uri="s3://m",
                                 retry_generation=1, observed_retry=1)
    p = after(p, out)
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {"digits-sweep-train-logreg": 1}
    assert out.status.retry_pending is None and out.status.status == "retry"


def test_retry_without_concurrency_restarts_all_at_once() -> None:
    p, kids = _failed_sweep(concurrency=None)
    out = plan_pipeline(after(p, plan_pipeline(p, kids, NOW), retryGeneration=1), kids, NOW)
    assert out.retry == {"digits-sweep-train-mlp": 1, "digits-sweep-train-logreg": 1}
    assert out.status.retry_pending is None


def test_retry_of_stopped_children_within_concurrency_does_not_continue_the_rest() -> None:
    p = pipeline("parallel-training", concurrency=1, suspend=True)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train-mlp": child(p, "train-mlp", "stopped", suspend=True),
            "train-logreg": child(p, "train-logreg", "stopped", suspend=True)}
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "stopped"
    out = plan_pipeline(after(p, out, suspend=False, retryGeneration=1), kids, NOW)
    assert out.retry == {"digits-sweep-train-mlp": 1}
    assert out.resume == [], "continuing train-logreg would exceed the concurrency limit"
    assert out.status.retry_pending == ["train-logreg"]


def test_retry_reruns_the_failed_task_then_what_depends_on_it() -> None:
    p = pipeline()
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "failed")}
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "failed" and out.create == []
    p = after(p, out, retryGeneration=1)
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {"digits-train": 1} and out.create == []
    assert out.status.tasks[2].message == "waiting for train"
    kids["train"] = child(p, "train", "running", retry_generation=1, observed_retry=1)
    out = plan_pipeline(after(p, out), kids, NOW)
    assert out.create == [] and out.retry == {}
    kids["train"] = child(p, "train", "completed", uri="s3://m2", retry_generation=1,
                          observed_retry=1)
    out = plan_pipeline(after(p, out), kids, NOW)
    assert [t.name for t in out.create] == ["optimize"] and out.outputs["train"] == "s3://m2"
    assert out.status.status == "running"


def test_suspending_a_failed_pipeline_keeps_it_failed() -> None:
    p = pipeline()
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "failed")}
    kids["train"]["status"]["message"] = "CUDA out of memory"
    failed = plan_pipeline(p, kids, NOW).status
    assert failed.status == "failed" and failed.completion_time == NOW
    p = p.model_copy(update={"status": failed,
                             "spec": p.spec.model_copy(update={"suspend": True})})
    out = plan_pipeline(p, kids, NOW + datetime.timedelta(minutes=5))
    st = out.status
    assert st.status == "failed" and st.message == failed.message
    assert "CUDA out of memory" in (st.message or "")
    assert st.completion_time == NOW, "completion time is kept"
    assert out.suspend == [] and out.create == []
    cond = next(c for c in st.conditions or [] if c.type == "Failed")
    assert cond.status == "True"


def test_suspended_pipeline_with_a_branch_left_to_run_is_stopped() -> None:
    # failFast: false and train-logreg failed: train-mlp would still start on continue
    p = pipeline("parallel-training", suspend=True)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train-logreg": child(p, "train-logreg", "failed")}
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "stopped" and out.create == []
    assert out.status.tasks[1].message == "not started: the pipeline is stopped"


def test_retry_with_nothing_to_retry_warns_and_stays_failed() -> None:
    p = pipeline()
    kids = {"preprocess": child(p, "preprocess", "completed")}  # no output URI
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "failed"
    out = plan_pipeline(after(p, out, retryGeneration=1), kids, NOW)
    assert out.retry == {} and out.create == [] and out.status.status == "failed"
    assert [(t, r) for t, r, _ in out.notes] == [("Warning", "NothingToRetry")]
    assert "no task failed or stopped" in out.notes[0][2]
    assert "without an output URI" in out.notes[0][2], "says why the pipeline failed"
    assert out.status.observed_retry_generation == 1


def test_retry_requested_while_suspended_is_held_until_continue() -> None:
    p = pipeline(suspend=True)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "stopped", suspend=True)}
    out = plan_pipeline(p, kids, NOW)
    assert out.status.status == "stopped"
    p = after(p, out, retryGeneration=1)
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {} and out.status.observed_retry_generation == 0
    assert "retry (retryGeneration 1) is held until spec.suspend is false" in (
        out.status.message or "")
    assert [(t, r) for t, r, _ in out.notes] == [("Warning", "RetryHeld")]
    assert "set suspend to false" in out.notes[0][2]
    p = after(p, out)
    again = plan_pipeline(p, kids, NOW)
    assert again.notes == [] and again.status.message == out.status.message, "said once"
    out = plan_pipeline(after(p, out, suspend=False), kids, NOW)
    assert out.retry == {"digits-train": 1} and out.resume == []
    assert out.status.observed_retry_generation == 1 and out.status.status == "retry"


# -------------------------------------------------------------- children the server refused


def test_refused_child_fails_the_pipeline_and_no_entry_names_a_missing_mltask() -> None:
    p = pipeline("parallel-training")
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d")}
    first = plan_pipeline(p, kids, NOW)
    assert [t.name for t in first.create] == ["train-mlp", "train-logreg"]
    why = rejected("MLTask ml/digits-sweep-train-mlp was rejected: GPUs are not allowed")
    out = plan_pipeline(p, kids, NOW, {"train-mlp": why})
    assert out.create == [], "failFast: false, yet nothing more is created"
    st = out.status
    assert st.status == "failed"
    assert "train-mlp" in (st.message or "") and "GPUs are not allowed" in (st.message or "")
    mlp, logreg = st.tasks[1], st.tasks[2]
    assert (mlp.status, mlp.mltask, mlp.reason) == ("failed", None, "TaskRejected")
    assert (logreg.status, logreg.mltask) == ("pending", None)
    assert logreg.message == "not started: train-mlp could not be created"
    failed = next(c for c in st.conditions or [] if c.type == "Failed")
    assert (failed.status, failed.reason) == ("True", "TaskRejected")

    # remembered: the next reconcile does not try again, and keeps the reason
    again = plan_pipeline(after(p, out), kids, NOW)
    assert again.create == [] and again.status.status == "failed"
    assert again.status.tasks[1].reason == "TaskRejected"
    # until a retry, which creates it again
    retry = plan_pipeline(after(p, again, retryGeneration=1), kids, NOW)
    assert [t.name for t in retry.create] == ["train-mlp", "train-logreg"]
    assert [n[1] for n in retry.notes] == ["Retrying"]
    assert retry.status.tasks[1].reason is None


def test_refused_child_while_others_run_fails_once_they_end() -> None:
    p = pipeline("parallel-training")
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train-mlp": child(p, "train-mlp", "running")}
    why = rejected("MLTask ml/digits-sweep-train-logreg was rejected: denied")
    out = plan_pipeline(p, kids, NOW, {"train-logreg": why})
    assert out.status.status == "running" and "could not be created" in (out.status.message or "")
    kids["train-mlp"] = child(p, "train-mlp", "completed", uri="s3://m")
    out = plan_pipeline(after(p, out), kids, NOW)
    assert out.status.status == "failed"
    assert next(c for c in out.status.conditions or [] if c.type == "Failed").reason == \
        "TaskRejected"


def _mltask(name: str, owners: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ml", "ownerReferences": owners, **meta}}


def test_name_taken_by_someone_else_fails_but_an_earlier_pipelines_task_is_waited_for() -> None:
    p = pipeline()
    mine = {"kind": "Pipeline", "name": "digits", "uid": "p-uid"}
    earlier = {"kind": "Pipeline", "name": "digits", "uid": "old-uid"}
    other = {"kind": "Pipeline", "name": "other", "uid": "x"}
    assert name_taken(p, _mltask("digits-preprocess", [])).reason == "TaskNameTaken"
    assert name_taken(p, _mltask("digits-preprocess", [other])).reason == "TaskNameTaken"
    assert name_taken(p, _mltask("digits-preprocess", [earlier])).transient
    gone = _mltask("digits-preprocess", [], deletionTimestamp="2026-11-23T12:00:00Z")
    assert name_taken(p, gone).transient
    assert not name_taken(p, _mltask("digits-preprocess", [mine, other])).transient

    taken = name_taken(p, _mltask("digits-preprocess", []))
    out = plan_pipeline(p, {}, NOW, {"preprocess": taken})
    assert out.create == [] and out.status.status == "failed"
    pre = out.status.tasks[0]
    assert (pre.status, pre.mltask, pre.reason) == ("failed", None, "TaskNameTaken")
    assert "MLTask digits-preprocess already exists" in (out.status.message or "")
    assert next(c for c in out.status.conditions or [] if c.type == "Failed").reason == \
        "TaskNameTaken"

    wait = name_taken(p, _mltask("digits-preprocess", [earlier]))
    out = plan_pipeline(p, {}, NOW, {"preprocess": wait})
    assert out.create == [] and out.status.status != "failed"
    assert (out.status.tasks[0].status, out.status.tasks[0].mltask) == ("init", None)
    assert "earlier Pipeline digits is being deleted" in (out.status.tasks[0].message or "")
    again = plan_pipeline(after(p, out), {}, NOW)
    assert [t.name for t in again.create] == ["preprocess"], "nothing remembered: tried again"
