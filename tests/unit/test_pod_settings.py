"""Pod settings of a task (spec.runtime): /dev/shm, pull secrets, read-only data volumes and
pvc:// inputs, pod labels and annotations, scheduler, RuntimeClass, GPU resources by prefix;
with a Pipeline's defaults and the operator's (chart values taskDefaults.*). The same on a real
node: tests/node/test_pod_settings_real.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cel_expr_python import cel
from pydantic import ValidationError

from harness.chart import find, render
from harness.tasks import example, example_with
from mltask_operator.api.v1alpha1 import mltask as api
from mltask_operator.api.v1alpha1.common import LocalObjectReference
from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.api.v1alpha1.pipeline import Pipeline
from mltask_operator.builders.mltask import child_spec
from mltask_operator.builders.workflow import ResolvedInputs, build_workflow
from mltask_operator.crdgen import CRDS, openapi_schema
from mltask_operator.settings import (
    ConfigError,
    RunStepDefaults,
    Settings,
    TaskDefaults,
)
from mltask_operator.transfer import steps as transfer_steps

INPUTS = ResolvedInputs(dataset_uri="s3://d/ds.zip")
GPU = RunStepDefaults(node_selector={"nvidia.com/gpu.present": "true"},
                      tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}],
                      runtime_class_name="nvidia")


def task(runtime: dict[str, Any] | None = None, name: str = "training",
         **changes: Any) -> MLTask:
    body = example_with(name, **changes)
    body["metadata"].update(namespace="ml", uid="u")
    body["spec"].setdefault("runtime", {}).update(runtime or {})
    return MLTask.model_validate(body)


def workflow(t: MLTask, inputs: ResolvedInputs = INPUTS, **kw: Any) -> dict[str, Any]:
    return build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD, inputs=inputs, **kw)


def templates(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


def mounts(wf: dict[str, Any], step: str) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in templates(wf)[step]["container"]["volumeMounts"]}


def volumes(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in wf["spec"]["volumes"]}


def env(wf: dict[str, Any], step: str) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in templates(wf)[step]["container"]["env"]}


# -------------------------------------------------------------------------------- /dev/shm


def test_shared_memory_is_a_memory_backed_dev_shm_on_the_run_step_only() -> None:
    wf = workflow(task({"sharedMemorySize": "2Gi"}))
    assert volumes(wf)["dshm"] == {"name": "dshm",
                                   "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}
    assert mounts(wf, "run")["/dev/shm"]["name"] == "dshm"
    for step in ("download", "upload"):
        assert "/dev/shm" not in mounts(wf, step)


def test_no_shared_memory_size_leaves_the_runtime_default() -> None:
    wf = workflow(task())
    assert "dshm" not in volumes(wf)
    assert "/dev/shm" not in mounts(wf, "run")


def test_the_operator_default_applies_to_tasks_without_their_own() -> None:
    defaults = TaskDefaults(shared_memory_size="1Gi")
    assert volumes(workflow(task(), task_defaults=defaults))["dshm"]["emptyDir"][
        "sizeLimit"] == "1Gi"
    assert volumes(workflow(task({"sharedMemorySize": "4Gi"}), task_defaults=defaults))[
        "dshm"]["emptyDir"]["sizeLimit"] == "4Gi"


def test_a_continued_attempt_without_the_run_step_has_no_shm_volume() -> None:
    wf = build_workflow(task({"sharedMemorySize": "2Gi"}), attempt=2, start_at=StepName.UPLOAD,
                        inputs=INPUTS)
    assert "dshm" not in volumes(wf)


# --------------------------------------------------------------------------- pull secrets


def test_pull_secrets_reach_every_step_pod_the_operators_first_each_once() -> None:
    wf = workflow(task({"imagePullSecrets": [{"name": "team-registry"}, {"name": "shared"}]}),
                  task_defaults=TaskDefaults(image_pull_secrets=("shared",)))
    assert wf["spec"]["imagePullSecrets"] == [{"name": "shared"}, {"name": "team-registry"}]
    assert "imagePullSecrets" not in workflow(task())["spec"]


# -------------------------------------------------------------------------------- volumes


def test_data_volumes_are_mounted_read_only_into_the_run_step() -> None:
    wf = workflow(task({"volumes": [
        {"name": "imagenet", "claimName": "imagenet-pvc", "mountPath": "/data/imagenet"},
        {"name": "vocab", "claimName": "shared", "mountPath": "/vocab", "subPath": "v2"}]}))
    assert volumes(wf)["data-imagenet"] == {"name": "data-imagenet", "persistentVolumeClaim": {
        "claimName": "imagenet-pvc", "readOnly": True}}
    assert mounts(wf, "run")["/data/imagenet"] == {"name": "data-imagenet",
                                                   "mountPath": "/data/imagenet",
                                                   "readOnly": True}
    assert mounts(wf, "run")["/vocab"]["subPath"] == "v2"
    for step in ("download", "upload"):
        assert "/data/imagenet" not in mounts(wf, step)


@pytest.mark.parametrize("path", ["data", "/", "/mltask", "/mltask/input/x", "/dev/shm", "/proc",
                                  "/etc/passwd", "/usr/lib", "/data/../etc", "/var/run/x"])
def test_a_mount_path_must_be_absolute_and_not_the_tasks_or_the_systems(path: str) -> None:
    volume = {"name": "d", "claimName": "c", "mountPath": path}
    assert rule_errors("DataVolume", volume), path


@pytest.mark.parametrize("path", ["/data", "/datasets/imagenet", "/home/user/data", "/mnt/x"])
def test_mount_paths_that_are_allowed(path: str) -> None:
    assert rule_errors("DataVolume", {"name": "d", "claimName": "c", "mountPath": path}) == []


def test_sub_path_is_relative_without_dot_dot() -> None:
    base = {"name": "d", "claimName": "c", "mountPath": "/data"}
    assert rule_errors("DataVolume", {**base, "subPath": "a/b"}) == []
    assert rule_errors("DataVolume", {**base, "subPath": "/a"})
    assert rule_errors("DataVolume", {**base, "subPath": "a/../b"})


def test_each_mount_path_once() -> None:
    vols = [{"name": "a", "claimName": "c", "mountPath": "/data"},
            {"name": "b", "claimName": "d", "mountPath": "/data"}]
    assert rule_errors("Runtime", {"volumes": vols}) == ["volumes: each mountPath may be used once"]


# ------------------------------------------------------------------------------ pvc inputs


def test_a_pvc_input_is_read_in_place_by_the_run_step() -> None:
    t = task(input={"dataset": {"uri": "pvc://datasets/digits/v1"}})
    wf = workflow(t, ResolvedInputs(dataset_uri="pvc://datasets/digits/v1"))
    assert volumes(wf)["input-dataset"] == {"name": "input-dataset", "persistentVolumeClaim": {
        "claimName": "datasets", "readOnly": True}}
    assert mounts(wf, "run")["/mltask-volumes/dataset"]["readOnly"] is True
    assert env(wf, "run")["MLTASK_INPUT_DATASET_DIR"] == "/mltask-volumes/dataset/digits/v1"
    # the download step does not mount it, and its program leaves it alone
    assert "/mltask-volumes/dataset" not in mounts(wf, "download")
    assert env(wf, "download")["MLTASK_INPUT_DATASET_DIR"] == "/mltask/input/dataset"
    assert transfer_steps.inputs(env(wf, "download")) == []


def test_a_pvc_model_beside_a_downloaded_dataset() -> None:
    inputs = ResolvedInputs(dataset_uri="s3://data/ds.zip", model_uri="pvc://models")
    wf = workflow(task(name="optimization"), inputs)
    assert env(wf, "run")["MLTASK_INPUT_MODEL_DIR"] == "/mltask-volumes/model"
    assert env(wf, "run")["MLTASK_INPUT_DATASET_DIR"] == "/mltask/input/dataset"
    assert [i.name for i in transfer_steps.inputs(env(wf, "download"))] == ["dataset"]


@pytest.mark.parametrize(("uri", "ok"), [
    ("pvc://datasets/digits", True), ("pvc://datasets", True), ("pvc://my.claim/a/b.csv", True),
    ("pvc://Datasets/x", False), ("pvc:///x", False), ("pvc://d/../etc", False),
    ("pvc://d/./x", False), ("s3://bucket/key", True)])
def test_pvc_uri_form(uri: str, ok: bool) -> None:
    assert (rule_errors("DatasetInput", {"uri": uri}) == []) == ok
    if ok:  # the default download step accepts it (and leaves it to the run step)
        spec = example_with("training", input__dataset={"uri": uri})["spec"]
        assert not [e for e in rule_errors("TaskTemplate", spec) if "download step reads" in e]


# ------------------------------------------------------------------- labels and annotations


def test_pod_labels_and_annotations_reach_every_step_pod_and_ours_win() -> None:
    t = task({"podLabels": {"kueue.x-k8s.io/queue-name": "team-a"},
              "podAnnotations": {"cost-allocation/project": "vision"}})
    meta = workflow(t)["spec"]["podMetadata"]
    assert meta["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert meta["labels"]["mltask.dev/task"] == "train-digits"
    assert meta["annotations"] == {"cost-allocation/project": "vision"}


def test_the_operators_own_keys_cannot_be_set() -> None:
    for field in ("podLabels", "podAnnotations"):
        for key in ("mltask.dev/task", "app.kubernetes.io/managed-by"):
            errors = rule_errors("Runtime", {field: {key: "x"}})
            assert any("operator's own" in e for e in errors), (field, key, errors)
    assert rule_errors("Runtime", {"podLabels": {"team": "a b"}})  # not a label value
    assert rule_errors("Runtime", {"podLabels": {"kueue.x-k8s.io/queue-name": "a"}}) == []


# -------------------------------------------------------------- scheduler and RuntimeClass


def test_scheduler_name_on_every_pod_the_tasks_first() -> None:
    assert workflow(task({"schedulerName": "volcano"}))["spec"]["schedulerName"] == "volcano"
    assert workflow(task(), task_defaults=TaskDefaults(scheduler_name="yunikorn"))["spec"][
        "schedulerName"] == "yunikorn"
    assert "schedulerName" not in workflow(task())["spec"]


def runtime_class(wf: dict[str, Any]) -> str | None:
    patch = templates(wf)["run"].get("podSpecPatch")
    return json.loads(patch).get("runtimeClassName") if patch else None


def test_runtime_class_of_the_run_step_task_then_gpu_default_then_operator_default() -> None:
    every = TaskDefaults(runtime_class_name="kata")
    assert runtime_class(workflow(task({"runtimeClassName": "gvisor"}), defaults=GPU)) == "gvisor"
    assert runtime_class(workflow(task(), defaults=GPU, task_defaults=every)) == "nvidia"
    assert runtime_class(workflow(task(name="preprocessing"), defaults=GPU,
                                  task_defaults=every)) == "kata"
    assert runtime_class(workflow(task(name="preprocessing"), defaults=GPU)) is None
    assert "podSpecPatch" not in templates(workflow(task({"runtimeClassName": "x"})))["download"]


# -------------------------------------------------------------------------- GPU prefixes


@pytest.mark.parametrize("resource", ["nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb",
                                      "nvidia.com/gpu", "gpu"])
def test_mig_slices_get_the_gpu_defaults(resource: str) -> None:
    t = task(steps__run__resources={"limits": {resource: 1}}, name="preprocessing")
    run = templates(workflow(t, defaults=GPU))["run"]
    assert run["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists"} in run["tolerations"]
    assert runtime_class(workflow(t, defaults=GPU)) == "nvidia"


def test_a_resource_outside_the_prefixes_is_not_a_gpu() -> None:
    t = task(steps__run__resources={"limits": {"example.com/fpga": 1}}, name="preprocessing")
    assert "nodeSelector" not in templates(workflow(t, defaults=GPU))["run"]
    amd = RunStepDefaults(gpu_resource_name="amd.com/gpu", gpu_resource_prefixes=("amd.com/",),
                          runtime_class_name="rocm")
    t = task(steps__run__resources={"limits": {"amd.com/mi300x-partition": 1}})
    assert runtime_class(workflow(t, defaults=amd)) == "rocm"


def test_settings_read_prefixes_and_task_defaults() -> None:
    s = Settings.from_env({})
    assert s.run_defaults.gpu_resource_prefixes == ("nvidia.com/gpu", "nvidia.com/mig-")
    assert s.task_defaults == TaskDefaults()
    s = Settings.from_env({"MLTASK_GPU_RESOURCE_PREFIXES": "amd.com/gpu, amd.com/mi",
                           "MLTASK_TASK_IMAGE_PULL_SECRETS": "regcred,other",
                           "MLTASK_TASK_RUNTIME_CLASS_NAME": "nvidia",
                           "MLTASK_TASK_SCHEDULER_NAME": "volcano",
                           "MLTASK_TASK_SHARED_MEMORY_SIZE": "1Gi"})
    assert s.run_defaults.gpu_resource_prefixes == ("amd.com/gpu", "amd.com/mi")
    assert s.task_defaults == TaskDefaults(("regcred", "other"), "nvidia", "volcano", "1Gi")
    for name, value in (("MLTASK_GPU_RESOURCE_PREFIXES", "mig-"),
                        ("MLTASK_TASK_SHARED_MEMORY_SIZE", "lots"),
                        ("MLTASK_TASK_SCHEDULER_NAME", "Volcano"),
                        ("MLTASK_TASK_IMAGE_PULL_SECRETS", "Reg_Cred")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


def test_the_chart_passes_task_defaults_and_prefixes_as_env() -> None:
    docs = render("mltask-system", "--set", "taskDefaults.imagePullSecrets[0].name=regcred",
                  "--set", "taskDefaults.runtimeClassName=nvidia",
                  "--set", "taskDefaults.schedulerName=volcano",
                  "--set", "taskDefaults.sharedMemorySize=2Gi")
    env_ = {e["name"]: e.get("value", "") for e in find(docs, "Deployment")["spec"]["template"][
        "spec"]["containers"][0]["env"] if "value" in e}
    s = Settings.from_env(env_)
    assert s.task_defaults == TaskDefaults(("regcred",), "nvidia", "volcano", "2Gi")
    assert s.run_defaults.gpu_resource_prefixes == ("nvidia.com/gpu", "nvidia.com/mig-")


# ------------------------------------------------------------------------ Pipeline defaults


def test_pipeline_defaults_carry_the_pod_settings_and_a_tasks_own_win() -> None:
    own = example("training")["spec"]
    own["runtime"]["schedulerName"] = "own-scheduler"
    body = {"apiVersion": "mltask.dev/v1alpha1", "kind": "Pipeline",
            "metadata": {"name": "p", "namespace": "ml", "uid": "u"},
            "spec": {"defaults": {
                "sharedMemorySize": "1Gi", "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [{"name": "d", "claimName": "c", "mountPath": "/data"}],
                "podLabels": {"kueue.x-k8s.io/queue-name": "team-a"},
                "podAnnotations": {"cost-allocation/team": "a"},
                "schedulerName": "volcano", "runtimeClassName": "nvidia"},
                "tasks": [{"name": "train", "spec": own}]}}
    p = Pipeline.model_validate(body)
    rt = child_spec(p, p.spec.tasks[0], {}).runtime
    assert (rt.shared_memory_size, rt.image_pull_secrets, rt.pod_labels, rt.pod_annotations,
            rt.runtime_class_name) == (
        "1Gi", [LocalObjectReference(name="regcred")], {"kueue.x-k8s.io/queue-name": "team-a"},
        {"cost-allocation/team": "a"}, "nvidia")
    assert rt.volumes and rt.volumes[0].claim_name == "c"
    assert rt.scheduler_name == "own-scheduler"


# ------------------------------------------------------------------------- schema bounds


@pytest.mark.parametrize("spec", CRDS, ids=lambda s: s.kind)
def test_the_new_fields_are_in_both_crds_bounded(spec: Any) -> None:
    schema = openapi_schema(spec)["properties"]["spec"]["properties"]
    runtime = (schema["runtime"] if spec.kind == "MLTask" else schema["defaults"])["properties"]
    assert runtime["imagePullSecrets"]["maxItems"] == 16
    assert runtime["imagePullSecrets"]["items"]["properties"]["name"]["maxLength"] == 253
    assert runtime["volumes"]["maxItems"] == api.MAX_DATA_VOLUMES
    assert runtime["podLabels"]["maxProperties"] == api.MAX_POD_LABELS
    assert runtime["podLabels"]["additionalProperties"]["maxLength"] == 63
    assert runtime["podAnnotations"]["additionalProperties"]["maxLength"] == 4096
    assert runtime["sharedMemorySize"]["maxLength"] == 64
    for name in ("schedulerName", "runtimeClassName"):
        assert runtime[name]["maxLength"] == 253


def test_unknown_pod_setting_is_refused() -> None:
    with pytest.raises(ValidationError):
        task({"volumes": [{"name": "d", "claimName": "c", "mountPath": "/d", "readOnly": False}]})


# --------------------------------------------------------------- CRD rules, with cel-cpp

_ENV = cel.NewEnv(config=cel.NewEnvConfigFromYaml("extensions:\n  - name: strings\n"
                                                  "    version: latest\n"),
                  variables={"self": cel.Type.DYN})
_MODELS = {"DataVolume": api.DataVolume, "Runtime": api.Runtime,
           "DatasetInput": api.DatasetInput, "TaskTemplate": api.TaskTemplate}


def rule_errors(model: str, value: dict[str, Any]) -> list[str]:
    """The messages of `model`'s own CEL rules (x-kubernetes-validations) that refuse
    `value`; rules using Kubernetes' own CEL functions (quantity) are left to the API server."""
    rules = _MODELS[model].model_json_schema()["x-kubernetes-validations"]
    out = []
    for r in rules:
        if "quantity" in r["rule"].lower():
            continue
        result = _ENV.compile(r["rule"]).eval(data={"self": value})
        assert result.type().name() == "BOOL", (r["rule"], result.value())
        if not result.plain_value():
            out.append(r["message"])
    return out


