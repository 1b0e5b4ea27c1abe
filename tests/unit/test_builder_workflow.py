"""The pure builder MLTask -> Argo Workflow and working volume, for every example and start step."""

from __future__ import annotations

import pytest

from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders.workflow import (
    ResolvedInputs,
    build_work_pvc,
    build_workflow,
    workflow_name,
)

EXAMPLES = ["preprocessing", "training", "optimization"]
INPUTS = ResolvedInputs(dataset_uri="s3://d/ds.zip", model_uri="s3://m/model.pt")


def task(name: str = "training", **spec) -> MLTask:
    body = example(name)
    body["metadata"].update(namespace="ml", uid="task-uid",
                            labels={"app.kubernetes.io/instance": "apps", "team": "cv"},
                            annotations={"argocd.argoproj.io/tracking-id": "apps:x"})
    body["spec"].update(spec)
    return MLTask.model_validate(body)


def build(t: MLTask, attempt: int = 1, start_at: StepName = StepName.DOWNLOAD) -> dict:
    inputs = INPUTS if t.spec.input.model else ResolvedInputs("s3://d/ds.zip")
    return build_workflow(t, attempt=attempt, start_at=start_at, inputs=inputs)


def templates(wf: dict) -> dict[str, dict]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


@pytest.mark.parametrize("name", EXAMPLES)
def test_deterministic_name_and_dag(name: str) -> None:
    t = task(name)
    wf = build(t, attempt=3)
    assert wf["metadata"]["name"] == workflow_name(t.name, 3) == f"{t.name}-3"
    assert wf == build(t, attempt=3), "same input, same Workflow"
    dag = templates(wf)["main"]["dag"]["tasks"]
    assert [(d["name"], d.get("depends")) for d in dag] == [
        ("download", None), ("run", "download.Succeeded"), ("upload", "run.Succeeded")]


@pytest.mark.parametrize(("start", "steps"), [(StepName.RUN, ["run", "upload"]),
                                              (StepName.UPLOAD, ["upload"])])
def test_continue_starts_at_the_unfinished_step(start: StepName, steps: list[str]) -> None:
    wf = build(task(), attempt=2, start_at=start)
    dag = templates(wf)["main"]["dag"]["tasks"]
    assert [d["name"] for d in dag] == steps and "depends" not in dag[0]
    assert wf["metadata"]["annotations"]["mltask.dev/start-step"] == str(start)


def test_labels_and_owner_never_copy_the_tasks_metadata() -> None:
    wf = build(task(), attempt=2)
    want = {"mltask.dev/task": "train-resnet18", "mltask.dev/type": "training",
            "mltask.dev/attempt": "2", "app.kubernetes.io/managed-by": "mltask-operator"}
    assert wf["metadata"]["labels"] == want
    assert wf["spec"]["podMetadata"]["labels"] == want
    assert set(wf["metadata"]["annotations"]) == {"mltask.dev/start-step"}
    owner = wf["metadata"]["ownerReferences"]
    assert owner == [{"apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
                      "name": "train-resnet18", "uid": "task-uid", "controller": True,
                      "blockOwnerDeletion": True}]


def test_working_volume_is_owned_by_the_task_and_shared_by_all_steps() -> None:
    t = task()
    pvc = build_work_pvc(t)
    assert pvc["metadata"]["name"] == "train-resnet18-work"
    assert pvc["metadata"]["ownerReferences"][0]["uid"] == "task-uid"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    wf = build(t)
    assert wf["spec"]["volumes"][0] == {"name": "work", "persistentVolumeClaim": {
        "claimName": "train-resnet18-work"}}
    for step in ("download", "run", "upload"):
        mounts = templates(wf)[step]["container"]["volumeMounts"]
        assert {"name": "work", "mountPath": "/mltask"} in mounts


def test_retry_strategy_covers_lost_pods_and_is_absent_at_limit_zero() -> None:
    wf = build(task())
    rs = templates(wf)["run"]["retryStrategy"]
    assert rs == {"limit": 3, "retryPolicy": "OnError",
                  "backoff": {"duration": "10s", "factor": 2, "maxDuration": "10m"}}
    body = example("training")
    body["metadata"].update(namespace="ml", uid="u")
    body["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    no_retry = build(MLTask.model_validate(body))
    assert all("retryStrategy" not in t for t in no_retry["spec"]["templates"])


def test_gpu_placement_and_runtime_fields() -> None:
    body = example("training")
    body["metadata"].update(namespace="ml", uid="u")
    body["spec"]["runtime"].update(priorityClassName="ml-high", serviceAccountName="runner")
    wf = build(MLTask.model_validate(body))
    spec = wf["spec"]
    assert templates(wf)["run"]["container"]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    assert (spec["activeDeadlineSeconds"], spec["podPriorityClassName"],
            spec["serviceAccountName"]) == (86400, "ml-high", "runner")


def test_storage_credentials_reach_only_download_and_upload() -> None:
    wf = build(task())
    tpl = templates(wf)
    for step in ("download", "upload"):
        assert tpl[step]["container"]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    run = tpl["run"]["container"]
    assert "envFrom" not in run
    assert {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "wandb", "key": "api-key"}}} in run["env"], "user env kept, after the contract"


def test_contract_env_and_output_parameters() -> None:
    wf = build(task("optimization"), attempt=4)
    tpl = templates(wf)
    env = {e["name"]: e.get("value") for e in tpl["run"]["container"]["env"]}
    assert env["MLTASK_STEP"] == "run" and env["MLTASK_ATTEMPT"] == "4"
    assert env["MLTASK_INPUT_DIR"] == "/mltask/input"
    assert env["MLTASK_OUTPUT_DIR"] == "/mltask/output"
    assert env["MLTASK_METRICS_FILE"] == "/mltask/meta/metrics.json"
    assert env["MLTASK_RESULT_FILE"] == "/mltask/meta/result.json"
    assert env["MLTASK_INPUT_DATASET_URI"] == "s3://d/ds.zip"
    assert env["MLTASK_INPUT_MODEL_URI"] == "s3://m/model.pt"
    assert env["MLTASK_OUTPUT_FORMAT"] == "float16"
    assert tpl["run"]["outputs"] == {"parameters": [{
        "name": "metrics", "valueFrom": {"path": "/mltask/meta/metrics.json", "default": "{}"}}]}
    assert tpl["upload"]["outputs"] == {"parameters": [{
        "name": "result", "valueFrom": {"path": "/mltask/meta/result.json"}}]}, \
        "no default: an upload that wrote no result fails"
    assert "outputs" not in tpl["download"]


def test_config_map_is_mounted_read_only() -> None:
    wf = build(task())
    assert {"name": "config", "configMap": {"name": "resnet18-hparams"}} in wf["spec"]["volumes"]
    mounts = templates(wf)["run"]["container"]["volumeMounts"]
    assert {"name": "config", "mountPath": "/etc/mltask/config", "readOnly": True} in mounts
