"""The project's own download and upload steps: what the builder writes when a task leaves them
out, what it keeps when a task brings its own, and the pod settings every step gets."""

from __future__ import annotations

from typing import Any

import pytest

from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders.workflow import (
    CONTAINER_SECURITY_CONTEXT,
    TRANSFER_SECURITY_CONTEXT,
    WORK_GROUP,
    ResolvedInputs,
    build_workflow,
)
from mltask_operator.settings import DEFAULT_TRANSFER_IMAGE, TransferDefaults

UID = "0b4c2a9e-1111-4c3e-9d7e-5a6b7c8d9e0f"
OWN_STEP = {"image": "registry.example.com/my-s3-sync:2", "command": ["sync"]}


def task(steps: dict[str, Any] | None = None, **spec: Any) -> MLTask:
    body: dict[str, Any] = {
        "apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
        "metadata": {"name": "digits", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": {
            "type": "optimization",
            "input": {"dataset": {"uri": "s3://data/digits/", "unpack": True},
                      "model": {"uri": "hf://acme/digits-mlp@v2"}},
            "steps": {"run": {"image": "localhost/digits:1", "command": ["python3"]},
                      **(steps or {})},
            "output": {"uri": "s3://models/digits/", "model": {"name": "digits-fp16"}},
            "storage": {"secretRef": {"name": "s3-credentials"},
                        "endpoint": "http://10.244.0.1:9000"},
            **spec,
        },
    }
    return MLTask.model_validate(body)


def templates(t: MLTask, transfer: TransferDefaults | None = None,
              start_at: StepName = StepName.DOWNLOAD) -> dict[str, dict[str, Any]]:
    model = t.spec.input.model.uri if t.spec.input.model else None
    wf = build_workflow(t, attempt=1, start_at=start_at, transfer=transfer,
                        inputs=ResolvedInputs(str(t.spec.input.dataset.uri), model))
    return {tpl["name"]: tpl for tpl in wf["spec"]["templates"]}


def env(template: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in template["container"]["env"] if "value" in e}


def test_left_out_steps_are_the_projects_transfer_program() -> None:
    tpl = templates(task())
    for step, verb in (("download", "download"), ("upload", "upload")):
        c = tpl[step]["container"]
        assert c["image"] == DEFAULT_TRANSFER_IMAGE
        assert c["command"] == ["mltask-transfer", verb]
        assert c["imagePullPolicy"] == "IfNotPresent"
        assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                  "limits": {"memory": "1Gi"}}
        assert c["securityContext"] == TRANSFER_SECURITY_CONTEXT
        assert c["securityContext"]["runAsUser"] == WORK_GROUP
        assert c["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]


def test_the_operator_settings_choose_the_transfer_image() -> None:
    settings = TransferDefaults(image="registry.example.com/mltask-operator:0.1.0",
                                image_pull_policy="Always",
                                resources={"limits": {"memory": "512Mi"}})
    c = templates(task(), settings)["download"]["container"]
    assert (c["image"], c["imagePullPolicy"]) == (settings.image, "Always")
    assert c["resources"] == {"limits": {"memory": "512Mi"}}


@pytest.mark.parametrize("own", ["download", "upload"])
def test_a_task_that_brings_its_own_step_keeps_it(own: str) -> None:
    tpl = templates(task({own: OWN_STEP}))
    mine = tpl[own]["container"]
    assert (mine["image"], mine["command"]) == (OWN_STEP["image"], OWN_STEP["command"])
    assert mine["securityContext"] == CONTAINER_SECURITY_CONTEXT, \
        "a user's step runs as its image's user, restricted like every step"
    other = "upload" if own == "download" else "download"
    assert tpl[other]["container"]["image"] == DEFAULT_TRANSFER_IMAGE


def test_the_run_step_is_never_a_transfer_step() -> None:
    c = templates(task())["run"]["container"]
    assert c["image"] == "localhost/digits:1"
    assert c["securityContext"] == CONTAINER_SECURITY_CONTEXT, "as the image's user"
    assert "envFrom" not in c


def test_a_continued_attempt_without_download_has_no_download_template() -> None:
    assert set(templates(task(), start_at=StepName.UPLOAD)) == {"main", "upload"}


def test_the_transfer_steps_learn_where_inputs_go_and_which_secret_they_hold() -> None:
    tpl = templates(task())
    down, run, up = (env(tpl[s]) for s in ("download", "run", "upload"))
    assert down["MLTASK_INPUT_DATASET_DIR"] == "/mltask/input/dataset"
    assert down["MLTASK_INPUT_MODEL_DIR"] == "/mltask/input/model"
    assert down["MLTASK_INPUT_DATASET_UNPACK"] == "true"
    assert "MLTASK_INPUT_MODEL_UNPACK" not in down, "unpack only when asked"
    assert down["MLTASK_INPUT_MODEL_URI"] == "hf://acme/digits-mlp@v2"
    for transfer in (down, up):
        assert transfer["MLTASK_STORAGE_SECRET"] == "s3-credentials"
        assert transfer["MLTASK_STORAGE_ENDPOINT"] == "http://10.244.0.1:9000"
    assert "MLTASK_STORAGE_SECRET" not in run and "MLTASK_STORAGE_ENDPOINT" not in run
    assert run["MLTASK_INPUT_MODEL_DIR"] == "/mltask/input/model", "run reads the inputs there"


def test_without_a_model_input_no_model_dir() -> None:
    t = task(type="training", input={"dataset": {"uri": "s3://data/digits/"}})
    assert "MLTASK_INPUT_MODEL_DIR" not in env(templates(t)["download"])


def test_without_a_secret_no_secret_is_named() -> None:
    t = task(storage=None)
    down = templates(t)["download"]["container"]
    assert "envFrom" not in down, "no Secret: the SDK's default chain (IRSA, instance role)"
    assert "MLTASK_STORAGE_SECRET" not in env(templates(t)["download"])


@pytest.mark.parametrize("step", ["download", "run", "upload"])
def test_every_step_leaves_its_last_log_lines_when_it_fails(step: str) -> None:
    c = templates(task({"download": OWN_STEP}))[step]["container"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_every_pod_shares_the_working_volume_through_its_group() -> None:
    t = task()
    wf = build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD,
                        inputs=ResolvedInputs("s3://data/digits/", "hf://acme/digits-mlp"))
    assert wf["spec"]["securityContext"]["fsGroup"] == WORK_GROUP
    assert wf["spec"]["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"
