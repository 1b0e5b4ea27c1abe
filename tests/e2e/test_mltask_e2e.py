"""MLTasks under Argo's real workflow-controller, with pods scheduled by kube-scheduler onto kwok
nodes. Step images are simulated by kwok stages and the executor stand-in; everything between
(the operator, Argo's DAG, retries, shutdown, task results) is the real thing.

Step env knobs read by the simulation only: E2E_DURATION (how long a pod runs), E2E_EXIT_CODE
(the main container fails with it), E2E_METRICS (what the run step "writes" as metrics), E2E_LOG
(what the main container "prints"; kwok serves it on the kubelet API).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kubernetes import client

from harness.controlplane import ControlPlane
from harness.tasks import Tasks, cond, example, step
from mltask_operator import cli

pytestmark = pytest.mark.e2e

METRICS = {"accuracy": 0.91, "f1": 0.88}


def with_env(body: dict[str, Any], step_name: str, **env: str) -> dict[str, Any]:
    step_spec = body["spec"]["steps"][step_name]
    step_spec["env"] = [e for e in step_spec.get("env", []) if e["name"] not in env]
    step_spec["env"] += [{"name": k, "value": v} for k, v in env.items()]
    return body


def pods(tasks: Tasks, task: str) -> list[client.V1Pod]:
    return tasks.core.list_namespaced_pod(tasks.ns, label_selector=f"mltask.dev/task={task}").items


def wait_until(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def wait_pod_running(tasks: Tasks, task: str, template: str, timeout: float = 30) -> client.V1Pod:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in pods(tasks, task):
            ours = p.metadata.name.startswith(f"{task}-") and f"-{template}-" in p.metadata.name
            if ours and p.status.phase == "Running" and not p.metadata.deletion_timestamp:
                return p
        time.sleep(0.2)
    raise AssertionError(f"no running {template} pod for {task}")


@pytest.mark.parametrize("kind", ["preprocessing", "training", "optimization"])
def test_example_runs_to_completion_under_argo(tasks: Tasks, kind: str) -> None:
    body = with_env(example(kind), "run", E2E_METRICS=json.dumps(METRICS))
    name = tasks.create(body)["metadata"]["name"]
    st = tasks.wait_state(name, "completed", "done", timeout=90)["status"]

    out = body["spec"]["output"]
    produced = out.get("dataset") or out.get("model")
    expected_uri = f"{out['uri'].rstrip('/')}/{produced['name']}.{produced['fileExtension']}"
    assert st["outputs"]["uri"] == expected_uri
    assert st["outputs"]["kind"] == ("dataset" if kind == "preprocessing" else "model")
    assert len(st["outputs"]["sha256"]) == 64 and st["outputs"]["size"] > 0
    assert st["metrics"] == METRICS
    assert [s["phase"] for s in st["steps"]] == ["Succeeded"] * 3
    assert cond(st, "Succeeded")["status"] == "True"
    # the pod names the operator reports are the pods Argo created
    by_name = {p.metadata.name: p for p in pods(tasks, name)}
    assert {s["pod"] for s in st["steps"]} <= set(by_name)

    def main(step_name: str) -> client.V1Container:
        return next(c for c in by_name[step(st, step_name)["pod"]].spec.containers
                    if c.name == "main")

    # the examples leave download and upload out: the operator's own transfer steps ran
    # (Argo's emissary wraps the container's command: argoexec emissary ... -- COMMAND)
    for transfer in ("download", "upload"):
        assert main(transfer).command[-3:] == ["--", "mltask-transfer", transfer]
    run_pod = by_name[step(st, "run")["pod"]]
    if kind == "training":  # the GPU example lands on the GPU node, with the GPU request
        assert run_pod.spec.node_name == "kwok-gpu-0"
        assert main("run").resources.limits["nvidia.com/gpu"] == "1"
    else:  # no GPU asked: the GPU node's taint keeps the run pod on the CPU node
        assert run_pod.spec.node_name == "kwok-cpu-0"
        assert "nvidia.com/gpu" not in (main("run").resources.limits or {})


def test_failing_run_step_ends_failed_with_step_and_message(tasks: Tasks) -> None:
    body = with_env(example("training"), "run", E2E_EXIT_CODE="3")
    body["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    name = tasks.create(body)["metadata"]["name"]
    st = tasks.wait_state(name, "failed", "run_task", timeout=60)["status"]
    assert step(st, "run")["exitCode"] == 3
    assert "exit code 3" in st["message"]
    assert step(st, "download")["phase"] == "Succeeded"
    assert "upload" not in [s["name"] for s in st["steps"]] or \
        step(st, "upload")["phase"] in ("Omitted", "Skipped")
    assert cond(st, "Failed")["status"] == "True"


def test_failed_then_retry_starts_one_new_attempt(tasks: Tasks) -> None:
    body = with_env(example("training"), "run", E2E_EXIT_CODE="3")
    body["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    name = tasks.create(body)["metadata"]["name"]
    tasks.wait_state(name, "failed", "run_task", timeout=60)
    tasks.patch(name, {"retryGeneration": 1})
    st = tasks.wait(name, lambda s: s.get("attempt") == 2 and s.get("status") == "failed",
                    "attempt 2 to fail too", timeout=60)["status"]
    assert step(st, "download")["attempt"] == 2
    # one new Workflow; attempt 1's is released, and Argo's pods go with it
    assert sorted(w["metadata"]["name"] for w in tasks.workflows()) == [f"{name}-2"]
    assert st["released"]["workflows"] == [f"{name}-1"]
    wait_until(lambda: {p.metadata.labels.get("mltask.dev/attempt")
                        for p in pods(tasks, name)} == {"2"},
               "attempt 1's pods collected with its Workflow", 60)


def test_pod_lost_on_spot_node_is_retried_automatically(tasks: Tasks) -> None:
    body = with_env(example("training"), "run", E2E_DURATION="10s")  # retryOn: OnError
    name = tasks.create(body)["metadata"]["name"]
    pod = wait_pod_running(tasks, name, "run", timeout=60)
    # Argo silently re-creates a pod lost within RECENTLY_STARTED_POD_DURATION of starting
    # (2 s on this cluster); a pod lost after that is a "pod deleted" error, as on a spot node
    time.sleep(4)
    tasks.core.delete_namespaced_pod(pod.metadata.name, tasks.ns)  # node reclaimed
    st = tasks.wait_state(name, "retry", "run_task", timeout=30)["status"]
    assert "retry" in st["message"].lower()
    st = tasks.wait_state(name, "completed", "done", timeout=90)["status"]
    assert step(st, "run")["retries"] == 1
    assert st["attempt"] == 1


def test_evicted_pod_is_retried_automatically(tasks: Tasks) -> None:
    """The kubelet evicts the run pod (node pressure; a spot node's graceful shutdown looks the
    same): Argo marks the node Failed with the kubelet's message, and the default OnError
    retry policy still retries it, because the infrastructure failed, not the user's code."""
    body = with_env(example("training"), "run", E2E_DURATION="12s")
    name = tasks.create(body)["metadata"]["name"]
    pod = wait_pod_running(tasks, name, "run", timeout=60)
    time.sleep(4)  # past Argo's grace for recently started pods, as in the spot-node test
    message = "The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi."
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tasks.core.patch_namespaced_pod_status(pod.metadata.name, tasks.ns, {"status": {
        "phase": "Failed", "reason": "Evicted", "message": message,
        "containerStatuses": [
            {"name": c.name, "image": c.image, "imageID": "", "ready": False,
             "restartCount": 0, "state": {"terminated": {
                 "exitCode": 137, "reason": "Error", "startedAt": now, "finishedAt": now}}}
            for c in pod.spec.containers],
    }})  # what the kubelet writes when it evicts a pod
    st = tasks.wait(name, lambda s: s.get("status") == "retry" or step(s, "run").get(
        "retries", 0) >= 1, "the evicted pod's retry", timeout=60)["status"]
    st = tasks.wait_state(name, "completed", "done", timeout=90)["status"]
    assert step(st, "run")["retries"] == 1 and st["attempt"] == 1
    # the evicted pod, superseded by its retry, is deleted; the step's latest pod stays
    st = tasks.wait(name, lambda s: (s.get("released") or {}).get("retryPods") == 1,
                    "the evicted pod released", timeout=30)["status"]
    wait_until(lambda: pod.metadata.name not in {p.metadata.name for p in pods(tasks, name)},
               "the evicted pod deleted", 30)
    assert step(st, "run")["pod"] in {p.metadata.name for p in pods(tasks, name)}
    assert (st["released"]["workVolume"], st["status"]) == (f"{name}-work", "completed")


