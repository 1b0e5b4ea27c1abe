"""Failures for real, on the real node: refused credentials, an input that matches nothing, a
run step that exits non-zero, a run pod lost mid-run — and the failed step's reason kept in the
task's status after its pods are gone."""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

import pytest

from harness.tasks import example_with, step
from harness.workspace import Workspace, kubectl_mltask, stored

pytestmark = pytest.mark.timeout(900)


def preprocessing(**changes: Any) -> dict[str, Any]:
    return example_with("preprocessing", **changes)


def delete_pods(ws: Workspace, workflow: str) -> None:
    """What pod GC, a node drain or an admin does: the step pods are gone."""
    ws.core.delete_collection_namespaced_pod(
        ws.namespace, label_selector=f"workflows.argoproj.io/workflow={workflow}",
        grace_period_seconds=0)
    deadline = time.monotonic() + 60
    while ws.core.list_namespaced_pod(
            ws.namespace, label_selector=f"workflows.argoproj.io/workflow={workflow}").items:
        assert time.monotonic() < deadline, "step pods not deleted"
        time.sleep(0.5)


def test_a_wrong_secret_key_fails_the_download_and_the_reason_outlives_the_pod(
        ws_wrong_secret: Workspace) -> None:
    ws = ws_wrong_secret
    name = ws.tasks.create(preprocessing())["metadata"]["name"]
    st = ws.tasks.wait_state(name, "failed", timeout=180)["status"]
    assert st["executeStep"] == "download"
    message = st["message"]
    assert message.startswith("download step failed: Error (exit code 1)"), message
    for words in ("mltask-examples", "raw/digits.csv.gz", "403", "SignatureDoesNotMatch",
                  "Secret s3-credentials"):
        assert words in message, message
    assert ws.s3.secret_key not in message and "wrong-secret" not in message
    tail = step(st, "download")["logTail"]
    assert "SignatureDoesNotMatch" in tail, tail
    assert step(st, "download")["retries"] == 0, "a refusal is not retried as an infra error"

    delete_pods(ws, st["workflowName"])
    after = ws.tasks.get(name)["status"]
    assert step(after, "download")["logTail"] == tail, "status keeps it without the pod"
    logs = kubectl_mltask(ws, "logs", name, "--step", "download")
    assert "SignatureDoesNotMatch" in logs.stdout and "is gone" in logs.stderr, logs


def test_an_input_that_matches_nothing_fails_with_the_uri(ws: Workspace) -> None:
    missing = "s3://mltask-examples/raw/no-such-digits.csv.gz"
    name = ws.tasks.create(preprocessing(input__dataset__uri=missing))["metadata"]["name"]
    st = ws.tasks.wait_state(name, "failed", timeout=180)["status"]
    assert st["executeStep"] == "download"
    assert missing in st["message"], st["message"]
    assert "does not exist" in st["message"] or "no object" in st["message"], st["message"]
    assert ws.tasks.workflows()[0]["status"]["phase"] == "Failed"


def test_a_run_step_exiting_non_zero_fails_and_is_not_retried(ws: Workspace) -> None:
    body = preprocessing()
    body["spec"]["steps"]["run"]["command"] = [
        "python3", "-c", "import sys; print('reading digits'); "
        "sys.exit('error: 3 rows have 63 columns, expected 65')"]
    name = ws.tasks.create(body)["metadata"]["name"]
    st = ws.tasks.wait_state(name, "failed", timeout=180)["status"]
    run = step(st, "run")
    assert (st["executeStep"], run["exitCode"], run["retries"]) == ("run_task", 1, 0)
    assert "expected 65" in run["logTail"] and "reading digits" in run["logTail"]
    assert st["message"].endswith("error: 3 rows have 63 columns, expected 65"), st["message"]
    assert step(st, "download")["phase"] == "Succeeded"
    assert "upload" not in {s["name"] for s in st["steps"]}


