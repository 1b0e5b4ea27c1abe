"""What a run step's metrics file and an upload step's result file can hold, through the real
operator and the real API server: a diverged training (NaN, Infinity, a 400-digit integer)
ends with its status written, the bad metrics dropped and said; a malformed result fails the
task with InvalidResult. Before, each left the status write refused (or the reconcile raising)
and the task running forever."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.tasks import RESULT, G, P, Tasks, V, cond, example
from mltask_operator.api.v1alpha1.mltask import MLTask, MLTaskStatus, StepName
from mltask_operator.builders.workflow import ResolvedInputs, build_workflow
from mltask_operator.mltask_status import compute_status

pytestmark = pytest.mark.integration

#: What Python's json.dump writes for a diverged loss, and an integer past a double's range.
DIVERGED = ('{"loss": NaN, "grad_norm": Infinity, "accuracy": 0.5, "steps": '
            + "9" * 400 + "}")


@pytest.mark.parametrize("run", [
    {"outputs": {"metrics": DIVERGED}},
    {"phase": "Failed", "message": "Error (exit code 1): " + "\x1b[31mboom\n" * 10_000},
], ids=["nan-metrics", "long-message"])
def test_the_status_computed_from_a_bad_run_step_is_accepted_by_the_api_server(
        api: client.ApiClient, mltask_crds: list[str], namespace: str,
        run: dict[str, Any]) -> None:
    """No operator here: the status compute_status makes of the run step's NaN metrics (or of
    its message past every bound) is what the API server's schema takes in a status write."""
    objects = client.CustomObjectsApi(api)
    created = objects.create_namespaced_custom_object(G, V, namespace, P, example("training"))
    task = MLTask.model_validate(created)
    task = task.model_copy(update={"status": MLTaskStatus(
        status="init", attempt=1, workflow_name=f"{task.name}-1", observed_retry_generation=0)})
    wf = build_workflow(task, attempt=1, start_at=StepName.DOWNLOAD,
                        inputs=ResolvedInputs("s3://d/x.zip", None))
    wf = argo_fn.finish_pod(argo_fn.run_pod(wf, "download"), "download")
    wf = argo_fn.finish_pod(argo_fn.run_pod(wf, "run"), "run", **run)
    st = compute_status(task, wf, datetime.datetime.now(datetime.UTC))
    written = objects.patch_namespaced_custom_object_status(
        G, V, namespace, P, task.name, {"status": st.to_k8s()})["status"]
    assert written["status"] == st.status
    if "outputs" in run:
        assert written["metrics"] == {"accuracy": 0.5}
        assert cond(written, "MetricsValid")["reason"] == "MetricsDropped"
    else:
        assert len(written["message"]) <= 32768


@pytest.fixture
def tasks(api: client.ApiClient, namespace: str, operator) -> Tasks:
    return Tasks(api, namespace)


def _through_upload(argo, namespace: str, wf_name: str, metrics: str, result: str) -> None:
    argo.update(namespace, wf_name, argo_fn.run_pod, "download")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "download")
    argo.update(namespace, wf_name, argo_fn.run_pod, "run")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "run", outputs={"metrics": metrics})
    argo.update(namespace, wf_name, argo_fn.run_pod, "upload")
    argo.update(namespace, wf_name, argo_fn.finish_pod, "upload", outputs={"result": result})


def test_a_diverged_training_completes_with_its_nan_metrics_dropped(
        tasks: Tasks, argo, namespace: str) -> None:
    name = tasks.create(example("training"))["metadata"]["name"]
    wf_name = f"{name}-1"
    tasks.wait(name, lambda s: s.get("workflowName") == wf_name, "Workflow name")
    argo.wait_for(namespace, wf_name)
    _through_upload(argo, namespace, wf_name, DIVERGED, json.dumps(RESULT))
    st = tasks.wait_state(name, "completed", "done")["status"]
    assert st["metrics"] == {"accuracy": 0.5}
    valid = cond(st, "MetricsValid")
    assert (valid["status"], valid["reason"]) == ("False", "MetricsDropped")
    for key in ("'loss' (not a finite number)", "'grad_norm' (not a finite number)",
                "'steps' (not a finite number)"):
        assert key in valid["message"]
    assert st["outputs"]["uri"] == RESULT["uri"]


def test_a_malformed_result_fails_the_task_with_invalid_result(
        tasks: Tasks, argo, namespace: str) -> None:
    name = tasks.create(example("training"))["metadata"]["name"]
    wf_name = f"{name}-1"
    tasks.wait(name, lambda s: s.get("workflowName") == wf_name, "Workflow name")
    argo.wait_for(namespace, wf_name)
    _through_upload(argo, namespace, wf_name, '{"accuracy": 0.9}',
                    json.dumps({**RESULT, "size": "big", "uri": [RESULT["uri"]]}))
    st = tasks.wait_state(name, "failed")["status"]
    assert cond(st, "Failed")["reason"] == "InvalidResult"
    assert "$MLTASK_RESULT_FILE" in st["message"] and "'uri'" in st["message"]
    assert "outputs" not in st
    assert st["metrics"] == {"accuracy": 0.9}