def test_pod_gc_strategy_is_argos(tasks: Tasks) -> None:
    """spec.cleanup.podGC is handed to Argo's real controller, which deletes the pods."""
    body = example("preprocessing")
    body["spec"]["cleanup"] = {"podGC": "OnWorkflowSuccess"}
    name = tasks.create(body)["metadata"]["name"]
    tasks.wait_state(name, "completed", "done", timeout=90)
    wait_until(lambda: not pods(tasks, name), "Argo's pod GC", 60)


def test_users_non_zero_exit_is_not_retried_by_default(tasks: Tasks) -> None:
    """The same default policy (retryOn OnError, limit 3) leaves the user's own failure alone:
    Argo evaluates the operator's retry expression and fails the step at once."""
    body = with_env(example("training"), "run", E2E_EXIT_CODE="2")
    name = tasks.create(body)["metadata"]["name"]
    st = tasks.wait_state(name, "failed", "run_task", timeout=60)["status"]
    assert step(st, "run")["retries"] == 0 and step(st, "run")["exitCode"] == 2
    assert "exit code 2" in st["message"]


def test_stop_uses_argo_shutdown_and_continue_resumes_at_run(tasks: Tasks) -> None:
    body = with_env(example("optimization"), "run", E2E_DURATION="8s")
    name = tasks.create(body)["metadata"]["name"]
    wait_pod_running(tasks, name, "run", timeout=60)
    tasks.patch(name, {"suspend": True})
    st = tasks.wait_state(name, "stopped", "run_task", timeout=60)["status"]
    wf1 = next(w for w in tasks.workflows() if w["metadata"]["name"] == f"{name}-1")
    assert wf1["spec"]["shutdown"] == "Stop"
    assert wf1["status"]["phase"] == "Failed"
    assert cond(st, "Stopped")["status"] == "True"

    tasks.patch(name, {"suspend": False})
    st = tasks.wait_state(name, "completed", "done", timeout=90)["status"]
    assert st["attempt"] == 2
    assert [(s["name"], s["attempt"]) for s in st["steps"]] == [
        ("download", 1), ("run", 2), ("upload", 2)]
    wf2 = next(w for w in tasks.workflows() if w["metadata"]["name"] == f"{name}-2")
    assert [t["name"] for t in wf2["spec"]["templates"][0]["dag"]["tasks"]] == ["run", "upload"]


