"""Unit tests of the pure Pipeline code: the task graph, the child builder and the planner."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from harness.pipelines import pipeline_example
from mltask_operator import dag
from mltask_operator.api.v1alpha1.pipeline import Pipeline
from mltask_operator.builders.mltask import build_child, child_spec
from mltask_operator.pipeline_planner import child_view, overall, plan_pipeline

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


def pipeline(name: str = "cifar10", **spec: Any) -> Pipeline:
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
                                 "optimize": ["train"]}


def test_find_cycle_returns_the_path() -> None:
    assert dag.find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert dag.find_cycle({"a": ["a"]}) == ["a", "a"]
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None


def test_validate_names_the_task() -> None:
    body = pipeline_example("cifar10")
    body["spec"]["tasks"][1]["dependsOn"] = ["nope", "train"]
    body["spec"]["tasks"][2]["spec"]["input"]["model"] = {"fromTask": "preprocess"}
    problems = dag.validate(Pipeline.model_validate(body).spec)
    assert problems == ["task train: dependsOn names unknown task nope",
                        "task train: depends on itself",
                        "task optimize: input.model.fromTask preprocess is a preprocessing "
                        "task and produces no model"]


# --------------------------------------------------------------------------------- builder


def test_child_inherits_defaults_unless_it_overrides_them() -> None:
    p = pipeline()
    pre, train, _ = p.spec.tasks
    spec = child_spec(p, pre, {})
    assert spec.runtime.node_selector == {"pool": "cpu"} and spec.runtime.tolerations == []
    assert spec.storage is not None and spec.storage.secret_ref.name == "s3-credentials"
    spec = child_spec(p, train, {"preprocess": "s3://d/cifar.zip"})
    assert spec.runtime.node_selector == {"nvidia.com/gpu.present": "true"}
    assert spec.runtime.tolerations and spec.runtime.tolerations[0].key == "nvidia.com/gpu"
    assert spec.input.dataset.uri == "s3://d/cifar.zip" and spec.input.dataset.from_task is None
    assert spec.pipeline_ref is not None and spec.pipeline_ref.name == "cifar10"
    assert train.spec.input.dataset.from_task == "preprocess", "the template is not mutated"


def test_child_metadata_never_copies_the_pipeline_labels() -> None:
    body = pipeline_example("cifar10")
    body["metadata"].update(namespace="ml", uid="p-uid",
                            labels={"app.kubernetes.io/instance": "apps", "team": "cv"})
    p = Pipeline.model_validate(body)
    out = build_child(p, p.spec.tasks[0], {})
    assert out["metadata"]["name"] == "cifar10-preprocess"
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
    assert [t.name for t in plan_pipeline(p, kids, NOW).create] == ["train-resnet", "train-vit"]
    capped = pipeline("parallel-training", concurrency=1)
    out = plan_pipeline(capped, kids, NOW)
    assert [t.name for t in out.create] == ["train-resnet"]
    assert "concurrency" in out.status.tasks[2].message


def test_fail_fast_stops_scheduling_but_waits_for_running_tasks() -> None:
    body = pipeline_example("parallel-training")
    follow = copy.deepcopy(body["spec"]["tasks"][1])
    follow.update(name="finetune", dependsOn=["train-resnet"])
    body["spec"]["tasks"].append(follow)
    body["metadata"].update(namespace="ml", uid="u")
    for fail_fast, expect_create, expect_phase in ((True, [], "failed"),
                                                   (False, ["finetune"], "running")):
        body["spec"]["failFast"] = fail_fast
        p = Pipeline.model_validate(body)
        kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
                "train-vit": child(p, "train-vit", "failed"),
                "train-resnet": child(p, "train-resnet", "running")}
        out = plan_pipeline(p, kids, NOW)
        assert out.create == [] and out.status.status == "running"
        kids["train-resnet"] = child(p, "train-resnet", "completed", uri="s3://m")
        out = plan_pipeline(p, kids, NOW)
        assert [t.name for t in out.create] == expect_create
        assert out.status.status == expect_phase


def test_stop_cascades_to_active_children_only() -> None:
    p = pipeline(suspend=True)
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "running")}
    out = plan_pipeline(p, kids, NOW)
    assert out.suspend == ["cifar10-train"] and out.create == []
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
    assert out.resume == ["cifar10-train"] and out.status.status == "running"


def test_retry_reruns_only_failed_and_stopped_children() -> None:
    p = pipeline(retryGeneration=1)
    p = p.model_copy(update={"status": plan_pipeline(pipeline(), {}, NOW).status})
    assert p.status is not None and p.status.observed_retry_generation == 0
    kids = {"preprocess": child(p, "preprocess", "completed", uri="s3://d"),
            "train": child(p, "train", "failed", retry_generation=2, observed_retry=2)}
    out = plan_pipeline(p, kids, NOW)
    assert out.retry == {"cifar10-train": 3}
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


@pytest.mark.parametrize(("states", "suspended", "phase"), [
    ({}, False, "failed"),  # nothing can start: only reachable when pending tasks are blocked
    ({"a": "completed", "b": "completed"}, False, "completed"),
    ({"a": "init"}, False, "init"),
    ({"a": "completed", "b": "init"}, False, "running"),
    ({"a": "retry"}, False, "retry"),
    ({"a": "running", "b": "retry"}, False, "running"),
    ({"a": "running"}, True, "stopping"),
    ({"a": "stopped"}, True, "stopped"),
    ({"a": "completed"}, True, "stopped"),
    ({"a": "failed", "b": "running"}, False, "running"),
    ({"a": "failed", "b": "completed"}, False, "failed"),
])
def test_overall_status(states: dict[str, str], suspended: bool, phase: str) -> None:
    body = pipeline_example("parallel-training")
    body["spec"]["tasks"] = body["spec"]["tasks"][:2]
    body["spec"]["tasks"][0]["name"], body["spec"]["tasks"][1]["name"] = "a", "b"
    body["spec"]["tasks"][1]["spec"]["input"]["dataset"] = {"uri": "s3://x"}
    p = Pipeline.model_validate(body)
    assert overall(p.spec.tasks, states, suspended) == phase  # type: ignore[arg-type]


def test_invalid_graph_fails_without_children() -> None:
    body = pipeline_example("cifar10")
    body["spec"]["tasks"][0]["dependsOn"] = ["train"]
    body["metadata"].update(namespace="ml", uid="u", generation=3)
    out = plan_pipeline(Pipeline.model_validate(body), {}, NOW)
    assert out.invalid and out.create == []
    assert out.status.status == "failed"
    assert "dependency cycle: preprocess -> train -> preprocess" in out.status.message
    failed = next(c for c in out.status.conditions or [] if c.type == "Failed")
    assert (failed.status, failed.reason, failed.observed_generation) == ("True", "InvalidSpec", 3)
