"""Pure status mapping: Workflows advanced by the Argo stand-in -> MLTask status, step by step."""

from __future__ import annotations

import datetime
import itertools
import json
from typing import Any

import pytest

from harness import argo_standin as argo
from harness.tasks import RESULT, example
from mltask_operator.api.v1alpha1.mltask import MLTask, MLTaskStatus, StepName, StepStatus
from mltask_operator.builders.workflow import ResolvedInputs, build_workflow
from mltask_operator.mltask_status import (
    LOG_TAIL_BYTES,
    LOG_TAIL_LINES,
    InvalidResult,
    compute_status,
    fnv32a,
    last_line,
    observe_workflow,
    parse_metrics,
    parse_progress,
    parse_result,
    pod_name,
    split_termination,
)

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
#: The stand-in's clock: every node timestamp is T0 + 10 s per tick, so times are exact.
T0 = datetime.datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
WF = "train-digits-1"


@pytest.fixture(autouse=True)
def argo_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count()

    def now() -> str:
        return (T0 + datetime.timedelta(seconds=10 * next(ticks))).isoformat().replace(
            "+00:00", "Z")

    monkeypatch.setattr(argo, "_now", now)


def task(name: str = "training", *, limit: int = 3, retry_on: str = "OnError",
         status: MLTaskStatus | None = None, generation: int = 2, **spec: Any) -> MLTask:
    """The example with attempt 1 begun (what the handler writes before the Workflow)."""
    body = example(name)
    body["metadata"].update(namespace="ml", uid="u", generation=generation)
    body["spec"].setdefault("runtime", {})["retryPolicy"] = {"limit": limit,
                                                             "retryOn": retry_on}
    body["spec"].update(spec)
    t = MLTask.model_validate(body)
    st = status or MLTaskStatus(status="init", attempt=1, workflow_name=f"{t.name}-1",
                                observed_retry_generation=0)
    return t.model_copy(update={"status": st})


def workflow(t: MLTask, start_at: StepName = StepName.DOWNLOAD) -> dict[str, Any]:
    assert t.status is not None
    return build_workflow(t, attempt=t.status.attempt, start_at=start_at,
                          inputs=ResolvedInputs("s3://d/x.zip", "s3://m/x.pt"))


def observe(t: MLTask, wf: dict[str, Any] | None,
            now: datetime.datetime = NOW) -> tuple[MLTask, MLTaskStatus]:
    """One reconcile's status update; returns the task carrying it, for the next one."""
    st = compute_status(t, wf, now)
    return t.model_copy(update={"status": st}), st


def through(wf: dict[str, Any], *steps: str) -> dict[str, Any]:
    """Run and succeed `steps` in order, each writing the files the contract asks for."""
    for s in steps:
        outputs = {"run": {"metrics": "{}"}, "upload": {"result": json.dumps(RESULT)}}.get(s)
        wf = argo.finish_pod(argo.run_pod(wf, s), s, outputs=outputs)
    return wf


def node(wf: dict[str, Any], name: str) -> dict[str, Any]:
    return wf["status"]["nodes"][argo.node_id(wf["metadata"]["name"], name)]