def test_logs_of_each_step_through_the_api_server(tasks: Tasks, e2e_cluster: ControlPlane,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`kubectl mltask logs` reads each step's pod log the way `kubectl logs` does: API server,
    then the node's kubelet API (kwok's, serving what the stand-in wrote for the container)."""
    lines = ["epoch 1/2  loss 0.9200", "epoch 2/2  loss 0.4100", "wrote model.joblib"]
    body = with_env(example("training"), "run", E2E_LOG="\n".join(lines))
    name = tasks.create(body)["metadata"]["name"]
    st = tasks.wait_state(name, "completed", "done", timeout=90)["status"]

    def mltask(*args: str) -> str:
        code = cli.main(["--kubeconfig", str(e2e_cluster.kubeconfig), "-n", tasks.ns, *args])
        out = capsys.readouterr()
        assert code == 0 and out.err == "", out.err
        return out.out

    run = mltask("logs", name, "--step", "run")
    assert run == "\n".join(lines) + "\n"
    assert mltask("logs", name, "--step", "run", "--tail", "1") == "wrote model.joblib\n"
    for name_of_step in ("download", "upload"):
        pod = step(st, name_of_step)["pod"]
        assert mltask("logs", name, "--step", name_of_step) == (
            f"[{name_of_step}] stand-in log of pod {pod} of mltask {name}\n")
    assert mltask("logs", name) == mltask("logs", name, "--step", "upload"), (
        "by default the step the task is at: the last one once done")
    # the same bytes `kubectl logs` gets
    run_pod = step(st, "run")["pod"]
    assert e2e_cluster.kubectl("logs", "-n", tasks.ns, run_pod, "-c", "main").stdout == run
