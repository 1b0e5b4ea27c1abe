"""Pure status mapping: Argo Workflow states (made by the Argo stand-in's pure transitions)
-> MLTask status, executeStep, steps, conditions, outputs and metrics."""

from __future__ import annotations

import datetime
import json

import pytest

from harness import argo_standin as argo
from harness.tasks import RESULT, example
from mltask_operator.api.v1alpha1.mltask import MLTask, MLTaskStatus, StepName
from mltask_operator.builders.workflow import ResolvedInputs, build_workflow
from mltask_operator.status import compute_status, conditions_for, fnv32a, pod_name

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


def task(limit: int = 3, status: MLTaskStatus | None = None, **spec) -> MLTask:
    body = example("training")
    body["metadata"].update(namespace="ml", uid="u", generation=2)
    body["spec"]["runtime"]["retryPolicy"] = {"limit": limit, "retryOn": "OnError"}
    body["spec"].update(spec)
    t = MLTask.model_validate(body)
    st = status or MLTaskStatus(attempt=1, workflow_name=f"{t.name}-1")
    return t.model_copy(update={"status": st})


def workflow(t: MLTask) -> dict:
    return build_workflow(t, attempt=1, start_at=StepName.DOWNLOAD,
                          inputs=ResolvedInputs("s3://d/x.zip"))


def cond(st: MLTaskStatus, type_: str):
    return next(c for c in st.conditions or [] if c.type == type_)


def test_fnv32a_matches_argo() -> None:
    assert fnv32a("") == 0x811C9DC5
    assert fnv32a("a") == 0xE40C292C
    assert pod_name("wf-1", "wf-1.run(0)", "run") == f"wf-1-run-{fnv32a('wf-1.run(0)')}"


def test_no_workflow_yet_is_prepare_file() -> None:
    st = compute_status(task(), None, NOW)
    assert (st.status, st.execute_step) == ("init", "prepare_file")
    assert cond(st, "Succeeded").status == "Unknown" and cond(st, "Ready").status == "False"
    assert all(c.observed_generation == 2 for c in st.conditions or [])


def test_running_steps_advance_execute_step() -> None:
    t = task()
    wf = argo.run_pod(workflow(t), "download")
    st = compute_status(t, wf, NOW)
    assert (st.status, st.execute_step) == ("running", "download")
    assert cond(st, "Running").status == "True"
    wf = argo.finish_pod(wf, "download")
    wf = argo.run_pod(wf, "run")
    st = compute_status(t.model_copy(update={"status": st}), wf, NOW)
    assert (st.status, st.execute_step) == ("running", "run_task")
    steps = {s.name: s for s in st.steps or []}
    assert steps["download"].phase == "Succeeded" and steps["download"].finished_at
    assert steps["run"].pod == pod_name("train-resnet18-1", "train-resnet18-1.run(0)", "run")
    assert steps["run"].attempt == 1


def test_success_gives_outputs_metrics_and_conditions() -> None:
    t = task()
    wf = argo.succeed_all(workflow(t), result=RESULT, metrics={"accuracy": 0.93})
    st = compute_status(t, wf, NOW)
    assert (st.status, st.execute_step, st.message) == ("completed", "done", "Completed")
    assert st.outputs is not None and st.outputs.model_dump(exclude_none=True) == {
        "kind": "model", "name": "resnet18-cifar10", "id": "model-42", "uri": RESULT["uri"],
        "size": RESULT["size"], "sha256": RESULT["sha256"]}
    assert st.metrics == {"accuracy": 0.93}
    assert cond(st, "Succeeded").status == "True" and cond(st, "Ready").status == "True"
    assert cond(st, "Succeeded").reason == "Completed"
    assert st.completion_time is not None and st.duration


def test_bad_metrics_json_is_ignored() -> None:
    t = task()
    wf = argo.run_pod(workflow(t), "download")
    wf = argo.finish_pod(wf, "download")
    wf = argo.run_pod(wf, "run")
    wf = argo.finish_pod(wf, "run", outputs={"metrics": "not json"})
    st = compute_status(t, wf, NOW)
    assert st.metrics is None and st.status == "running"


