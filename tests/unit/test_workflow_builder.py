"""The pure builder MLTask -> Argo Workflow (and working volume), checked against every example."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from harness import argo_standin as argo
from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders.workflow import (
    ON_INFRASTRUCTURE_ERROR,
    ResolvedInputs,
    build_work_pvc,
    build_workflow,
)
from mltask_operator.settings import (
    DEFAULT_TRANSFER_IMAGE,
    DEFAULT_TRANSFER_RESOURCES,
    RunStepDefaults,
    TransferDefaults,
)

ON_INFRA = ON_INFRASTRUCTURE_ERROR

#: The three examples, and "own-steps": the training example as a task of a pipeline that brings
#: its own download and upload steps, a ConfigMap, run args and an env from a Secret (what the
#: examples leave out, so that they run on a cluster holding only the storage Secret).
EXAMPLES = ["preprocessing", "training", "optimization", "own-steps"]
STEPS = ["download", "run", "upload"]
UID = "0b4c2a9e-1111-4c3e-9d7e-5a6b7c8d9e0f"
OWN_STEPS = {
    "download": {"image": "registry.example.com/s3-sync:1.4", "command": ["s3-sync", "get"]},
    "upload": {"image": "registry.example.com/s3-sync:1.4", "command": ["s3-sync", "put"]},
}
SECRET_ENV = {"name": "MLFLOW_TRACKING_TOKEN",
              "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}}}
RUN_IMAGE = "localhost/mltask-example-sklearn:0.1.0"
GPU_PLACEMENT = {
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
ON_ERROR_3 = {"limit": 3, "retryPolicy": "Always", "expression": ON_INFRA,
              "backoff": {"duration": "10s", "factor": 2, "maxDuration": "10m"}}
TRAINING: dict[str, Any] = {
    "task": "train-digits",
    "labels": {"mltask.dev/task": "train-digits", "mltask.dev/type": "training",
               "app.kubernetes.io/managed-by": "mltask-operator"},
    "resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                  "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"}},
    **GPU_PLACEMENT,
    "retry": ON_ERROR_3,
    "pvc_size": "1Gi",
    "deadline": 3600,
    "config_map": None,
    "run_image": RUN_IMAGE,
    "run_command": ["python3", "-m", "digits.train"],
    "own_steps": False,
}

#: What each example must turn into, written out from examples/mltask-*.yaml.
EXPECTED: dict[str, dict[str, Any]] = {
    "preprocessing": {
        "task": "preprocess-digits",
        "labels": {"mltask.dev/task": "preprocess-digits", "mltask.dev/type": "preprocessing",
                   "app.kubernetes.io/managed-by": "mltask-operator"},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                      "limits": {"memory": "512Mi"}},
        "node_selector": None,
        "tolerations": None,
        "retry": ON_ERROR_3,
        "pvc_size": "10Gi",
        "deadline": None,
        "config_map": None,
        "run_image": RUN_IMAGE,
        "run_command": ["python3", "-m", "digits.preprocess"],
        "own_steps": False,
    },
    "training": TRAINING,
    "optimization": {
        "task": "optimize-digits",
        "labels": {"mltask.dev/task": "optimize-digits", "mltask.dev/type": "optimization",
                   "app.kubernetes.io/managed-by": "mltask-operator"},
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"},
                      "limits": {"memory": "512Mi"}},
        "node_selector": None,
        "tolerations": None,
        "retry": {"limit": 2, "retryPolicy": "Always",
                  "backoff": {"duration": "10s", "factor": 2, "maxDuration": "10m"}},
        "pvc_size": "10Gi",
        "deadline": None,
        "config_map": None,
        "run_image": RUN_IMAGE,
        "run_command": ["python3", "-m", "digits.optimize"],
        "own_steps": False,
    },
    "own-steps": {
        **TRAINING,
        "labels": {**TRAINING["labels"], "mltask.dev/pipeline": "digits"},
        "config_map": "digits-hparams",
        "own_steps": True,
    },
}

_TRAINING_RUN_ENV = [
    ("MLTASK_NAME", "train-digits"), ("MLTASK_NAMESPACE", "ml"),
    ("MLTASK_TYPE", "training"), ("MLTASK_STEP", "run"), ("MLTASK_ATTEMPT", "2"),
    ("MLTASK_WORKDIR", "/mltask"), ("MLTASK_INPUT_DIR", "/mltask/input"),
    ("MLTASK_OUTPUT_DIR", "/mltask/output"),
    ("MLTASK_METRICS_FILE", "/mltask/meta/metrics.json"),
    ("MLTASK_RESULT_FILE", "/mltask/meta/result.json"),
    ("MLTASK_CHECKPOINT_DIR", "/mltask/checkpoints"),
    ("MLTASK_INPUT_DATASET_DIR", "/mltask/input/dataset"),
    ("MLTASK_INPUT_DATASET_URI", "s3://mltask-examples/datasets/digits/digits-minmax.npz"),
    ("MLTASK_INPUT_DATASET_KIND", "project"),
    ("MLTASK_OUTPUT_URI", "s3://mltask-examples/models/digits-mlp/"),
    ("MLTASK_PARAMETERS", '{"batchSize": "32", "epochs": "40", "hiddenUnits": "128", '
                          '"learningRate": "0.001", "model": "mlp", "seed": "0"}'),
    ("MLTASK_PROGRESS_FILE", "/var/run/argo/progress"),
]
_TRAINING_OUTPUT_ENV = [
    ("MLTASK_OUTPUT_KIND", "model"), ("MLTASK_OUTPUT_NAME", "digits-mlp"),
    ("MLTASK_OUTPUT_TYPE", "mlp"), ("MLTASK_OUTPUT_INPUT_FORMAT", "sklearn"),
    ("MLTASK_OUTPUT_FORMAT", "float32"), ("MLTASK_OUTPUT_FILE_EXTENSION", "joblib"),
]

#: The step-image contract of each example's run step, in order (README "Step image contract").
RUN_ENV: dict[str, list[tuple[str, str]]] = {
    "preprocessing": [
        ("MLTASK_NAME", "preprocess-digits"), ("MLTASK_NAMESPACE", "ml"),
        ("MLTASK_TYPE", "preprocessing"), ("MLTASK_STEP", "run"), ("MLTASK_ATTEMPT", "2"),
        ("MLTASK_WORKDIR", "/mltask"), ("MLTASK_INPUT_DIR", "/mltask/input"),
        ("MLTASK_OUTPUT_DIR", "/mltask/output"),
        ("MLTASK_METRICS_FILE", "/mltask/meta/metrics.json"),
        ("MLTASK_RESULT_FILE", "/mltask/meta/result.json"),
        ("MLTASK_CHECKPOINT_DIR", "/mltask/checkpoints"),
        ("MLTASK_INPUT_DATASET_DIR", "/mltask/input/dataset"),
        ("MLTASK_INPUT_DATASET_URI", "s3://mltask-examples/raw/digits.csv.gz"),
        ("MLTASK_INPUT_DATASET_KIND", "project"),
        ("MLTASK_OUTPUT_URI", "s3://mltask-examples/datasets/digits/"),
        ("MLTASK_PARAMETERS", '{"scaling": "minmax", "seed": "0", "testSize": "0.2"}'),
        ("MLTASK_PROGRESS_FILE", "/var/run/argo/progress"),
        ("MLTASK_OUTPUT_KIND", "dataset"), ("MLTASK_OUTPUT_NAME", "digits-minmax"),
        ("MLTASK_OUTPUT_TYPE", "training"), ("MLTASK_OUTPUT_FILE_EXTENSION", "npz"),
    ],
    "training": [*_TRAINING_RUN_ENV, *_TRAINING_OUTPUT_ENV],
    "optimization": [
        ("MLTASK_NAME", "optimize-digits"), ("MLTASK_NAMESPACE", "ml"),
        ("MLTASK_TYPE", "optimization"), ("MLTASK_STEP", "run"), ("MLTASK_ATTEMPT", "2"),
        ("MLTASK_WORKDIR", "/mltask"), ("MLTASK_INPUT_DIR", "/mltask/input"),
        ("MLTASK_OUTPUT_DIR", "/mltask/output"),
        ("MLTASK_METRICS_FILE", "/mltask/meta/metrics.json"),
        ("MLTASK_RESULT_FILE", "/mltask/meta/result.json"),
        ("MLTASK_CHECKPOINT_DIR", "/mltask/checkpoints"),
        ("MLTASK_INPUT_DATASET_DIR", "/mltask/input/dataset"),
        ("MLTASK_INPUT_DATASET_URI", "s3://mltask-examples/datasets/digits/digits-minmax.npz"),
        ("MLTASK_INPUT_DATASET_KIND", "application"),
        ("MLTASK_INPUT_MODEL_DIR", "/mltask/input/model"),
        ("MLTASK_INPUT_MODEL_URI", "s3://mltask-examples/models/digits-mlp/model.joblib"),
        ("MLTASK_OUTPUT_URI", "s3://mltask-examples/models/digits-mlp-int8/"),
        ("MLTASK_PARAMETERS", '{"fineTuneEpochs": "5", "maxAccuracyDrop": "0.02", '
                              '"precision": "int8", "pruneFraction": "0.5"}'),
        ("MLTASK_PROGRESS_FILE", "/var/run/argo/progress"),
        ("MLTASK_OUTPUT_KIND", "model"), ("MLTASK_OUTPUT_NAME", "digits-mlp-int8"),
        ("MLTASK_OUTPUT_TYPE", "mlp"), ("MLTASK_OUTPUT_INPUT_FORMAT", "float32"),
        ("MLTASK_OUTPUT_FORMAT", "int8"), ("MLTASK_OUTPUT_FILE_EXTENSION", "joblib"),
    ],
    "own-steps": [*_TRAINING_RUN_ENV, ("MLTASK_CONFIG_DIR", "/etc/mltask/config"),
                  *_TRAINING_OUTPUT_ENV],
}


def source(name: str) -> dict[str, Any]:
    """examples/mltask-<name>.yaml, or for "own-steps" the training example with what the
    examples leave out: its own download and upload steps, a ConfigMap, run args, a Secret env
    and a pipelineRef."""
    if name != "own-steps":
        return example(name)
    b = example("training")
    spec = b["spec"]
    spec["pipelineRef"] = {"name": "digits"}
    spec["steps"].update(copy.deepcopy(OWN_STEPS))
    spec["steps"]["run"].update(args=["--log-every", "5"], env=[copy.deepcopy(SECRET_ENV)])
    spec["config"]["configMapRef"] = {"name": "digits-hparams"}
    return b


def body(name: str) -> dict[str, Any]:
    """The example as the API server would hand it over: namespace, uid, Argo CD's marks."""
    b = source(name)
    b["metadata"].update(
        namespace="ml", uid=UID, generation=1,
        labels={"app.kubernetes.io/instance": "ml-apps", "team": "vision"},
        annotations={"argocd.argoproj.io/tracking-id": "ml-apps:mltask.dev/MLTask:ml/x"})
    return b