# ------------------------------------------------------------------------------ the example


def test_the_gpu_cluster_example_builds_under_its_helm_values() -> None:
    from harness.chart import GPU_VALUES
    from mltask_operator.task_policy import spec_violations

    body = example("gpu-cluster")
    body["metadata"].update(namespace="ml-team-a", uid="u")
    t = MLTask.model_validate(body)
    docs = render("mltask-system", "-f", str(GPU_VALUES))
    env_ = {e["name"]: e.get("value", "") for e in find(docs, "Deployment")["spec"]["template"][
        "spec"]["containers"][0]["env"] if "value" in e}
    s = Settings.from_env(env_)
    assert spec_violations(body["spec"], s.policy) == []
    wf = build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD,
                        inputs=ResolvedInputs(dataset_uri=body["spec"]["input"]["dataset"]["uri"]),
                        defaults=s.run_defaults, task_defaults=s.task_defaults)
    run = templates(wf)["run"]
    assert runtime_class(wf) == "nvidia" and run["tolerations"]     # the MIG slice is a GPU
    assert wf["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert volumes(wf)["dshm"]["emptyDir"]["sizeLimit"] == "2Gi"
    assert env(wf, "run")["MLTASK_INPUT_DATASET_DIR"] == (
        "/mltask-volumes/dataset/imagenet-subset/v3")
    assert wf["spec"]["podMetadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    for v in body["spec"]["runtime"]["volumes"]:
        assert rule_errors("DataVolume", v) == []
    assert rule_errors("Runtime", body["spec"]["runtime"]) == []