def test_a_run_pod_lost_mid_run_is_retried_and_the_task_completes(ws: Workspace) -> None:
    body = preprocessing()
    run = body["spec"]["steps"]["run"]
    # a longer run, so the pod can be taken away while it works (as a spot node is reclaimed)
    run["command"] = ["sh", "-c", "echo warming up; sleep 20; exec python3 -m digits.preprocess"]
    name = ws.tasks.create(body)["metadata"]["name"]
    st = ws.tasks.wait(name, lambda s: step(s, "run").get("phase") == "Running"
                       and s.get("status") == "running", "the run step to run",
                       timeout=180)["status"]
    pod = step(st, "run")["pod"]
    time.sleep(4)  # past Argo's "recently started" window: a loss, not a slow start
    ws.core.delete_namespaced_pod(pod, ws.namespace, grace_period_seconds=0)
    ws.tasks.wait_state(name, "retry", timeout=60)
    st = ws.tasks.wait_state(name, "completed", timeout=240)["status"]
    assert step(st, "run")["retries"] == 1
    assert st["metrics"]["samples"] == 1797


def test_an_input_whose_sha256_does_not_hold_fails_the_download_naming_both(
        ws: Workspace) -> None:
    """Issue 26, finding 5: a given (or handed-on) digest is verified by the download step;
    a mismatch fails the task with the URI, the expected and the actual digest."""
    uri = "s3://mltask-examples/raw/digits.csv.gz"
    actual = hashlib.sha256(stored(ws.s3, uri)).hexdigest()
    expected = "0" * 64
    body = preprocessing(input__dataset__uri=uri, input__dataset__sha256=expected)
    name = ws.tasks.create(body)["metadata"]["name"]
    st = ws.tasks.wait_state(name, "failed", timeout=180)["status"]
    assert st["executeStep"] == "download"
    message = st["message"]
    for words in (uri, "sha256 mismatch", f"expected {expected}", f"got {actual}"):
        assert words in message, message
    assert "run" not in {s["name"] for s in st["steps"]}, "the run step never saw the data"


def test_a_training_lost_mid_run_resumes_from_its_last_checkpoint(ws: Workspace) -> None:
    """Issue 25, items 3 and 4: the example training reports its progress (status.progress,
    through Argo's progress reporting) and checkpoints to $MLTASK_CHECKPOINT_DIR on the task's
    working volume; its run pod is taken away mid-training (a spot node reclaimed) and the
    retried pod goes on from the last checkpoint: its log, the metrics and the progress say so."""
    prep = ws.tasks.create(preprocessing())["metadata"]["name"]
    dataset = ws.tasks.wait_state(prep, "completed", timeout=240)["status"]["outputs"]["uri"]
    body = example_with("training", input__dataset__uri=dataset,
                        output__uri="s3://mltask-examples/models/resumed-$(run.name)/")
    body["spec"]["config"]["parameters"].update({"epochs": "3000", "checkpointEvery": "100"})
    name = ws.tasks.create(body)["metadata"]["name"]
    st = ws.tasks.wait(name, lambda s: step(s, "run").get("phase") == "Running"
                       and s.get("status") == "running", "the training to run",
                       timeout=240)["status"]
    pod, running = step(st, "run")["pod"], time.monotonic()
    shown = ws.tasks.wait(name, lambda s: bool(s.get("progress")), "progress while it runs",
                          timeout=120)["status"]
    done, total = map(int, shown["progress"].split("/"))
    assert total == 3000 and 0 < done < 3000 and shown["status"] == "running", shown
    deadline, log = running + 240, ""
    # past Argo's "recently started" window (a loss, not a slow start), and a checkpoint or more
    while time.monotonic() - running < 4 or "checkpoint: epoch 200 saved" not in log:
        assert time.monotonic() < deadline, f"no checkpoint at epoch 200 in time: {log[-2000:]}"
        time.sleep(0.5)
        log = ws.core.read_namespaced_pod_log(pod, ws.namespace, container="main")
    assert "3000/3000" not in log, "the training ended before its pod could be taken away"
    ws.core.delete_namespaced_pod(pod, ws.namespace, grace_period_seconds=0)
    saved = [int(e) for e in re.findall(r"checkpoint: epoch (\d+) saved", log)]

    st = ws.tasks.wait_state(name, "completed", timeout=400)["status"]
    run = step(st, "run")
    assert run["retries"] == 1 and run["pod"] != pod, run
    resumed = st["metrics"]["resumedFromEpoch"]
    assert resumed >= max(saved) >= 200, (resumed, saved)
    again = ws.core.read_namespaced_pod_log(run["pod"], ws.namespace, container="main")
    assert f"resuming from checkpoint: epoch {resumed}/3000 done" in again, again[-2000:]
    assert "  60/3000" not in again, "the retried pod did not start over"
    assert 0.9 < st["metrics"]["accuracy"] <= 1.0, st["metrics"]
    assert st["progress"] == "3000/3000", st