def task(name: str, **runtime: Any) -> MLTask:
    b = body(name)
    b["spec"].setdefault("runtime", {}).update(runtime)
    return MLTask.model_validate(b)


def inputs_of(t: MLTask) -> ResolvedInputs:
    model = t.spec.input.model.uri if t.spec.input.model else None
    return ResolvedInputs(dataset_uri=str(t.spec.input.dataset.uri), model_uri=model)


def build(t: MLTask, attempt: int = 1, start_at: StepName = StepName.DOWNLOAD,
          defaults: RunStepDefaults | None = None) -> dict[str, Any]:
    return build_workflow(t, attempt=attempt, start_at=start_at, inputs=inputs_of(t),
                          defaults=defaults)


def templates(wf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in wf["spec"]["templates"]}


def env_of(template: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(e["name"], e.get("value")) for e in template["container"]["env"]]


# ------------------------------------------------------------------------------ identity


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("attempt", [1, 7])
def test_workflow_name_is_task_dash_attempt(name: str, attempt: int) -> None:
    wf = build(task(name), attempt=attempt)
    assert (wf["apiVersion"], wf["kind"]) == ("argoproj.io/v1alpha1", "Workflow")
    assert wf["metadata"]["name"] == f"{EXPECTED[name]['task']}-{attempt}"
    assert wf["metadata"]["namespace"] == "ml"
    assert "generateName" not in wf["metadata"], "a random name could be created twice"