def test_failed_run_step_names_step_and_exit_code() -> None:
    t = task(limit=0)
    wf = argo.run_pod(workflow(t), "download")
    wf = argo.finish_pod(wf, "download")
    wf = argo.run_pod(wf, "run")
    wf = argo.finish_pod(wf, "run", "Failed", exit_code=137, message="OOMKilled")
    st = compute_status(t, wf, NOW)
    assert (st.status, st.execute_step) == ("failed", "run_task")
    assert "OOMKilled" in (st.message or "") and "137" in (st.message or "")
    run = next(s for s in st.steps or [] if s.name == "run")
    assert run.exit_code == 137 and run.phase == "Failed"
    assert cond(st, "Failed").status == "True" and cond(st, "Succeeded").status == "False"


def test_lost_pod_shows_retry_then_running() -> None:
    t = task(limit=3)
    wf = argo.run_pod(workflow(t), "download")
    wf = argo.finish_pod(wf, "download")
    wf = argo.run_pod(wf, "run")
    wf = argo.finish_pod(wf, "run", "Error", message="pod deleted")
    st = compute_status(t, wf, NOW)
    assert (st.status, st.execute_step) == ("retry", "run_task")
    assert "retry 1 of 3" in (st.message or "") and "pod deleted" in (st.message or "")
    wf = argo.run_pod(wf, "run")
    st = compute_status(t.model_copy(update={"status": st}), wf, NOW)
    assert st.status == "running"
    assert next(s for s in st.steps or [] if s.name == "run").retries == 1


def test_shutdown_is_stopping_then_stopped() -> None:
    t = task(suspend=True)
    wf = argo.run_pod(workflow(t), "download")
    wf["spec"]["shutdown"] = "Stop"
    st = compute_status(t, wf, NOW)
    assert (st.status, st.execute_step) == ("stopping", "download")
    st = compute_status(t.model_copy(update={"status": st}), argo.stop(wf), NOW)
    assert st.status == "stopped" and cond(st, "Stopped").status == "True"
    assert cond(st, "Succeeded").status == "False"


def test_stale_observation_after_completion_keeps_completed() -> None:
    t = task()
    done = compute_status(t, argo.succeed_all(workflow(t), result=RESULT), NOW)
    stale = argo.run_pod(workflow(t), "download")
    later = NOW + datetime.timedelta(minutes=1)
    st = compute_status(t.model_copy(update={"status": done}), stale, later)
    assert st.status == "completed" and st.completion_time == done.completion_time


def test_condition_transition_time_changes_only_with_its_status() -> None:
    first = conditions_for("running", "Running download", None, 1, NOW)  # type: ignore[arg-type]
    later = NOW + datetime.timedelta(minutes=5)
    same = conditions_for("running", "Running run_task", first, 1, later)  # type: ignore[arg-type]
    by = {c.type: c for c in same}
    assert by["Running"].last_transition_time == NOW, "status unchanged: time kept"
    assert by["Running"].message == "Running run_task"
    done = conditions_for("completed", "Completed", same, 1, later)  # type: ignore[arg-type]
    by = {c.type: c for c in done}
    assert by["Running"].last_transition_time == later and by["Running"].status == "False"
    assert by["Succeeded"].last_transition_time == later


@pytest.mark.parametrize("raw", ["", "{", json.dumps({"size": 3})])
def test_upload_result_without_uri_gives_no_outputs(raw: str) -> None:
    t = task()
    wf = argo.run_pod(workflow(t), "download")
    for step in ("download", "run"):
        wf = argo.finish_pod(wf, step) if step == "download" else argo.finish_pod(
            argo.run_pod(wf, step), step)
    wf = argo.finish_pod(argo.run_pod(wf, "upload"), "upload", outputs={"result": raw})
    st = compute_status(t, wf, NOW)
    assert st.outputs is None or st.outputs.uri is None
