"""The cluster's GPU policy (operator settings) applied to run steps that request GPUs."""

from __future__ import annotations

import json

from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders.workflow import ResolvedInputs, build_workflow
from mltask_operator.settings import RunStepDefaults

INPUTS = ResolvedInputs(dataset_uri="s3://d/ds.zip")
POLICY = RunStepDefaults(node_selector={"pool": "a100", "nvidia.com/gpu.present": "false"},
                         tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists",
                                       "effect": "NoSchedule"},
                                      {"key": "spot", "operator": "Exists"}],
                         runtime_class_name="nvidia", gpu_resource_name="nvidia.com/gpu")


def _task(name: str, **run_resources) -> MLTask:
    body = example(name)
    body["metadata"].update(namespace="ml", uid="u")
    if run_resources:
        body["spec"]["steps"]["run"]["resources"] = run_resources
    return MLTask.model_validate(body)


def _templates(task: MLTask, defaults: RunStepDefaults | None) -> dict[str, dict]:
    wf = build_workflow(task, attempt=1, start_at=StepName.DOWNLOAD, inputs=INPUTS,
                        defaults=defaults)
    return {t["name"]: t for t in wf["spec"]["templates"]}


def test_gpu_run_step_gets_the_cluster_policy_and_the_task_wins() -> None:
    tpl = _templates(_task("training"), POLICY)
    run = tpl["run"]
    # the task's own nodeSelector key overrides the policy's; other policy keys are added
    assert run["nodeSelector"] == {"pool": "a100", "nvidia.com/gpu.present": "true"}
    assert run["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists"}]
    assert json.loads(run["podSpecPatch"]) == {"runtimeClassName": "nvidia"}
    for step in ("download", "upload"):
        assert not {"nodeSelector", "tolerations", "podSpecPatch"} & set(tpl[step])


def test_cpu_only_run_step_is_left_alone() -> None:
    tpl = _templates(_task("preprocessing"), POLICY)
    assert not {"nodeSelector", "tolerations", "podSpecPatch"} & set(tpl["run"])


def test_gpu_alias_becomes_the_cluster_resource_name() -> None:
    task = _task("training", limits={"gpu": 2, "memory": "8Gi"})
    amd = RunStepDefaults(gpu_resource_name="amd.com/gpu", runtime_class_name="rocm")
    run = _templates(task, amd)["run"]
    assert run["container"]["resources"]["limits"] == {"amd.com/gpu": "2", "memory": "8Gi"}
    assert json.loads(run["podSpecPatch"]) == {"runtimeClassName": "rocm"}


def test_no_policy_changes_nothing() -> None:
    assert _templates(_task("training"), None) == _templates(_task("training"),
                                                              RunStepDefaults())