@pytest.mark.parametrize("name", EXAMPLES)
def test_same_input_same_workflow(name: str) -> None:
    t = task(name)
    before = t.model_dump()
    first = build(t, attempt=2, start_at=StepName.RUN)
    again = build(task(name), attempt=2, start_at=StepName.RUN)
    assert first == again
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    assert t.model_dump() == before, "building must not change the task"
    # and the attempt does make a difference
    assert build(t, attempt=3, start_at=StepName.RUN) != first


# ------------------------------------------------------------------------------------ dag


@pytest.mark.parametrize("name", EXAMPLES)
def test_dag_is_download_run_upload(name: str) -> None:
    wf = build(task(name))
    spec = wf["spec"]
    assert spec["entrypoint"] == "main"
    tpl = templates(wf)
    assert list(tpl) == ["main", *STEPS]
    dag = tpl["main"]["dag"]["tasks"]
    assert [(d["name"], d["template"], d.get("depends")) for d in dag] == [
        ("download", "download", None),
        ("run", "run", "download.Succeeded"),
        ("upload", "upload", "run.Succeeded"),
    ]
    # Argo refuses a task that sets both `depends` and `dependencies`
    assert all("dependencies" not in d for d in dag)
    assert wf["metadata"]["annotations"] == {"mltask.dev/start-step": "download"}


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize(("start", "steps"), [
    (StepName.DOWNLOAD, ["download", "run", "upload"]),
    (StepName.RUN, ["run", "upload"]),
    (StepName.UPLOAD, ["upload"]),
])
def test_start_at_leaves_the_earlier_steps_out(name: str, start: StepName,
                                               steps: list[str]) -> None:
    wf = build(task(name), attempt=2, start_at=start)
    tpl = templates(wf)
    dag = tpl["main"]["dag"]["tasks"]
    assert [d["name"] for d in dag] == steps
    assert "depends" not in dag[0], "the first step of a continued attempt waits for nothing"
    assert [d["depends"] for d in dag[1:]] == [f"{s}.Succeeded" for s in steps[:-1]]
    assert list(tpl) == ["main", *steps], "no template for a skipped step"
    assert wf["metadata"]["annotations"]["mltask.dev/start-step"] == str(start)
    # the earlier steps' output is still there: the same working volume
    assert wf["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == \
        f"{EXPECTED[name]['task']}-work"


def test_continued_workflow_runs_under_argo_from_its_first_step() -> None:
    """The Argo stand-in walks exactly the DAG it was given: run, then upload."""
    wf = build(task("training"), attempt=2, start_at=StepName.RUN)
    done = argo.succeed_all(wf, result={"uri": "s3://x"})
    assert done["status"]["phase"] == "Succeeded"
    ran = {n["templateName"] for n in done["status"]["nodes"].values() if n["type"] == "Pod"}
    assert ran == {"run", "upload"}


# ------------------------------------------------------------------------- labels, owner


@pytest.mark.parametrize("name", EXAMPLES)
def test_labels_tie_workflow_and_pods_to_the_task(name: str) -> None:
    wf = build(task(name), attempt=4)
    want = {**EXPECTED[name]["labels"], "mltask.dev/attempt": "4"}
    assert wf["metadata"]["labels"] == want
    assert wf["spec"]["podMetadata"]["labels"] == want
    assert wf["spec"]["podMetadata"]["labels"] is not wf["metadata"]["labels"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_argo_cd_tracking_marks_are_never_copied(name: str) -> None:
    """A child carrying the task's Argo CD instance label or tracking id would be pruned."""
    t = task(name)
    wf = build(t)
    pvc = build_work_pvc(t)
    for meta in (wf["metadata"], wf["spec"]["podMetadata"], pvc["metadata"]):
        assert "app.kubernetes.io/instance" not in meta.get("labels", {})
        assert "team" not in meta.get("labels", {})
        assert "argocd.argoproj.io/tracking-id" not in meta.get("annotations", {})
    assert "argocd.argoproj.io" not in json.dumps(wf)
    assert "ml-apps" not in json.dumps(wf) + json.dumps(pvc)


@pytest.mark.parametrize("name", EXAMPLES)
def test_owned_by_the_task(name: str) -> None:
    t = task(name)
    owner = {"apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
             "name": EXPECTED[name]["task"], "uid": UID, "controller": True,
             "blockOwnerDeletion": True}
    assert build(t)["metadata"]["ownerReferences"] == [owner]
    assert build_work_pvc(t)["metadata"]["ownerReferences"] == [owner]


# ------------------------------------------------------------------------ working volume


@pytest.mark.parametrize("name", EXAMPLES)
def test_working_volume_claim(name: str) -> None:
    t = task(name)
    claim = f"{EXPECTED[name]['task']}-work"
    pvc = build_work_pvc(t)
    assert pvc == {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": "ml", "labels": EXPECTED[name]["labels"],
                     "ownerReferences": pvc["metadata"]["ownerReferences"]},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": EXPECTED[name]["pvc_size"]}}},
    }
    assert "mltask.dev/attempt" not in pvc["metadata"]["labels"], "it outlives each attempt"
    wf = build(t)
    assert wf["spec"]["volumes"][0] == {"name": "work",
                                        "persistentVolumeClaim": {"claimName": claim}}
    for step in STEPS:
        mounts = templates(wf)[step]["container"]["volumeMounts"]
        assert mounts[0] == {"name": "work", "mountPath": "/mltask"}


def test_working_volume_storage_class_and_size() -> None:
    pvc = build_work_pvc(task("training", workVolume={"size": "5Ti",
                                                      "storageClassName": "fast-nvme"}))
    assert pvc["spec"]["storageClassName"] == "fast-nvme"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Ti"


@pytest.mark.parametrize("name", EXAMPLES)
def test_config_map_mounted_only_when_set(name: str) -> None:
    wf = build(task(name))
    cm = EXPECTED[name]["config_map"]
    volumes = wf["spec"]["volumes"]
    for step in STEPS:
        mounts = templates(wf)[step]["container"]["volumeMounts"]
        if cm:
            assert {"name": "config", "mountPath": "/etc/mltask/config",
                    "readOnly": True} in mounts
        else:
            assert [m["name"] for m in mounts] == ["work", "meta"]
    if cm:
        assert {"name": "config", "configMap": {"name": cm}} in volumes
    else:
        assert [v["name"] for v in volumes] == ["work", "meta"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_metrics_and_result_files_are_on_a_volume_of_each_pod(name: str) -> None:
    """An emptyDir per pod: a retried pod or a later attempt starts with no metrics or result
    file, so it can never report an earlier pod's (the working volume outlives attempts)."""
    wf = build(task(name))
    assert {"name": "meta", "emptyDir": {"sizeLimit": "16Mi"}} in wf["spec"]["volumes"]
    for step in STEPS:
        mounts = templates(wf)[step]["container"]["volumeMounts"]
        assert {"name": "meta", "mountPath": "/mltask/meta"} in mounts
    paths = [p["valueFrom"]["path"] for s in ("run", "upload")
             for p in templates(wf)[s]["outputs"]["parameters"]]
    assert paths == ["/mltask/meta/metrics.json", "/mltask/meta/result.json"]


# --------------------------------------------------------------------------------- retries


@pytest.mark.parametrize("name", EXAMPLES)
def test_retry_strategy_on_every_step(name: str) -> None:
    tpl = templates(build(task(name)))
    for step in STEPS:
        assert tpl[step]["retryStrategy"] == EXPECTED[name]["retry"]
    assert "retryStrategy" not in tpl["main"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_retry_policy_covers_errors_not_only_failures(name: str) -> None:
    """A deleted pod makes an Argo node `Error`, not `Failed`: OnFailure (Argo's own default)
    would never retry it."""
    rs = templates(build(task(name)))["run"]["retryStrategy"]
    assert argo.retried(rs, "Error", "pod deleted")


def test_default_retry_policy_is_on_error() -> None:
    b = body("training")
    del b["spec"]["runtime"]["retryPolicy"]
    rs = templates(build(MLTask.model_validate(b)))["run"]["retryStrategy"]
    assert rs == {"limit": 3, "retryPolicy": "Always", "expression": ON_INFRA,
                  "backoff": {"duration": "10s", "factor": 2, "maxDuration": "10m"}}


# (Argo node phase, node message as Argo v3.6 writes it, retried under the default OnError)
INFRA_CASES = [
    ("Error", "pod deleted", True),
    ("Error", "node lost", True),
    ("Failed", "The node was low on resource: memory. Threshold quantity: 100Mi, available: "
               "42Mi. Container main was using 31Gi, request is 32Gi.", True),      # eviction
    ("Failed", "Pod was terminated in response to imminent node shutdown.", True),  # spot
    ("Failed", "Preempted in order to admit critical pod", True),
    ("Failed", "Pod was rejected: Node didn't have enough resource: nvidia.com/gpu, "
               "requested: 1, used: 1, capacity: 1", True),
    ("Failed", "Evicted", True),
    ("Failed", "Error (exit code 1)", False),            # the user's code
    ("Failed", "OOMKilled (exit code 137)", False),       # the user's memory request
    ("Failed", "Pod was active on the node longer than the specified deadline", False),
    ("Failed", "workflow shutdown with strategy:  Stop", False),
]


@pytest.mark.parametrize(("phase", "message", "retry"), INFRA_CASES,
                         ids=[m[:40] for _, m, _ in INFRA_CASES])
def test_on_error_retries_what_the_infrastructure_did_not_the_users_code(
        phase: str, message: str, retry: bool) -> None:
    """Argo v3.6 marks a failed pod that carries a message `Failed` (inferFailedReason), so
    Argo's own OnError would never retry an evicted or shut-down pod: the expression does."""
    rs = templates(build(task("training")))["run"]["retryStrategy"]
    assert argo.retried(rs, phase, message) is retry


@pytest.mark.parametrize(("retry_on", "phase", "retry"), [
    ("OnFailure", "Failed", True), ("OnFailure", "Error", False),
    ("Always", "Failed", True), ("Always", "Error", True),
])
def test_other_policies_are_argos_own(retry_on: str, phase: str, retry: bool) -> None:
    rs = templates(build(task("training", retryPolicy={"retryOn": retry_on})))["run"][
        "retryStrategy"]
    assert rs["retryPolicy"] == retry_on and "expression" not in rs
    assert argo.retried(rs, phase, "Error (exit code 1)") is retry


def test_a_lost_run_pod_is_retried_by_argo() -> None:
    wf = build(task("training"))
    wf = argo.finish_pod(argo.run_pod(wf, "download"), "download")
    wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", "Error", message="pod deleted")
    assert wf["status"]["phase"] == "Running", "Argo starts another pod after the backoff"
    wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", outputs={"metrics": "{}"})
    assert [n["phase"] for n in wf["status"]["nodes"].values()
            if n["type"] == "Pod" and n["templateName"] == "run"] == ["Error", "Succeeded"]


def test_retry_policy_and_backoff_pass_through() -> None:
    t = task("training", retryPolicy={"limit": 7, "retryOn": "OnTransientError",
                                      "backoff": {"duration": "30s", "factor": 3,
                                                  "maxDuration": "2h"}})
    assert templates(build(t))["upload"]["retryStrategy"] == {
        "limit": 7, "retryPolicy": "OnTransientError",
        "backoff": {"duration": "30s", "factor": 3, "maxDuration": "2h"}}


@pytest.mark.parametrize("name", EXAMPLES)
def test_no_retry_strategy_at_limit_zero(name: str) -> None:
    wf = build(task(name, retryPolicy={"limit": 0, "retryOn": "Always"}))
    assert all("retryStrategy" not in t for t in wf["spec"]["templates"])
    assert "retryStrategy" not in json.dumps(wf)


# ---------------------------------------------------------------------- run step, placement


@pytest.mark.parametrize("name", EXAMPLES)
def test_run_step_container_and_resources(name: str) -> None:
    tpl = templates(build(task(name)))
    run = tpl["run"]["container"]
    assert run["image"] == EXPECTED[name]["run_image"]
    assert run["command"] == EXPECTED[name]["run_command"]
    assert run["resources"] == EXPECTED[name]["resources"]
    for step in ("download", "upload"):
        c = tpl[step]["container"]
        if EXPECTED[name]["own_steps"]:
            assert (c["image"], c["command"]) == (OWN_STEPS[step]["image"],
                                                  OWN_STEPS[step]["command"])
            assert "resources" not in c, "a step of the task's own gets no resources it lacks"
        else:  # left out: the operator's transfer step, with its own resources
            assert (c["image"], c["command"]) == (DEFAULT_TRANSFER_IMAGE,
                                                  ["mltask-transfer", step])
            assert c["resources"] == DEFAULT_TRANSFER_RESOURCES, "never the run step's"


@pytest.mark.parametrize("name", EXAMPLES)
def test_node_selector_and_tolerations_from_the_spec(name: str) -> None:
    wf = build(task(name))
    spec = wf["spec"]
    want_ns, want_tol = EXPECTED[name]["node_selector"], EXPECTED[name]["tolerations"]
    assert spec.get("nodeSelector") == want_ns
    assert spec.get("tolerations") == want_tol
    # Workflow-level: without a GPU policy no template overrides them, so the run pod gets them
    assert all("nodeSelector" not in t and "tolerations" not in t for t in spec["templates"])


@pytest.mark.parametrize("name", ["training", "own-steps", "optimization"])
def test_gpu_policy_places_only_the_run_step(name: str) -> None:
    policy = RunStepDefaults(node_selector={"pool": "gpu"},
                             tolerations=[{"key": "spot", "operator": "Exists"}])
    b = body(name)
    if not EXPECTED[name]["node_selector"]:  # a CPU example asking for a GPU: the policy alone
        b["spec"]["steps"]["run"]["resources"]["limits"]["nvidia.com/gpu"] = 1
    tpl = templates(build(MLTask.model_validate(b), defaults=policy))
    assert tpl["run"]["nodeSelector"] == {"pool": "gpu",
                                          **(EXPECTED[name]["node_selector"] or {})}
    assert tpl["run"]["tolerations"] == [*(EXPECTED[name]["tolerations"] or []),
                                         {"key": "spot", "operator": "Exists"}]
    for step in ("download", "upload"):
        assert "nodeSelector" not in tpl[step] and "tolerations" not in tpl[step]


@pytest.mark.parametrize("name", ["preprocessing", "optimization"])
def test_cpu_task_ignores_the_gpu_policy(name: str) -> None:
    policy = RunStepDefaults(node_selector={"pool": "gpu"}, runtime_class_name="nvidia")
    assert build(task(name), defaults=policy) == build(task(name))


@pytest.mark.parametrize("name", EXAMPLES)
def test_runtime_fields_pass_through(name: str) -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
    t = task(name, serviceAccountName="ml-runner", priorityClassName="ml-high",
             activeDeadlineSeconds=3600, affinity=affinity)
    spec = build(t)["spec"]
    assert spec["serviceAccountName"] == "ml-runner"
    assert spec["podPriorityClassName"] == "ml-high"
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["affinity"] == affinity


@pytest.mark.parametrize("name", EXAMPLES)
def test_runtime_fields_absent_when_unset(name: str) -> None:
    spec = build(task(name))["spec"]
    assert spec.get("activeDeadlineSeconds") == EXPECTED[name]["deadline"]
    for key in ("serviceAccountName", "podPriorityClassName", "affinity"):
        assert key not in spec


@pytest.mark.parametrize("name", EXAMPLES)
def test_transfer_steps_run_as_their_own_service_account(name: str) -> None:
    """MLTASK_TRANSFER_SERVICE_ACCOUNT: the project's own download and upload steps run as
    it (Argo's per-template serviceAccountName), the run step and a task's own transfer steps
    as the Workflow's, so a storage role bound to it never reaches them."""
    t = task(name, serviceAccountName="ml-runner")
    wf = build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD, inputs=inputs_of(t),
                        transfer=TransferDefaults(service_account_name="mltask-transfer"))
    assert wf["spec"]["serviceAccountName"] == "ml-runner"
    own = t.spec.steps
    for step, template in templates(wf).items():
        ours = (step == "download" and own.download is None) or (
            step == "upload" and own.upload is None)
        assert template.get("serviceAccountName") == ("mltask-transfer" if ours else None), step
    # unset: every step runs as the Workflow's ServiceAccount
    assert all("serviceAccountName" not in tpl for tpl in templates(build(t)).values())


# ------------------------------------------------------------------------ secrets and env


@pytest.mark.parametrize("name", EXAMPLES)
def test_storage_secret_only_in_download_and_upload(name: str) -> None:
    tpl = templates(build(task(name)))
    for step in ("download", "upload"):
        assert tpl[step]["container"]["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    run = tpl["run"]
    assert "envFrom" not in run["container"]
    assert "s3-credentials" not in json.dumps(run), "no reference to the secret at all"
    assert all("STORAGE" not in n for n, _ in env_of(run))


def test_no_storage_no_env_from() -> None:
    b = body("training")
    del b["spec"]["storage"]
    tpl = templates(build(MLTask.model_validate(b)))
    assert all("envFrom" not in tpl[s]["container"] for s in STEPS)


@pytest.mark.parametrize("name", EXAMPLES)
def test_storage_endpoint_reaches_only_the_data_steps(name: str) -> None:
    tpl = templates(build(task(name)))
    for step in ("download", "upload"):
        assert ("MLTASK_STORAGE_ENDPOINT", "http://10.244.0.1:9000") in env_of(tpl[step])
    assert "MLTASK_STORAGE_ENDPOINT" not in dict(env_of(tpl["run"]))


@pytest.mark.parametrize("name", EXAMPLES)
def test_run_step_contract_env(name: str) -> None:
    run = templates(build(task(name), attempt=2))["run"]
    env = env_of(run)
    contract = [e for e in env if e[0].startswith("MLTASK_")]
    assert contract == RUN_ENV[name]
    assert env[:len(contract)] == contract, "contract first, the user's variables after"


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize("step", STEPS)
def test_every_step_knows_which_step_it_is(name: str, step: str) -> None:
    env = dict(env_of(templates(build(task(name), attempt=5))[step]))
    assert env["MLTASK_STEP"] == step
    assert env["MLTASK_ATTEMPT"] == "5"
    assert env["MLTASK_NAME"] == EXPECTED[name]["task"]
    assert json.loads(env["MLTASK_PARAMETERS"]) == task(name).spec.config.parameters


def test_resolved_inputs_win_over_the_spec() -> None:
    """`fromTask` inputs reach the steps as the upstream task's output URIs."""
    b = body("optimization")
    b["spec"]["input"]["model"] = {"fromTask": "train-digits"}
    t = MLTask.model_validate(b)
    wf = build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD,
                        inputs=ResolvedInputs("s3://up/ds.npz", "s3://up/model.joblib"))
    env = dict(env_of(templates(wf)["download"]))
    assert env["MLTASK_INPUT_DATASET_URI"] == "s3://up/ds.npz"
    assert env["MLTASK_INPUT_MODEL_URI"] == "s3://up/model.joblib"


def test_digests_given_or_handed_on_reach_the_download_step() -> None:
    """The download step verifies what it fetched against these (mltask-transfer)."""
    t = task("optimization")
    wf = build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD, inputs=ResolvedInputs(
        "s3://up/ds.npz", "s3://up/model.joblib", dataset_sha256="a" * 64, model_sha256="b" * 64))
    env = dict(env_of(templates(wf)["download"]))
    assert env["MLTASK_INPUT_DATASET_SHA256"] == "a" * 64
    assert env["MLTASK_INPUT_MODEL_SHA256"] == "b" * 64
    plain = dict(env_of(templates(build(task("training")))["download"]))
    assert "MLTASK_INPUT_DATASET_SHA256" not in plain


def test_the_download_is_bounded_by_the_working_volume() -> None:
    t = task("training", workVolume={"size": "3Gi"})
    tpl = templates(build(t))
    env = dict(env_of(tpl["download"]))
    assert env["MLTASK_DOWNLOAD_MAX_BYTES"] == env["MLTASK_UNPACK_MAX_BYTES"] == str(3 * 2**30)
    assert "MLTASK_UNPACK_MAX_BYTES" not in dict(env_of(tpl["run"]))


@pytest.mark.parametrize(("pipeline", "expected"), [
    (False, f"s3://b/runs/train-digits/{UID}/"),
    (True, "s3://b/runs/digits-x7k2q/0000-pipe-uid/"),
])
def test_run_placeholders_of_the_output_uri(pipeline: bool, expected: str) -> None:
    """$(run.name) and $(run.uid): the Pipeline's for its tasks, the task's own otherwise."""
    b = body("training")
    b["spec"]["output"]["uri"] = "s3://b/runs/$(run.name)/$(run.uid)/"
    if pipeline:
        b["spec"]["pipelineRef"] = {"name": "digits-x7k2q"}
        b["metadata"]["ownerReferences"] = [{"apiVersion": "mltask.dev/v1alpha1",
                                             "kind": "Pipeline", "name": "digits-x7k2q",
                                             "uid": "0000-pipe-uid"}]
    tpl = templates(build(MLTask.model_validate(b)))
    for step in STEPS:
        assert dict(env_of(tpl[step]))["MLTASK_OUTPUT_URI"] == expected


def test_user_env_is_kept_after_the_contract() -> None:
    run = templates(build(task("own-steps")))["run"]["container"]
    assert run["env"][-1] == {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {
        "secretKeyRef": {"name": "mlflow", "key": "token"}}}
    assert run["args"] == ["--log-every", "5"]
    assert "args" not in templates(build(task("training")))["run"]["container"]


# ---------------------------------------------------------------------- output parameters


@pytest.mark.parametrize("name", EXAMPLES)
def test_output_parameters(name: str) -> None:
    tpl = templates(build(task(name)))
    assert tpl["run"]["outputs"] == {"parameters": [{
        "name": "metrics",
        "valueFrom": {"path": "/mltask/meta/metrics.json", "default": "{}"}}]}
    assert tpl["upload"]["outputs"] == {"parameters": [{
        "name": "result", "valueFrom": {"path": "/mltask/meta/result.json"}}]}
    assert "default" not in tpl["upload"]["outputs"]["parameters"][0]["valueFrom"]
    assert "outputs" not in tpl["download"]


def test_upload_without_a_result_file_errors_under_argo() -> None:
    """No default on `result`: Argo errors the node instead of reporting an empty output."""
    wf = build(task("training", retryPolicy={"limit": 0}))
    for step in ("download", "run"):
        wf = argo.finish_pod(argo.run_pod(wf, step), step)
    wf = argo.finish_pod(argo.run_pod(wf, "upload"), "upload")
    assert wf["status"]["phase"] == "Failed"
    upload = next(n for n in wf["status"]["nodes"].values() if n["templateName"] == "upload")
    assert upload["phase"] == "Error" and "result" in upload["message"]