def at(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def steps_of(st: MLTaskStatus) -> dict[str, StepStatus]:
    return {str(s.name): s for s in st.steps or []}


def conds(st: MLTaskStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in st.conditions or []}


def cond(st: MLTaskStatus, type_: str):
    return next(c for c in st.conditions or [] if c.type == type_)


# ------------------------------------------------------------------------------ pod names


def test_fnv32a_known_vectors() -> None:
    assert fnv32a("") == 0x811C9DC5
    assert fnv32a("a") == 0xE40C292C
    assert fnv32a("foobar") == 0xBF9CF968
    # the values Argo's UI tests pin for its own FNV-1a
    assert fnv32a("hello") == 1335831723
    assert fnv32a("world") == 933488787


def test_pod_name_is_argo_v2() -> None:
    """`<workflow>-<template>-<fnv32a(node name)>`: the node *name*, e.g. `wf.run(0)`."""
    assert pod_name(WF, f"{WF}.run(0)", "run") == "train-digits-1-run-3788498086"
    assert pod_name(WF, f"{WF}.run(1)", "run") == "train-digits-1-run-4258124323"
    assert pod_name(WF, f"{WF}.run", "run") == "train-digits-1-run-387620139"


def test_pod_name_prefix_is_cut_to_fit_253() -> None:
    name = pod_name("w" * 300, "w.run(0)", "run")
    prefix, _, digits = name.rpartition("-")
    assert prefix == "w" * 242 and digits == str(fnv32a("w.run(0)"))
    assert len(name) <= 253


@pytest.mark.parametrize(("limit", "node_name"), [(3, f"{WF}.run(0)"), (0, f"{WF}.run")])
def test_step_pod_is_named_after_its_node(limit: int, node_name: str) -> None:
    t = task(limit=limit)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    assert node(wf, node_name)["type"] == "Pod"
    obs = observe_workflow(wf)
    run = obs.steps[StepName.RUN]
    assert run.pod == f"{WF}-run-{fnv32a(node_name)}"
    # the step's node id is the DAG task node (Retry node when the template retries)
    assert run.node_id == argo.node_id(WF, f"{WF}.run")
    assert node(wf, f"{WF}.run")["type"] == ("Retry" if limit else "Pod")


# --------------------------------------------------------------------------- running path


def test_no_workflow_yet() -> None:
    _, st = observe(task(), None)
    assert (st.status, st.execute_step, st.attempt) == ("init", "prepare_file", 1)
    assert st.message == "Preparing the working volume and Workflow"
    assert st.steps is None and st.outputs is None and st.metrics is None
    assert conds(st) == {"Succeeded": ("Unknown", "Initializing"),
                         "Running": ("False", "Initializing"),
                         "Stopped": ("False", "Initializing"),
                         "Failed": ("False", "Initializing"),
                         "Ready": ("False", "Initializing")}
    assert {c.observed_generation for c in st.conditions or []} == {2}
    assert st.observed_generation == 2
    assert st.start_time == NOW and st.completion_time is None


@pytest.mark.parametrize("picked_up", [False, True], ids=["no-status", "dag-node-only"])
def test_workflow_without_pods_keeps_init(picked_up: bool) -> None:
    t = task()
    wf = argo.start(workflow(t)) if picked_up else workflow(t)
    _, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("init", "prepare_file")
    assert st.message == "Workflow created, waiting for pods"
    assert st.steps is None


def test_download_running() -> None:
    t = task()
    wf = argo.run_pod(workflow(t), "download")
    _, st = observe(t, wf)
    assert (st.status, st.execute_step, st.message) == ("running", "download",
                                                        "Running download")
    assert st.steps == [StepStatus(
        name="download", phase="Running", attempt=1,
        pod="train-digits-1-download-251605217",
        node_id=argo.node_id(WF, f"{WF}.download"), retries=0,
        started_at=at(node(wf, f"{WF}.download")["startedAt"]))]
    assert conds(st)["Running"] == ("True", "Running")
    assert conds(st)["Succeeded"] == ("Unknown", "Running")
    assert st.start_time == at(wf["status"]["startedAt"])
    assert st.completion_time is None
    assert st.duration == "1h0m0s"  # from the Workflow's start (11:00) to NOW (12:00)


def test_between_two_steps_is_running_the_next() -> None:
    t = task()
    wf = through(workflow(t), "download")
    _, st = observe(t, wf)
    assert (st.status, st.execute_step, st.message) == ("running", "run_task",
                                                        "Starting run_task")
    assert [s.name for s in st.steps or []] == ["download"]


@pytest.mark.parametrize(("done", "running", "execute_step"), [
    ([], "download", "download"),
    (["download"], "run", "run_task"),
    (["download", "run"], "upload", "upload"),
])
def test_execute_step_follows_the_running_pod(done: list[str], running: str,
                                              execute_step: str) -> None:
    t = task()
    wf = argo.run_pod(through(workflow(t), *done), running)
    _, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("running", execute_step)
    steps = steps_of(st)
    assert list(steps) == [*done, running]
    assert steps[running].phase == "Running" and steps[running].finished_at is None
    for s in done:
        assert steps[s].phase == "Succeeded" and steps[s].exit_code == 0
        assert steps[s].started_at is not None and steps[s].finished_at is not None
        assert steps[s].started_at < steps[s].finished_at
        assert steps[s].finished_at == at(node(wf, f"{WF}.{s}")["finishedAt"])


def test_succeeded() -> None:
    t = task()
    wf = argo.succeed_all(workflow(t), result=RESULT, metrics={"accuracy": 0.93, "epochs": 30})
    _, st = observe(t, wf)
    assert (st.status, st.execute_step, st.message) == ("completed", "done", "Completed")
    assert [(s.name, s.phase, s.attempt, s.exit_code) for s in st.steps or []] == [
        ("download", "Succeeded", 1, 0), ("run", "Succeeded", 1, 0),
        ("upload", "Succeeded", 1, 0)]
    assert steps_of(st)["upload"].pod == "train-digits-1-upload-2526109090"
    assert st.outputs is not None
    assert st.outputs.to_k8s() == {"kind": "model", "name": "digits-mlp",
                                   "id": "model-42", "uri": RESULT["uri"],
                                   "size": 37_704, "sha256": "ab" * 32}
    assert st.metrics == {"accuracy": 0.93, "epochs": 30.0}
    assert conds(st) == {"Succeeded": ("True", "Completed"), "Running": ("False", "Completed"),
                         "Stopped": ("False", "Completed"), "Failed": ("False", "Completed"),
                         "Ready": ("True", "Completed")}
    assert st.completion_time == at(wf["status"]["finishedAt"])
    assert st.start_time == at(wf["status"]["startedAt"])
    assert st.duration == "1m10s"  # the stand-in's clock: seven ticks of 10 s


def test_preprocessing_output_is_a_dataset() -> None:
    t = task("preprocessing")
    result = {"uri": "s3://mltask-examples/datasets/digits/digits-minmax.npz", "size": 78_336}
    _, st = observe(t, argo.succeed_all(workflow(t), result=result))
    assert st.outputs is not None
    assert st.outputs.to_k8s() == {"kind": "dataset", "name": "digits-minmax",
                                   "id": result["uri"], "uri": result["uri"], "size": 78_336}
    assert st.metrics is None, "the default metrics `{}` are no metrics"


# ---------------------------------------------------------------------------- failure path


def test_failed_run_step() -> None:
    t = task(limit=0)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    wf = argo.finish_pod(wf, "run", "Failed", exit_code=137, message="OOMKilled")
    _, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("failed", "run_task")
    assert st.message == "run step failed: OOMKilled (exit code 137)"
    run = steps_of(st)["run"]
    assert (run.phase, run.exit_code, run.message, run.retries) == ("Failed", 137, "OOMKilled", 0)
    assert run.pod == "train-digits-1-run-387620139"
    assert run.finished_at == at(node(wf, f"{WF}.run")["finishedAt"])
    assert "upload" not in steps_of(st)
    assert conds(st) == {"Succeeded": ("False", "Failed"), "Running": ("False", "Failed"),
                         "Stopped": ("False", "Failed"), "Failed": ("True", "Failed"),
                         "Ready": ("False", "Failed")}
    assert st.completion_time == at(wf["status"]["finishedAt"])
    assert st.outputs is None


def test_a_run_step_killed_by_sigbus_without_shared_memory_says_what_to_set() -> None:
    t = task(limit=0)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    wf = argo.finish_pod(wf, "run", "Failed", exit_code=135, message="Error (exit code 135)")
    _, st = observe(t, wf)
    assert st.message == ("run step failed: Error (exit code 135) (bus error: set "
                          "spec.runtime.sharedMemorySize (DataLoader workers need more than "
                          "the default 64 MiB /dev/shm))")
    # with a size set, or another exit code, no hint
    sized = task(limit=0, runtime={"sharedMemorySize": "1Gi", "retryPolicy": {"limit": 0}})
    wf = argo.finish_pod(argo.run_pod(through(workflow(sized), "download"), "run"), "run",
                         "Failed", exit_code=135, message="Error (exit code 135)")
    assert "sharedMemorySize" not in (observe(sized, wf)[1].message or "")
    wf = argo.finish_pod(argo.run_pod(through(workflow(t), "download"), "run"), "run",
                         "Failed", exit_code=139, message="Error (exit code 139)")
    assert "sharedMemorySize" not in (observe(t, wf)[1].message or "")


def test_non_zero_exit_is_not_retried_on_error() -> None:
    t = task(limit=3, retry_on="OnError")
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    wf = argo.finish_pod(wf, "run", "Failed", exit_code=2, message="Error (exit code 2)")
    _, st = observe(t, wf)
    assert st.status == "failed"
    assert st.message == "run step failed: Error (exit code 2)", "exit code not said twice"


def test_error_node_fails_the_task() -> None:
    t = task(limit=0)
    wf = argo.finish_pod(argo.run_pod(workflow(t), "download"), "download", "Error",
                         message="pod deleted")
    _, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("failed", "download")
    assert st.message is not None and st.message.startswith("download step error: pod deleted")
    assert steps_of(st)["download"].phase == "Error"
    assert conds(st)["Failed"] == ("True", "Failed")


def test_workflow_error_without_a_step() -> None:
    """Argo's controller can error a Workflow before any pod (e.g. an invalid spec)."""
    t = task()
    wf = workflow(t)
    wf["status"] = {"phase": "Error", "message": "invalid spec: templates.run: bad",
                    "startedAt": "2026-11-23T11:00:00Z", "finishedAt": "2026-11-23T11:00:01Z"}
    _, st = observe(t, wf)
    assert (st.status, st.message) == ("failed", "invalid spec: templates.run: bad")
    assert st.completion_time == at("2026-11-23T11:00:01Z")


def test_upload_without_result_fails_with_argos_message() -> None:
    t = task(limit=0)
    wf = argo.finish_pod(argo.run_pod(through(workflow(t), "download", "run"), "upload"),
                         "upload")
    _, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("failed", "upload")
    assert "failed to get output parameter 'result'" in (st.message or "")
    assert st.outputs is None


# ---------------------------------------------------------------------------- retry path


def test_lost_pod_is_retried_then_runs_then_completes() -> None:
    t = task(limit=3)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    wf = argo.finish_pod(wf, "run", "Error", message="pod deleted")
    t, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("retry", "run_task")
    assert st.message == "Retrying run step (retry 1 of 3) after: pod deleted"
    assert conds(st)["Running"] == ("True", "Retrying")
    assert conds(st)["Succeeded"] == ("Unknown", "Retrying")
    run = steps_of(st)["run"]
    assert (run.phase, run.retries, run.pod) == ("Running", 0, "train-digits-1-run-3788498086")

    wf = argo.run_pod(wf, "run")
    t, st = observe(t, wf)
    assert (st.status, st.message) == ("running", "Running run_task")
    run = steps_of(st)["run"]
    assert (run.phase, run.retries, run.pod) == ("Running", 1, "train-digits-1-run-4258124323")
    assert run.message is None, "the new pod has no failure to tell"

    wf = argo.finish_pod(wf, "run", "Error", message="pod deleted")
    t, st = observe(t, wf)
    assert st.message == "Retrying run step (retry 2 of 3) after: pod deleted"

    wf = argo.run_pod(wf, "run")
    wf = argo.finish_pod(wf, "run", outputs={"metrics": json.dumps({"loss": 0.25})})
    wf = through(wf, "upload")
    t, st = observe(t, wf)
    assert st.status == "completed"
    assert steps_of(st)["run"].retries == 2
    assert st.metrics == {"loss": 0.25}


def test_latest_pod_is_the_highest_retry_index_not_the_latest_name() -> None:
    """Argo names retry pods `<step>(0)`, `<step>(1)`...; by name `(10)` sorts before `(2)`, and
    pods retried within one second share their startedAt, so neither may pick the latest."""
    t = task(limit=20)
    wf = through(workflow(t), "download")
    for _ in range(11):
        wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", "Error", message="pod deleted")
    wf = argo.run_pod(wf, "run")
    for n in wf["status"]["nodes"].values():
        if n["type"] == "Pod" and n["templateName"] == "run":
            n["startedAt"] = "2026-11-23T11:30:00Z"
    t, st = observe(t, wf)
    run = steps_of(st)["run"]
    assert (st.status, run.phase, run.retries) == ("running", "Running", 11)
    assert run.pod == pod_name(WF, f"{WF}.run(11)", "run")


def test_next_pod_pending_is_still_retry() -> None:
    t = task(limit=3)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    wf = argo.run_pod(argo.finish_pod(wf, "run", "Error", message="pod deleted"), "run")
    node(wf, f"{WF}.run(1)")["phase"] = "Pending"
    _, st = observe(t, wf)
    assert st.status == "retry"
    assert st.message == "Retrying run step (retry 1 of 3)"


def test_retries_exhausted_fail_the_task() -> None:
    t = task(limit=1)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    wf = argo.finish_pod(wf, "run", "Error", message="pod deleted")
    wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", "Error", message="pod deleted")
    _, st = observe(t, wf)
    assert st.status == "failed"
    assert (st.message or "").startswith("run step error: pod deleted")
    assert steps_of(st)["run"].retries == 1


# ----------------------------------------------------------------------------- stop path


def test_stopping_then_stopped() -> None:
    t = task(suspend=True)
    wf = argo.run_pod(workflow(t), "download")
    wf["spec"]["shutdown"] = "Stop"
    t, st = observe(t, wf)
    assert (st.status, st.execute_step, st.message) == ("stopping", "download",
                                                        "Stopping at download")
    assert conds(st)["Running"] == ("True", "Stopping")
    assert st.completion_time is None

    wf = argo.stop(wf)
    _, st = observe(t, wf, NOW + datetime.timedelta(seconds=5))
    assert (st.status, st.execute_step, st.message) == ("stopped", "download",
                                                        "Stopped at download")
    assert conds(st) == {"Succeeded": ("False", "Stopped"), "Running": ("False", "Stopped"),
                         "Stopped": ("True", "Stopped"), "Failed": ("False", "Stopped"),
                         "Ready": ("False", "Stopped")}
    download = steps_of(st)["download"]
    assert download.phase == "Failed"
    assert download.message == "workflow shutdown with strategy:  Stop"
    assert st.completion_time == at(wf["status"]["finishedAt"])


def test_workflow_failed_while_suspended_is_stopped() -> None:
    """The Workflow may fail before the shutdown request lands; the user asked to stop."""
    t = task(limit=0, suspend=True)
    wf = argo.finish_pod(argo.run_pod(workflow(t), "download"), "download", "Failed")
    _, st = observe(t, wf)
    assert st.status == "stopped"


def test_stopped_task_whose_workflow_is_gone_keeps_its_step() -> None:
    """Once stopped, a reconcile that finds no Workflow (deleted) must not move the step back
    to prepare_file: the recorded steps still say the run step did not finish."""
    t = task(suspend=True)
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    t, st = observe(t, wf)
    assert (st.status, st.execute_step) == ("running", "run_task")
    t = t.model_copy(update={"status": st.model_copy(update={"status": "stopped",
                                                             "message": "Stopped"})})
    _, again = observe(t, None, NOW + datetime.timedelta(seconds=5))
    assert (again.status, again.execute_step, again.message) == ("stopped", "run_task",
                                                                 "Stopped")
    assert [(s.name, s.phase) for s in again.steps or []] == [("download", "Succeeded"),
                                                              ("run", "Running")]


# ------------------------------------------------------------------------ attempts, merge


def test_attempt_count_is_carried_to_status_and_steps() -> None:
    prev = MLTaskStatus(status="retry", attempt=3, workflow_name="train-digits-3",
                        observed_retry_generation=2, start_time=T0)
    t = task(status=prev)
    wf = argo.run_pod(workflow(t), "download")
    assert wf["metadata"]["name"] == "train-digits-3"
    _, st = observe(t, wf)
    assert (st.status, st.attempt, st.workflow_name) == ("running", 3, "train-digits-3")
    assert st.observed_retry_generation == 2
    assert steps_of(st)["download"].attempt == 3
    assert steps_of(st)["download"].pod == pod_name("train-digits-3",
                                                    "train-digits-3.download(0)", "download")
    assert st.start_time == T0, "the first attempt's start is kept"


def test_retry_attempt_waits_in_retry_until_its_pods_run() -> None:
    prev = MLTaskStatus(status="retry", attempt=2, workflow_name="train-digits-2",
                        observed_retry_generation=1)
    t = task(status=prev)
    _, st = observe(t, workflow(t))
    assert st.status == "retry"
    assert conds(st)["Running"] == ("True", "Retrying")


def test_continued_attempt_keeps_the_finished_steps() -> None:
    """Attempt 1 stopped in run; attempt 2 starts at run and keeps attempt 1's download."""
    t1 = task(suspend=True)
    wf1 = argo.run_pod(through(workflow(t1), "download"), "run")
    wf1["spec"]["shutdown"] = "Stop"
    _, stopped = observe(t1, argo.stop(wf1))
    assert stopped.status == "stopped"
    prev = stopped.model_copy(update={"status": "running", "attempt": 2,
                                      "workflow_name": "train-digits-2",
                                      "completion_time": None})
    t2 = task(status=prev)
    wf2 = workflow(t2, start_at=StepName.RUN)
    _, st = observe(t2, wf2)
    assert [(s.name, s.attempt, s.phase) for s in st.steps or []] == [
        ("download", 1, "Succeeded")], "attempt 1's stopped run is dropped, download kept"
    assert (st.status, st.execute_step) == ("running", "run_task"), \
        "waiting for attempt 2's first pod, the step does not go back to prepare_file"
    wf2 = argo.run_pod(wf2, "run")
    _, st = observe(t2, wf2)
    assert (st.status, st.execute_step) == ("running", "run_task")
    assert [(s.name, s.attempt, s.phase) for s in st.steps or []] == [
        ("download", 1, "Succeeded"), ("run", 2, "Running")]
    assert steps_of(st)["run"].pod == pod_name("train-digits-2", "train-digits-2.run(0)",
                                               "run")


# --------------------------------------------------------------------- metrics and result


@pytest.mark.parametrize(("raw", "expected"), [
    ('{"accuracy": 0.93, "epoch": 30}', {"accuracy": 0.93, "epoch": 30.0}),
    ('{"f1": 0.5, "val/loss": 1e-3, "top_5": -2}', {"f1": 0.5, "val/loss": 0.001, "top_5": -2.0}),
    ("{}", {}),
    ("", {}),
    (None, {}),
])
def test_parse_metrics_keeps_finite_numbers(raw: str | None, expected: dict[str, float]) -> None:
    metrics = parse_metrics(raw)
    assert (metrics.values, metrics.dropped, metrics.note()) == (expected, {}, None)
    assert metrics.unreadable is None


@pytest.mark.parametrize(("raw", "kept", "dropped"), [
    # what Python's json.dump writes for a diverged loss: the API server refuses it in status
    ('{"loss": NaN, "acc": 0.5}', {"acc": 0.5}, {"loss": "not a finite number"}),
    ('{"loss": Infinity, "gain": -Infinity}', {},
     {"loss": "not a finite number", "gain": "not a finite number"}),
    ('{"big": 1e400}', {}, {"big": "not a finite number"}),
    ('{"huge": ' + "9" * 400 + "}", {}, {"huge": "not a finite number"}),  # OverflowError once
    ('{"huger": ' + "9" * 5000 + "}", {}, {"huger": "not a finite number"}),  # past int's digits
    ('{"loss": "low", "converged": true, "f1": 0.5, "nested": {"a": 1}, "l": [1]}',
     {"f1": 0.5}, {"loss": "not a number", "converged": "not a number",
                   "nested": "not a number", "l": "not a number"}),
    ('{"a b": 1, "": 2, "\\u001b[31m": 3, "ok": 4}', {"ok": 4.0},
     {"a b": "not a metric name", "": "not a metric name", "\x1b[31m": "not a metric name"}),
    ('{"' + "n" * 129 + '": 1}', {}, {"n" * 129: "name longer than 128 characters"}),
])
def test_parse_metrics_drops_and_says_what_status_cannot_carry(
        raw: str, kept: dict[str, float], dropped: dict[str, str]) -> None:
    metrics = parse_metrics(raw)
    assert (metrics.values, metrics.dropped, metrics.unreadable) == (kept, dropped, None)
    note = metrics.note()
    assert note is not None and len(note) <= 4096 and "\x1b" not in note
    assert all(repr(k)[:20] in note for k in dropped)
    assert f"{len(dropped)} metric(s) dropped, {len(kept)} kept" in note


@pytest.mark.parametrize(("raw", "why"), [
    ("not json", "not valid JSON"),
    ('{"accuracy": 0.9', "not valid JSON"),
    ("[0.9, 0.8]", "not a JSON object of name: number"),
    ("0.93", "not a JSON object of name: number"),
    ("null", "not a JSON object of name: number"),
    ("[" * 100_000, "larger than 65536 bytes"),
    ("[" * 60_000, "not valid JSON"),  # too deep: RecursionError
])
def test_parse_metrics_drops_an_unreadable_file_whole(raw: str, why: str) -> None:
    metrics = parse_metrics(raw)
    assert (metrics.values, metrics.dropped, metrics.unreadable) == ({}, {}, why)
    assert metrics.note() == f"the metrics file ($MLTASK_METRICS_FILE): {why}: no metric kept"


def test_parse_metrics_keeps_at_most_max_metrics() -> None:
    metrics = parse_metrics(json.dumps({f"m{i:03}": i for i in range(150)}))
    assert list(metrics.values) == [f"m{i:03}" for i in range(100)]
    assert list(metrics.dropped) == [f"m{i:03}" for i in range(100, 150)]
    note = metrics.note()
    assert note is not None and "50 metric(s) dropped, 100 kept" in note and "and 40 more" in note


def test_bad_metrics_keep_the_last_good_ones() -> None:
    prev = MLTaskStatus(status="running", attempt=1, workflow_name=WF,
                        metrics={"accuracy": 0.5})
    t = task(status=prev)
    wf = argo.run_pod(workflow(t), "download")
    wf = argo.finish_pod(wf, "download")
    wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", outputs={"metrics": "{oops"})
    _, st = observe(t, wf)
    assert st.status == "running"
    assert st.metrics == {"accuracy": 0.5}
    assert cond(st, "MetricsValid").reason == "MetricsDropped"
    wf = argo.finish_pod(argo.run_pod(workflow(task()), "download"), "download")
    wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", outputs={"metrics": "{oops"})
    assert observe(task(), wf)[1].metrics is None


def test_a_diverged_training_completes_with_its_finite_metrics_and_says_what_it_dropped() -> None:
    t = task()
    wf = workflow(t)
    for s in ("download", "run", "upload"):
        outputs = {"run": {"metrics": '{"loss": NaN, "accuracy": 0.5, "steps": '
                                      + "9" * 400 + "}"},
                   "upload": {"result": json.dumps(RESULT)}}.get(s)
        wf = argo.finish_pod(argo.run_pod(wf, s), s, outputs=outputs)
    _, st = observe(t, wf)
    assert st.status == "completed"
    assert st.metrics == {"accuracy": 0.5}
    c = cond(st, "MetricsValid")
    assert (c.status, c.reason) == ("False", "MetricsDropped")
    assert "'loss' (not a finite number)" in c.message and "'steps'" in c.message
    body = st.to_k8s()
    json.dumps(body, allow_nan=False)  # what the API server accepts: no NaN, no Infinity
    assert conds(st)["Succeeded"] == ("True", "Completed")


def test_metrics_valid_turns_true_when_a_later_file_is_clean() -> None:
    t = task()
    wf = argo.finish_pod(argo.run_pod(workflow(t), "download"), "download")
    wf = argo.finish_pod(argo.run_pod(wf, "run"), "run", outputs={"metrics": '{"x": NaN}'})
    t, st = observe(t, wf)
    assert cond(st, "MetricsValid").status == "False"
    wf2 = argo.finish_pod(argo.run_pod(workflow(t), "download"), "download")
    wf2 = argo.finish_pod(argo.run_pod(wf2, "run"), "run", outputs={"metrics": '{"x": 1}'})
    _, st = observe(t, wf2)
    assert (cond(st, "MetricsValid").status, cond(st, "MetricsValid").reason) == (
        "True", "MetricsKept")
    assert st.metrics == {"x": 1.0}


@pytest.mark.parametrize(("raw", "expected"), [
    (json.dumps(RESULT), {"kind": "model", "name": "digits-mlp", "id": "model-42",
                          "uri": RESULT["uri"], "size": 37_704, "sha256": "ab" * 32}),
    ('{"uri": "s3://m/x.pt"}', {"kind": "model", "name": "digits-mlp",
                                "id": "s3://m/x.pt", "uri": "s3://m/x.pt"}),
    ('{"uri": "s3://m/x.pt", "id": 42, "size": 1.0e3, "sha256": "' + "AB" * 32 + '"}',
     {"kind": "model", "name": "digits-mlp", "id": "42", "uri": "s3://m/x.pt", "size": 1000,
      "sha256": "ab" * 32}),
    ("", {"kind": "model", "name": "digits-mlp"}),
    ("{}", {"kind": "model", "name": "digits-mlp"}),
])
def test_parse_result(raw: str, expected: dict[str, Any]) -> None:
    out = parse_result(raw, task())
    assert out is not None and out.to_k8s() == expected


@pytest.mark.parametrize(("raw", "says"), [
    ('{"uri": "s3://m/x.pt", "size": "big"}', "field 'size' must be a whole number"),
    ('{"uri": "s3://m/x.pt", "size": true}', "field 'size'"),
    ('{"uri": "s3://m/x.pt", "size": -1}', "field 'size'"),
    ('{"uri": "s3://m/x.pt", "size": 1.5}', "field 'size'"),
    ('{"uri": "s3://m/x.pt", "size": NaN}', "field 'size'"),
    ('{"uri": "s3://m/x.pt", "size": ' + "9" * 400 + "}", "field 'size'"),
    ('{"uri": ["s3://m/x.pt"]}', "field 'uri' must be a string"),
    ('{"uri": ""}', "field 'uri'"),
    ('{"uri": "s3://m/' + "k" * 5000 + '"}', "field 'uri'"),
    ('{"uri": "s3://m/x.pt", "sha256": 5}', "field 'sha256' must be 64 hexadecimal digits"),
    ('{"uri": "s3://m/x.pt", "sha256": "abc"}', "field 'sha256'"),
    ('{"uri": "s3://m/x.pt", "id": {"a": 1}}', "field 'id'"),
    ("not json", "not valid JSON"),
    ("[1]", "not a JSON object"),
    ("[" * 100_000, "larger than"),
])
def test_parse_result_refuses_a_malformed_file_naming_the_field(raw: str, says: str) -> None:
    with pytest.raises(InvalidResult, match="result file") as e:
        parse_result(raw, task())
    assert says in str(e.value)
    assert len(str(e.value)) < 1024


def test_parse_result_without_a_value_is_none() -> None:
    assert parse_result(None, task()) is None


def test_a_malformed_result_fails_the_task_naming_the_file_and_the_field() -> None:
    t = task()
    wf = argo.succeed_all(workflow(t), result={"uri": ["s3://m/x.pt"], "size": 3})
    _, st = observe(t, wf)
    assert st.status == "failed"
    assert st.message is not None
    assert "$MLTASK_RESULT_FILE" in st.message and "'uri'" in st.message
    assert conds(st)["Failed"] == ("True", "InvalidResult")
    assert st.outputs is None


def test_no_status_text_outgrows_its_schema_bound() -> None:
    t = task()
    wf = argo.finish_pod(argo.run_pod(workflow(t), "download"), "download")
    wf = argo.run_pod(wf, "run")
    wf = argo.finish_pod(wf, "run", "Failed", message="x" * 100_000)
    _, st = observe(t, wf)
    assert st.status == "failed"
    assert st.message is not None and len(st.message) <= 32768
    assert all(len(c.message) <= 32768 for c in st.conditions or [])
    assert all(len(s.message or "") <= 32768 for s in st.steps or [])
    MLTaskStatus.model_validate(st.to_k8s())  # the schema's bounds hold


def test_outputs_only_once_upload_succeeded() -> None:
    t = task()
    wf = argo.run_pod(through(workflow(t), "download", "run"), "upload")
    _, st = observe(t, wf)
    assert st.status == "running" and st.outputs is None


# ------------------------------------------------------------------- stale, conditions


@pytest.mark.parametrize("end", ["completed", "failed", "stopped"])
def test_stale_running_workflow_after_the_end_changes_nothing(end: str) -> None:
    t = task(limit=0, suspend=end == "stopped")
    wf = workflow(t)
    if end == "completed":
        final = argo.succeed_all(wf, result=RESULT)
    elif end == "failed":
        final = argo.finish_pod(argo.run_pod(wf, "download"), "download", "Failed")
    else:
        wf = argo.run_pod(wf, "download")
        wf["spec"]["shutdown"] = "Stop"
        final = argo.stop(wf)
    t, done = observe(t, final)
    assert done.status == end
    stale = argo.run_pod(workflow(t), "download")  # an old informer event: still running
    later = NOW + datetime.timedelta(minutes=3)
    _, st = observe(t.model_copy(update={"metadata": {**t.metadata, "generation": 3}}),
                    stale, later)
    assert st.status == end
    assert st.model_dump(exclude={"observed_generation"}) == \
        done.model_dump(exclude={"observed_generation"})
    assert st.observed_generation == 3


def test_condition_times_move_only_when_the_status_moves() -> None:
    t = task()
    wf = argo.run_pod(workflow(t), "download")
    t, first = observe(t, wf, NOW)
    assert {c.type: c.last_transition_time for c in first.conditions or []} == {
        "Succeeded": NOW, "Running": NOW, "Stopped": NOW, "Failed": NOW, "Ready": NOW}

    later = NOW + datetime.timedelta(minutes=5)
    wf = argo.run_pod(argo.finish_pod(wf, "download"), "run")
    t, second = observe(t, wf, later)
    assert second.execute_step == "run_task"
    assert cond(second, "Running").message == "Running run_task", "message follows"
    assert all(c.last_transition_time == NOW for c in second.conditions or []), \
        "no condition changed status"

    end = NOW + datetime.timedelta(minutes=9)
    wf = through(argo.finish_pod(wf, "run", outputs={"metrics": "{}"}), "upload")
    _, third = observe(t, wf, end)
    assert third.status == "completed"
    times = {c.type: c.last_transition_time for c in third.conditions or []}
    assert times == {"Succeeded": end,  # Unknown -> True
                     "Running": end,    # True -> False
                     "Ready": end,      # False -> True
                     "Stopped": NOW,    # False -> False
                     "Failed": NOW}     # False -> False
    assert {c.reason for c in third.conditions or []} == {"Completed"}


def test_conditions_carry_the_generation_they_were_computed_for() -> None:
    t = task(generation=4)
    wf = argo.run_pod(workflow(t), "download")
    t, st = observe(t, wf)
    assert {c.observed_generation for c in st.conditions or []} == {4}
    t5 = t.model_copy(update={"metadata": {**t.metadata, "generation": 5}})
    _, st = observe(t5, wf, NOW + datetime.timedelta(seconds=30))
    assert {c.observed_generation for c in st.conditions or []} == {5}
    assert st.observed_generation == 5
    assert cond(st, "Running").last_transition_time == NOW


# ------------------------------------------------------------------- the failed step's log


LOG = "\n".join(f"epoch {i}: loss 0.{i}" for i in range(30)) + (
    "\nerror: s3://bkt/raw/digits.csv.gz: 403 SignatureDoesNotMatch"
    " (credentials: AWS_ACCESS_KEY_ID from Secret s3-credentials)\n")


@pytest.mark.parametrize(("message", "expected"), [
    pytest.param("Error (exit code 3): boom\n", ("Error (exit code 3)", "boom"), id="one-line"),
    pytest.param("OOMKilled (exit code 137): a\nb\n", ("OOMKilled (exit code 137)", "a\nb"),
                 id="two-lines"),
    pytest.param("Error (exit code 2)", ("Error (exit code 2)", None), id="no-termination-message"),
    pytest.param("Error (exit code 1): reading\nerror: bad row 3\n"
                 'time="2026-11-28T01:41:35.716Z" level=info msg="sub-process exited" '
                 'argo=true error="<nil>"\nError: exit status 1\n',
                 ("Error (exit code 1)", "reading\nerror: bad row 3"), id="emissary-lines"),
    pytest.param("Error (exit code 137): Error: signal: killed\n",
                 ("Error (exit code 137)", None), id="only-the-epilogue"),
    pytest.param("pod deleted", ("pod deleted", None), id="not-a-container-exit"),
    pytest.param("The node was low on resource: memory. ", (
        "The node was low on resource: memory. ", None), id="eviction"),
    pytest.param(None, (None, None), id="none"),
])
def test_split_termination(message: str | None,
                           expected: tuple[str | None, str | None]) -> None:
    assert split_termination(message) == expected


def test_split_termination_keeps_the_last_lines_within_bounds() -> None:
    head, tail = split_termination("Error (exit code 1): " + LOG)
    assert head == "Error (exit code 1)"
    assert tail is not None
    lines = tail.splitlines()
    assert len(lines) == LOG_TAIL_LINES
    assert lines[-1].startswith("error: s3://bkt/raw/digits.csv.gz: 403")
    assert lines[0] == "epoch 11: loss 0.11", "the last lines, in order"
    huge = "Error (exit code 1): " + "x" * 10_000 + "\nthe end\n"
    _, tail = split_termination(huge)
    assert tail is not None and len(tail.encode()) <= LOG_TAIL_BYTES
    assert tail.endswith("the end")


def test_a_failed_steps_last_log_lines_are_kept_in_status() -> None:
    t = task(limit=0)
    wf = argo.run_pod(workflow(t), "download")
    wf = argo.finish_pod(wf, "download", "Failed", exit_code=1,
                         message="Error (exit code 1): " + LOG)
    _, st = observe(t, wf)
    assert st.status == "failed"
    download = steps_of(st)["download"]
    assert (download.message, download.exit_code) == ("Error (exit code 1)", 1)
    assert download.log_tail is not None
    assert download.log_tail.splitlines()[-1].startswith("error: s3://bkt/raw/digits.csv.gz")
    assert st.message == ("download step failed: Error (exit code 1): error: "
                          "s3://bkt/raw/digits.csv.gz: 403 SignatureDoesNotMatch (credentials: "
                          "AWS_ACCESS_KEY_ID from Secret s3-credentials)")
    # the Workflow and its pods are gone: status still says why
    t2 = t.model_copy(update={"status": st})
    _, after = observe(t2, None)
    assert steps_of(after)["download"].log_tail == download.log_tail


@pytest.mark.parametrize(("tail", "expected"), [
    pytest.param("reading digits\nerror: bad row 3", "error: bad row 3", id="error-last"),
    pytest.param("error: bad row 3\nreading digits", "error: bad row 3",
                 id="stderr-overtaken-by-stdout"),
    pytest.param("Traceback (most recent call last):\n  File x\nValueError: boom",
                 "ValueError: boom", id="traceback"),
    pytest.param("epoch 3\nepoch 4\n", "epoch 4", id="no-error-word"),
    pytest.param("  \n", None, id="blank"),
    pytest.param(None, None, id="none"),
])
def test_the_line_that_says_why(tail: str | None, expected: str | None) -> None:
    assert last_line(tail) == expected


# ------------------------------------------------------------------------------ progress


@pytest.mark.parametrize(("value", "kept"), [
    ("12/40", "12/40"), (" 7/2000\n", "7/2000"), ("40/40", "40/40"), ("0/10", "0/10"),
    ("0/1", None), ("1/1", None),            # Argo's own for every pod: no report
    ("41/40", None), ("-1/40", None), ("12 / 40", None), ("epoch 12/40", None),
    ("1" * 19 + "/" + "2" * 19, None), ("", None), (None, None),
])
def test_parse_progress(value: str | None, kept: str | None) -> None:
    assert parse_progress(value) == kept


def test_the_run_steps_progress_shows_while_it_runs_and_stays_once_done() -> None:
    t = task()
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    t, st = observe(t, wf)
    assert st.progress is None, "Argo's 0/1 is no progress of the step's own"
    wf = argo.report_progress(wf, "run", "12/40")
    t, st = observe(t, wf)
    assert (st.status, st.progress) == ("running", "12/40")
    wf = argo.finish_pod(wf, "run", outputs={"metrics": "{}"})
    t, st = observe(t, wf)
    assert st.progress == "40/40", "Argo completes a succeeded pod's progress"
    t, st = observe(t, through(wf, "upload"))
    assert (st.status, st.progress) == ("completed", "40/40")


def test_a_retried_run_pod_keeps_the_last_progress_until_it_reports() -> None:
    t = task()
    wf = argo.run_pod(through(workflow(t), "download"), "run")
    t, st = observe(t, argo.report_progress(wf, "run", "300/2000"))
    wf = argo.run_pod(argo.finish_pod(argo.report_progress(wf, "run", "300/2000"), "run",
                                      "Error", message="pod deleted"), "run")
    t, st = observe(t, wf)
    assert (st.status, st.progress) == ("running", "300/2000")
    t, st = observe(t, argo.report_progress(wf, "run", "350/2000"))
    assert st.progress == "350/2000"
