"""The kubectl plugin against the real API server: `main([...])` runs in-process with the test
control plane's kubeconfig while the operator runs and the Argo stand-in drives Workflows, or
with the operator stopped where a test writes the status and labels itself."""

from __future__ import annotations

import datetime
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.controlplane import free_port
from harness.pipelines import DATASET, PIPELINES, Pipelines, pipeline_example, succeed, task_state
from harness.tasks import REPO, RESULT, G, Tasks, V, example, step
from mltask_operator import cli
from mltask_operator.cli import render, runs, session
from mltask_operator.labels import ARCHIVED

pytestmark = pytest.mark.integration

TRAIN = "train-digits"


@dataclass
class Run:
    code: int
    out: str
    err: str

    def rows(self) -> list[list[str]]:
        """The table's rows (header dropped), split on whitespace."""
        return [line.split() for line in self.out.splitlines()[1:]]

    def names(self) -> list[str]:
        return sorted(r[0] for r in self.rows())


@pytest.fixture
def tasks(api: client.ApiClient, namespace: str, operator) -> Tasks:
    return Tasks(api, namespace)


@pytest.fixture
def mltask(control_plane, namespace: str, capsys):
    """`kubectl mltask ARGS` in the test namespace, as the admin unless `kubeconfig` says;
    `exactly` runs ARGS as they are (a command the plugin printed)."""

    def run(*args: str, kubeconfig: Path | None = None, ns: str | None = namespace,
            exactly: bool = False) -> Run:
        argv = ["--kubeconfig", str(kubeconfig or control_plane.kubeconfig)]
        argv += ["-n", ns] if ns else []
        code = cli.main(list(args) if exactly else [*argv, *args])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, captured.err
        return Run(code, captured.out, captured.err)

    return run


def _to_run_step(tasks: Tasks, argo, namespace: str, body: dict[str, Any]) -> tuple[str, str]:
    """Create the task and take it into its run step: (task, Workflow)."""
    name = tasks.create(body)["metadata"]["name"]
    wf = f"{name}-1"
    argo.wait_for(namespace, wf)
    argo.update(namespace, wf, argo_fn.run_pod, "download")
    argo.update(namespace, wf, argo_fn.finish_pod, "download")
    argo.update(namespace, wf, argo_fn.run_pod, "run")
    tasks.wait(name, lambda s: s.get("executeStep") == "run_task" and step(s, "run").get("pod"),
               "the run pod")
    return name, wf


def _fail_run(tasks: Tasks, argo, namespace: str, name: str) -> None:
    body = example("training")
    body["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    _to_run_step(tasks, argo, namespace, body)
    argo.update(namespace, f"{name}-1", argo_fn.finish_pod, "run", "Failed", exit_code=2,
                message="CUDA out of memory")
    tasks.wait_state(name, "failed", "run_task")


def _wait_shutdown(argo, namespace: str, wf: str) -> None:
    deadline = time.monotonic() + 30
    while not argo.get(namespace, wf)["spec"].get("shutdown"):
        assert time.monotonic() < deadline, f"Workflow {wf} was not asked to shut down"
        time.sleep(0.1)


def _viewer_kubeconfig(api: client.ApiClient, as_service_account, control_plane,
                       namespace: str, path: Path) -> tuple[Path, str]:
    """A kubeconfig for ServiceAccount `viewer`, allowed only get and list on MLTasks and
    Pipelines in `namespace`: (file, audit user name)."""
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "mltask-viewer"},
        "rules": [{"apiGroups": ["mltask.dev"], "resources": ["mltasks", "pipelines"],
                   "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "mltask-viewer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "mltask-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}]})
    token = as_service_account(namespace, "viewer").configuration.api_key["authorization"]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": control_plane.server,
            "certificate-authority": str(control_plane.certs / "ca.crt")}}],
        "users": [{"name": "viewer", "user": {"token": token}}],
        "contexts": [{"name": "viewer", "context": {"cluster": "test", "user": "viewer",
                                                    "namespace": namespace}}],
        "current-context": "viewer"}))
    return path, f"system:serviceaccount:{namespace}:viewer"


# ----------------------------------------------------------------------------------- list


def test_list_filters_on_the_server(tasks: Tasks, argo, namespace: str, mltask, api,
                                    as_service_account, control_plane, tmp_path) -> None:
    train = example("training")
    train["metadata"]["labels"] = {"team": "vision"}
    prep = example("preprocessing")
    prep["spec"]["pipelineRef"] = {"name": "digits"}  # as a task of a pipeline
    for body in (train, prep, example("optimization")):
        tasks.create(body)
    argo.wait_for(namespace, "preprocess-digits-1")
    argo.update(namespace, "preprocess-digits-1", argo_fn.run_pod, "download")
    argo.update(namespace, "preprocess-digits-1", argo_fn.finish_pod, "download", "Failed")
    tasks.wait_state("preprocess-digits", "failed")

    every = mltask("list")
    assert every.code == 0
    assert every.out.splitlines()[0].split() == render.TASK_HEADERS
    assert every.names() == ["optimize-digits", "preprocess-digits", TRAIN]
    failed = next(r for r in every.rows() if r[0] == "preprocess-digits")
    assert failed[1:6] == ["preprocessing", "failed", "download", "<none>", "1"]

    assert mltask("list", "--type", "training").names() == [TRAIN]
    assert mltask("list", "--status", "failed").names() == ["preprocess-digits"]
    assert mltask("list", "--pipeline", "digits").names() == ["preprocess-digits"]
    assert mltask("list", "-l", "team=vision").names() == [TRAIN]
    assert mltask("list", "--type", "optimization", "--status", "failed").names() == []
    nothing = mltask("list", "--type", "training", "--status", "failed")
    assert (nothing.code, nothing.out) == (0, "")
    assert nothing.err == f"No mltasks found in namespace {namespace}.\n"

    everywhere = mltask("list", "-A", "--type", "preprocessing", ns=None)
    assert everywhere.out.splitlines()[0].split() == ["NAMESPACE", *render.TASK_HEADERS]
    ours = [r for r in everywhere.rows() if r[0] == namespace]
    assert [r[1:4] for r in ours] == [["preprocess-digits", "preprocessing", "failed"]]
    assert all(r[2] == "preprocessing" for r in everywhere.rows())

    # The API server does the filtering: the plugin's list request carries the selectors.
    kubeconfig, user = _viewer_kubeconfig(api, as_service_account, control_plane, namespace,
                                          tmp_path / "viewer.kubeconfig")
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    viewed = mltask("list", "--type", "preprocessing", "--status", "failed", "-l", "tier!=x",
                    kubeconfig=kubeconfig, ns=None)  # the context's namespace
    assert viewed.names() == ["preprocess-digits"]
    lists = [e for e in control_plane.audit_events(user, since) if e["verb"] == "list"]
    assert lists, "the list was not audited"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(lists[-1]["requestURI"]).query)
    assert query["fieldSelector"] == ["spec.type=preprocessing,status.status=failed"]
    assert query["labelSelector"] == ["tier!=x,!mltask.dev/archived"], "archived ones hidden"


def test_the_namespace_defaults_to_the_kubeconfig_contexts(
        tasks: Tasks, namespace: str, mltask, control_plane, tmp_path) -> None:
    tasks.create(example("training"))
    kubeconfig = yaml.safe_load(control_plane.kubeconfig.read_text())
    kubeconfig["contexts"][0]["context"]["namespace"] = namespace
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    assert mltask("list", kubeconfig=path, ns=None).names() == [TRAIN]
    assert mltask("describe", TRAIN, kubeconfig=path, ns=None).code == 0
    assert mltask("describe", TRAIN, kubeconfig=path, ns="default").code == 1, "-n wins"
    wrong = mltask("list", "--context", "nope", kubeconfig=path, ns=None)
    assert wrong.code == 1 and wrong.err.startswith("error: cannot load the kubeconfig")


def test_forbidden_says_which_verb_and_resource(tasks: Tasks, namespace: str, mltask, api,
                                                as_service_account, control_plane,
                                                tmp_path) -> None:
    tasks.create(example("training"))
    kubeconfig, _ = _viewer_kubeconfig(api, as_service_account, control_plane, namespace,
                                       tmp_path / "viewer.kubeconfig")
    stop = mltask("stop", TRAIN, kubeconfig=kubeconfig)
    assert stop.code == 1
    assert stop.err.startswith(f"error: forbidden: you may not patch mltasks.mltask.dev "
                               f"'{TRAIN}' in namespace {namespace}: ")
    assert stop.err.count("\n") == 1
    assert tasks.get(TRAIN)["spec"].get("suspend") is not True
    cluster = mltask("list", "-A", kubeconfig=kubeconfig, ns=None)
    assert cluster.code == 1
    assert cluster.err.startswith("error: forbidden: you may not list mltasks.mltask.dev in "
                                  "any namespace")
    read = mltask("outputs", TRAIN, kubeconfig=kubeconfig)
    assert read.code == 1 and "has no outputs" in read.err, "get is allowed"


# ------------------------------------------------------------------------------- describe


def test_describe_outputs_and_metrics_after_completion(tasks: Tasks, argo, namespace: str,
                                                       mltask) -> None:
    name = tasks.create(example("training"))["metadata"]["name"]
    tasks.wait(name, lambda s: s.get("workflowName"), "the Workflow")
    early = mltask("metrics", name)
    assert early.code == 1 and early.out == ""
    assert early.err.startswith(f"mltask {name} has no metrics (status ")
    assert mltask("outputs", name).code == 1

    argo.update(namespace, f"{name}-1", argo_fn.succeed_all, result=RESULT,
                metrics={"accuracy": 0.93, "loss": 0.21})
    st = tasks.wait_state(name, "completed", "done")["status"]

    outputs = mltask("outputs", name)
    assert outputs.code == 0 and yaml.safe_load(outputs.out) == st["outputs"]
    assert [line.split(":")[0] for line in outputs.out.splitlines()] == [
        "kind", "name", "id", "uri", "size", "sha256"], "in the API's order, not sorted"
    as_json = mltask("outputs", name, "-o", "json")
    assert json.loads(as_json.out) == st["outputs"]
    assert yaml.safe_load(mltask("metrics", name).out) == {"accuracy": 0.93, "loss": 0.21}
    assert json.loads(mltask("metrics", name, "-o", "json").out)["loss"] == 0.21

    described = mltask("describe", name)
    assert described.code == 0
    lines = described.out.splitlines()
    assert lines[0].split() == ["Name:", name]
    assert ["Status:", "completed"] in (line.split() for line in lines)
    table = lines.index("Steps:")
    rows = [line.split() for line in lines[table + 2:table + 5]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        (s["name"], "Succeeded", "1", s["pod"]) for s in st["steps"]]
    assert f"  uri: {RESULT['uri']}" in lines and "  accuracy: 0.93" in lines
    conditions = lines[lines.index("Conditions:") + 2:]
    assert {r.split()[0] for r in conditions} == {c["type"] for c in st["conditions"]}

    piped = mltask("outputs", "pipeline/digits")
    assert piped.code == 1 and "outputs applies to an MLTask" in piped.err


def test_not_found_is_one_line(namespace: str, mltask) -> None:
    for args, kind in ((["describe", "nope"], "mltask"), (["stop", "nope"], "mltask"),
                       (["continue", "mlt/nope"], "mltask"), (["retry", "nope"], "mltask"),
                       (["logs", "nope"], "mltask"), (["outputs", "nope"], "mltask"),
                       (["metrics", "nope"], "mltask"), (["describe", "pipeline/nope"],
                                                         "pipeline"),
                       (["stop", "mlp/nope"], "pipeline"), (["retry", "pipelines/nope"],
                                                            "pipeline")):
        run = mltask(*args)
        assert (run.code, run.out) == (1, ""), args
        assert run.err == f"error: {kind} nope not found in namespace {namespace}\n", args
    assert mltask("list", ns="no-such-namespace").err == (
        "No mltasks found in namespace no-such-namespace.\n")


# ---------------------------------------------------------------- stop, continue, retry


def test_stop_then_continue(tasks: Tasks, argo, namespace: str, mltask) -> None:
    name, wf1 = _to_run_step(tasks, argo, namespace, example("training"))
    stop = mltask("stop", name)
    assert stop.code == 0 and stop.out.startswith(f"mltask/{name} stop requested")
    assert tasks.get(name)["spec"]["suspend"] is True
    tasks.wait_state(name, "stopping", "run_task")
    _wait_shutdown(argo, namespace, wf1)
    argo.update(namespace, wf1, argo_fn.stop)
    tasks.wait_state(name, "stopped", "run_task")
    again = mltask("stop", name)
    assert again.code == 0 and "already stopped" in again.out
    head = mltask("describe", name).out
    assert ["Status:", "stopped"] in (line.split() for line in head.splitlines())
    assert ["Suspend:", "true"] in (line.split() for line in head.splitlines())

    cont = mltask("continue", name)
    assert cont.code == 0 and cont.out.startswith(f"mltask/{name} continue requested")
    assert tasks.get(name)["spec"]["suspend"] is False
    wf2 = argo.wait_for(namespace, f"{name}-2")
    assert wf2["metadata"]["annotations"]["mltask.dev/start-step"] == "run"
    tasks.wait(name, lambda s: s.get("attempt") == 2, "attempt 2")
    assert "nothing to continue" in mltask("continue", name).out

    # the first attempt's pods went with its Workflow, released once attempt 2 ran
    argo.update(namespace, f"{name}-2", argo_fn.run_pod, "run")
    tasks.wait(name, lambda s: step(s, "run").get("attempt") == 2, "attempt 2's run pod")
    tasks.wait(name, lambda s: f"{name}-1" in (s.get("released") or {}).get("workflows", []),
               "attempt 1 released")
    earlier = mltask("logs", name, "--attempt", "1")
    assert earlier.code == 1
    assert earlier.err == (f"error: attempt 1 of mltask {name} was released (Workflow "
                           f"{name}-1 and its pods were deleted once a later attempt ran); a "
                           "failed step's last log lines are kept in its status: kubectl "
                           f"mltask describe {name}\n")
    assert mltask("logs", name, "--attempt", "3").err == (
        f"error: mltask {name} has had 2 attempt(s), not 3\n")


def test_retry_starts_a_new_attempt_and_is_refused_while_running(
        tasks: Tasks, argo, namespace: str, mltask) -> None:
    _fail_run(tasks, argo, namespace, TRAIN)

    retry = mltask("retry", TRAIN)
    assert retry.code == 0, retry.err
    assert retry.out == (f"mltask/{TRAIN} retry requested: retryGeneration 1; a new attempt "
                         "will start from download\n")
    spec = tasks.get(TRAIN)["spec"]
    assert (spec["retryGeneration"], spec["suspend"]) == (1, False)
    wf2 = argo.wait_for(namespace, f"{TRAIN}-2")
    assert wf2["metadata"]["annotations"]["mltask.dev/start-step"] == "download"
    tasks.wait(TRAIN, lambda s: s.get("attempt") == 2, "attempt 2")
    argo.update(namespace, f"{TRAIN}-2", argo_fn.run_pod, "download")
    tasks.wait_state(TRAIN, "running", "download")

    refused = mltask("retry", TRAIN)
    assert refused.code == 1 and refused.out == ""
    assert refused.err.startswith(f"error: mltask {TRAIN} is still active (running): the "
                                  "operator ignores a retry")
    assert tasks.get(TRAIN)["spec"]["retryGeneration"] == 1
    time.sleep(1)  # let any stray Workflow appear
    # one new Workflow; attempt 1's is released once attempt 2 runs
    assert sorted(w["metadata"]["name"] for w in tasks.workflows()) == [f"{TRAIN}-2"]


def test_concurrent_retries_never_share_a_number(tasks: Tasks, argo, namespace: str, mltask,
                                                 monkeypatch) -> None:
    """Another retry lands between the plugin's read and its patch: the patch, carrying the
    resourceVersion read, is refused (409); the plugin reads again and asks for the next
    number instead of writing the same one."""
    _fail_run(tasks, argo, namespace, TRAIN)
    reads: list[int] = []
    real_get = session.Session.get

    def get_then_someone_retries(self, target):
        obj = real_get(self, target)
        reads.append(int(obj["spec"].get("retryGeneration") or 0))
        if len(reads) == 1:  # the other user's retry, held by suspend: the task stays failed
            tasks.patch(TRAIN, {"retryGeneration": 1, "suspend": True})
        return obj

    monkeypatch.setattr(session.Session, "get", get_then_someone_retries)
    run = mltask("retry", TRAIN)
    assert run.code == 0, run.err
    # the operator's own status writes may cost the plugin more tries; each read after the
    # first sees the other retry, so none of them can reuse number 1
    assert reads[:2] == [0, 1] and set(reads[1:]) == {1}, reads
    assert "retryGeneration 2;" in run.out
    assert tasks.get(TRAIN)["spec"]["retryGeneration"] == 2
    argo.wait_for(namespace, f"{TRAIN}-2")
    time.sleep(1)
    # one new Workflow; attempt 1's is released once attempt 2 runs
    assert sorted(w["metadata"]["name"] for w in tasks.workflows()) == [f"{TRAIN}-2"]


# ------------------------------------------------------------------------------------ logs


def test_logs_of_a_pod_that_cannot_be_read(tasks: Tasks, argo, namespace: str, mltask,
                                           api) -> None:
    name, _ = _to_run_step(tasks, argo, namespace, example("training"))
    st = tasks.get(name)["status"]
    run_pod, download_pod = step(st, "run")["pod"], step(st, "download")["pod"]

    missing = mltask("logs", name)  # Argo's pods never exist here: nothing runs them
    assert missing.code == 1 and missing.out == ""
    assert missing.err == (f"error: pod {run_pod} (step run, attempt 1) of mltask {name} not "
                           f"found in namespace {namespace}: deleted, or not created yet\n")
    assert download_pod in mltask("logs", name, "--step", "download").err
    assert mltask("logs", name, "--step", "upload").err == (
        f"error: step upload of mltask {name} has not run\n")
    assert "logs applies to an MLTask" in mltask("logs", "pipeline/x").err

    # the pod exists, on a node whose kubelet does not answer
    core = client.CoreV1Api(api)
    node = f"no-kubelet-{namespace}"
    core.create_node({"metadata": {"name": node}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": free_port()}}}})
    try:
        _create_pod(core, namespace, run_pod, node)
        for args in ((), ("-f",), ("--tail", "10")):
            unread = mltask("logs", name, *args)
            assert unread.code == 1 and unread.out == ""
            assert unread.err.startswith(f"error: cannot read the logs of pod {run_pod} (step "
                                         f"run, attempt 1) of mltask {name}: "), unread.err
            assert unread.err.count("\n") == 1
    finally:
        core.delete_node(node)


def _create_pod(core: client.CoreV1Api, namespace: str, name: str, node: str) -> None:
    pod = {"metadata": {"name": name},
           "spec": {"nodeName": node, "automountServiceAccountToken": False,
                    "containers": [{"name": "main", "image": "busybox"}]}}
    deadline = time.monotonic() + 20
    while True:  # the namespace's default ServiceAccount may not exist yet
        try:
            core.create_namespaced_pod(namespace, pod)
            return
        except client.ApiException as e:
            if e.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -------------------------------------------------------------------------------- pipeline


def test_pipeline_stop_continue_retry(api: client.ApiClient, namespace: str, operator, argo,
                                      mltask) -> None:
    pipes = Pipelines(api, namespace)
    body = pipeline_example("digits")
    for t in body["spec"]["tasks"]:
        t["spec"].setdefault("runtime", {})["retryPolicy"] = {"limit": 0}
    pipes.create(body)
    pipes.wait_child("digits-preprocess")
    argo.wait_for(namespace, "digits-preprocess-1")
    argo.update(namespace, "digits-preprocess-1", argo_fn.succeed_all, result=DATASET)
    pipes.wait_child("digits-train")
    argo.wait_for(namespace, "digits-train-1")
    argo.update(namespace, "digits-train-1", argo_fn.run_pod, "download")
    pipes.wait("digits", lambda s: task_state(s, "train")["status"] == "running"
               and s.get("status") == "running", "train runs")

    listed = mltask("list", "pipelines")
    assert listed.out.splitlines()[0].split() == render.PIPELINE_HEADERS
    assert [r[:3] for r in listed.rows()] == [["digits", "running", "1/3"]]
    assert mltask("list", "--pipeline", "digits").names() == ["digits-preprocess",
                                                               "digits-train"]
    refused = mltask("retry", "pipeline/digits")
    assert refused.code == 1 and "pipeline digits is still active (running)" in refused.err
    owned = mltask("stop", "digits-train")
    assert owned.code == 1 and "kubectl mltask stop pipeline/digits" in owned.err
    assert pipes.children()["digits-train"]["spec"]["suspend"] is False

    stop = mltask("stop", "pipeline/digits")
    assert stop.code == 0 and stop.out.startswith("pipeline/digits stop requested")
    assert pipes.get("digits")["spec"]["suspend"] is True
    _wait_shutdown(argo, namespace, "digits-train-1")
    argo.update(namespace, "digits-train-1", argo_fn.stop)
    pipes.wait_state("digits", "stopped")
    assert mltask("list", "pipelines", "--status", "stopped").names() == ["digits"]
    assert mltask("list", "pipelines", "--status", "running").names() == []
    described = mltask("describe", "mlp/digits").out.splitlines()
    tasks_at = described.index("Tasks:")
    assert [r.split()[:3] for r in described[tasks_at + 2:tasks_at + 5]] == [
        ["preprocess", "digits-preprocess", "completed"],
        ["train", "digits-train", "stopped"],
        ["optimize", "<none>", "pending"]]

    cont = mltask("continue", "pipeline/digits")
    assert cont.code == 0 and cont.out.startswith("pipeline/digits continue requested")
    argo.wait_for(namespace, "digits-train-2")
    argo.update(namespace, "digits-train-2", argo_fn.run_pod, "download")  # stopped there
    argo.update(namespace, "digits-train-2", argo_fn.finish_pod, "download", "Failed")
    pipes.wait_state("digits", "failed")

    retry = mltask("retry", "pipelines/digits")
    assert retry.code == 0, retry.err
    assert retry.out.startswith("pipeline/digits retry requested: retryGeneration 1;")
    spec = pipes.get("digits")["spec"]
    assert (spec["retryGeneration"], spec["suspend"]) == (1, False)
    argo.wait_for(namespace, "digits-train-3")
    assert pipes.children()["digits-train"]["spec"]["retryGeneration"] == 1
    assert pipes.children()["digits-preprocess"]["spec"]["retryGeneration"] == 0


# --------------------------------------------------- archive, and list without the operator


@pytest.fixture
def quiet(operator) -> Iterator[None]:
    """The session's operator stopped for the test and started again after it: the test
    writes statuses and the mltask.dev/archived label itself, as the operator would, and
    nothing changes them meanwhile."""
    operator.stop()
    try:
        yield
    finally:
        operator.start()


class Store:
    """MLTasks and Pipelines of one namespace, their status and labels written as the operator
    would write them."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.objects = client.CustomObjectsApi(api)
        self.ns = namespace

    def create(self, plural: str, name: str, status: dict[str, Any] | None = None,
               archived: bool = False, labels: dict[str, str] | None = None,
               body: dict[str, Any] | None = None) -> dict[str, Any]:
        body = body or (pipeline_example("digits") if plural == "pipelines"
                        else example("training"))
        body["metadata"] = {**body.get("metadata", {}), "name": name, "labels": {
            **(labels or {}), **({ARCHIVED: "true"} if archived else {})}}
        body["spec"]["archived"] = archived
        obj = self.objects.create_namespaced_custom_object(G, V, self.ns, plural, body)
        if status:
            obj = self.set_status(plural, name, status)
        return obj

    def set_status(self, plural: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.objects.patch_namespaced_custom_object_status(G, V, self.ns, plural, name,
                                                                  {"status": status})

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.objects.patch_namespaced_custom_object(G, V, self.ns, plural, name, body)

    def get(self, plural: str, name: str) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(G, V, self.ns, plural, name)

    def delete(self, plural: str, name: str) -> None:
        self.objects.delete_namespaced_custom_object(G, V, self.ns, plural, name)


@pytest.fixture
def store(api: client.ApiClient, namespace: str, mltask_crds, quiet) -> Store:
    return Store(api, namespace)


RUNNING = {"status": "running", "executeStep": "run_task", "attempt": 1,
           "workflowName": "x-1", "startTime": "2026-01-01T00:00:00Z"}


def ended(status: str, duration: str | None = None) -> dict[str, Any]:
    st = {"status": status, "executeStep": "done" if status == "completed" else "run_task",
          "attempt": 1, "startTime": "2026-01-01T00:00:00Z",
          "completionTime": "2026-01-01T01:00:00Z"}
    return {**st, "duration": duration} if duration else st


def test_archive_and_unarchive_a_task(store: Store, mltask) -> None:
    store.create("mltasks", TRAIN, RUNNING)
    archive = mltask("archive", TRAIN)
    assert (archive.code, archive.err) == (0, "")
    assert archive.out.startswith(f"mltask/{TRAIN} archive requested: it was running, so it "
                                  "is stopped to be archived (spec.suspend: true; ")
    spec = store.get("mltasks", TRAIN)["spec"]
    assert (spec["archived"], spec["suspend"]) == (True, True), "in one patch"
    again = mltask("archive", TRAIN)
    assert (again.code, again.out) == (0, f"mltask/{TRAIN} is already archived: nothing to "
                                          "archive\n")

    # the operator stopped it meanwhile; retry and continue are refused by the plugin first
    store.set_status("mltasks", TRAIN, ended("stopped"))
    for verb in ("retry", "continue"):
        refused = mltask(verb, TRAIN)
        assert (refused.code, refused.out) == (1, "")
        assert refused.err == (f"error: mltask/{TRAIN} is archived (spec.archived): unarchive "
                               f"it first (kubectl mltask unarchive mltask/{TRAIN}), then "
                               f"{verb} it\n")
    spec = store.get("mltasks", TRAIN)["spec"]
    assert (spec["suspend"], spec.get("retryGeneration", 0)) == (True, 0)
    with pytest.raises(client.ApiException) as e:  # as the API server would have
        store.patch("mltasks", TRAIN, {"spec": {"retryGeneration": 1, "suspend": False}})
    assert e.value.status == 422 and "the task is archived (spec.archived)" in e.value.body

    unarchive = mltask("unarchive", TRAIN)
    assert unarchive.code == 0
    assert unarchive.out == (f"mltask/{TRAIN} unarchive requested: it stays stopped "
                             f"(spec.suspend: true); to continue it: kubectl mltask continue "
                             f"mltask/{TRAIN}\n")
    spec = store.get("mltasks", TRAIN)["spec"]
    assert (spec["archived"], spec["suspend"]) == (False, True)
    assert mltask("unarchive", TRAIN).out == f"mltask/{TRAIN} is not archived: nothing to " \
                                             "unarchive\n"
    assert mltask("continue", TRAIN).code == 0, "unarchived: continue is allowed again"

    store.create("mltasks", "done", ended("completed"))
    done = mltask("archive", "done")
    assert done.out.startswith("mltask/done archive requested: it keeps its status")
    spec = store.get("mltasks", "done")["spec"]
    assert (spec["archived"], spec.get("suspend", False)) == (True, False), "ended: not stopped"


def test_archive_and_unarchive_a_pipeline(store: Store, mltask) -> None:
    pipe = store.create("pipelines", "digits", {"status": "running", "progress": "0/3"})
    archive = mltask("archive", "pipeline/digits")
    assert archive.code == 0
    assert archive.out.startswith("pipeline/digits archive requested: it was running, so it is "
                                  "stopped to be archived")
    spec = store.get("pipelines", "digits")["spec"]
    assert (spec["archived"], spec["suspend"]) == (True, True)

    # a task of the pipeline, as the operator creates it: archived through the pipeline
    task = example("training")
    task["metadata"] = {"name": "digits-train", "ownerReferences": [{
        "apiVersion": f"{G}/{V}", "kind": "Pipeline", "name": "digits",
        "uid": pipe["metadata"]["uid"], "controller": True}]}
    task["spec"]["pipelineRef"] = {"name": "digits"}
    store.create("mltasks", "digits-train", body=task)
    for verb in ("archive", "unarchive"):
        owned = mltask(verb, "digits-train")
        assert (owned.code, owned.out) == (1, "")
        assert owned.err == ("error: mltask digits-train belongs to pipeline digits, which "
                             f"archives and unarchives its tasks: {verb} the pipeline instead "
                             f"(kubectl mltask {verb} pipeline/digits)\n")
    assert store.get("mltasks", "digits-train")["spec"]["archived"] is False

    store.set_status("pipelines", "digits", {"status": "stopped"})
    refused = mltask("retry", "mlp/digits")
    assert refused.code == 1 and "kubectl mltask unarchive pipeline/digits" in refused.err
    assert store.get("pipelines", "digits")["spec"].get("retryGeneration", 0) == 0

    unarchive = mltask("unarchive", "pipelines/digits")
    assert unarchive.code == 0 and "it stays stopped" in unarchive.out
    assert store.get("pipelines", "digits")["spec"]["archived"] is False


def test_list_hides_archived_ones_unless_asked(store: Store, mltask) -> None:
    store.create("mltasks", "kept", labels={"team": "vision"})
    store.create("mltasks", "other")
    store.create("mltasks", "old", archived=True, labels={"team": "vision"})
    store.create("mltasks", "older", archived=True)
    store.create("pipelines", "digits")
    store.create("pipelines", "digits-2024", archived=True)

    assert mltask("list").names() == ["kept", "other"]
    assert mltask("list", "--archived").names() == ["kept", "old", "older", "other"]
    assert mltask("list", "--only-archived").names() == ["old", "older"]
    assert mltask("list", "-l", "team=vision").names() == ["kept"]
    assert mltask("list", "-l", "team=vision", "--archived").names() == ["kept", "old"]
    assert mltask("list", "-l", "team=vision", "--only-archived").names() == ["old"]
    assert mltask("list", "-l", f"{ARCHIVED}=true").names() == ["old", "older"], \
        "a -l on the archived label decides alone"
    assert mltask("list", "pipelines").names() == ["digits"]
    assert mltask("list", "pipelines", "--only-archived").names() == ["digits-2024"]
    listed = mltask("list", "--archived")
    assert listed.out.splitlines()[0].split() == render.TASK_HEADERS, "the same columns"
    nothing = mltask("list", "-l", "team=none", "--only-archived")
    assert (nothing.code, nothing.out) == (0, "")


def test_list_sorted(store: Store, mltask) -> None:
    # created c, a, d, b (a second apart: creationTimestamp counts seconds)
    for name, status in (("c", ended("failed", "2m0s")), ("a", ended("completed", "59s")),
                         ("d", {**RUNNING, "duration": "1h2m3s"}), ("b", None)):
        store.create("mltasks", name, status)
        time.sleep(1.1)

    def order(*args: str) -> list[str]:
        run = mltask("list", *args)
        assert run.code == 0, run.err
        return [r[0] for r in run.rows()]

    assert order() == ["a", "b", "c", "d"], "the API's order"
    assert order("--sort-by", "created") == ["c", "a", "d", "b"]
    assert order("--sort-by", "duration") == ["d", "c", "a", "b"]
    assert order("--sort-by", "status") == ["a", "c", "d", "b"]
    assert order("--sort-by", "name") == ["a", "b", "c", "d"]
    first = mltask("list", "--limit", "2", "--sort-by", "duration")
    assert [r[0] for r in first.rows()] == ["a", "b"], "the first page, sorted within it"
    second = mltask(*shlex.split(first.err.splitlines()[-1])[2:], exactly=True)
    assert [r[0] for r in second.rows()] == ["d", "c"], "the second page, sorted within it"


def test_list_pages_through_every_object_once(store: Store, mltask, namespace: str,
                                              control_plane) -> None:
    names = [f"t-{i}" for i in range(7)]
    for name in names:
        store.create("mltasks", name)
    store.create("mltasks", "t-2x", archived=True)  # hidden: pages of the filtered listing

    pages: list[list[str]] = []
    run = mltask("list", "--limit", "3")
    while True:
        assert run.code == 0, run.err
        assert run.out.splitlines()[0].split() == render.TASK_HEADERS
        pages.append([r[0] for r in run.rows()])
        if not run.err:
            break
        head, command = run.err.splitlines()
        assert head == "More mltasks: the next page with"
        words = shlex.split(command)
        assert words[:2] == ["kubectl", "mltask"]
        assert words[2:-1] == ["--kubeconfig", str(control_plane.kubeconfig), "list", "-n",
                               namespace, "--limit", "3", "--continue"]
        run = mltask(*words[2:], exactly=True)
        assert len(pages) < 5, "the pages do not end"
    assert pages == [names[:3], names[3:6], names[6:]]

    expired = mltask("list", "--limit", "3", "--continue", "not-a-token")
    assert expired.code == 1 and expired.err.startswith("error: the API server refused to "
                                                        "list mltasks.mltask.dev")


INTERRUPTIBLE = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                 "runpy.run_module('mltask_operator.cli', run_name='__main__', alter_sys=True)")


class Watching:
    """`kubectl mltask list -w` in a subprocess, its output read line by line."""

    def __init__(self, argv: list[str]) -> None:
        # faulthandler: a plugin that does not end on Ctrl-C is sent SIGABRT, and says where
        # each of its threads was
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), "PYTHONFAULTHANDLER": "1"}
        # Ctrl-C in a terminal: SIGINT with its default disposition. A test run in the
        # background (`make test &`, nohup) ignores SIGINT, and a child inherits that, so the
        # plugin sets Python's handler back first, as a terminal would have it.
        self.proc = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE, *argv],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def next(self, timeout: float = 20) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line in {timeout}s; exit {self.proc.poll()}") from None

    def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: (exit code, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                _, err = self.proc.communicate(timeout=10)
            finally:
                self.proc.kill()
            raise AssertionError(f"still running 20 s after SIGINT; its threads:\n{err}") \
                from None
        finally:
            self.proc.kill()
        return self.proc.returncode, err


def test_list_watch_prints_additions_changes_and_removals(store: Store, control_plane,
                                                          namespace: str) -> None:
    store.create("mltasks", "a")
    watch = Watching(["--kubeconfig", str(control_plane.kubeconfig), "-n", namespace, "list",
                      "-w"])
    try:
        assert watch.next().split() == render.TASK_HEADERS
        assert watch.next().split()[:3] == ["a", "training", "<none>"]

        store.create("mltasks", "b")
        assert watch.next().split()[:3] == ["b", "training", "<none>"]
        store.set_status("mltasks", "a", RUNNING)
        assert watch.next().split()[:4] == ["a", "training", "running", "run_task"]
        store.patch("mltasks", "b", {"metadata": {"labels": {ARCHIVED: "true"}},
                                     "spec": {"archived": True}})  # as archiving does
        assert watch.next() == ("mltask/b archived: hidden from now on (--archived shows "
                                "archived ones)")
        store.delete("mltasks", "a")  # no finalizer: the operator never saw it
        assert watch.next() == "mltask/a deleted"
    finally:
        code, err = watch.interrupt()
    assert (code, err) == (0, ""), err


# ------------------------------------------------------------------------------------ run

PARAMS_FILE = REPO / "examples" / "pipeline-params.yaml"
CREATED = re.compile(r"pipeline\.mltask\.dev/(digits-tuned-[a-z0-9]{5}) created")


def _pipeline_names(api: client.ApiClient, namespace: str) -> list[str]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        G, V, namespace, PIPELINES)["items"]
    return sorted(p["metadata"]["name"] for p in items)


def _values(pipeline: dict[str, Any]) -> dict[str, str | None]:
    return {p["name"]: p.get("value") for p in pipeline["spec"]["parameters"]}


def test_run_creates_a_new_pipeline_whose_tasks_get_the_values(
        api: client.ApiClient, namespace: str, operator, argo, mltask) -> None:
    pipes = Pipelines(api, namespace)
    before = PARAMS_FILE.read_text()
    run = mltask("run", "-f", str(PARAMS_FILE), "--param", "learningRate=0.01",
                 "--param", "epochs=20")
    assert (run.code, run.err) == (0, "")
    first, *overrides = run.out.splitlines()
    found = CREATED.fullmatch(first)
    assert found, run.out
    assert overrides == ["  learningRate=0.01", "  epochs=20"]
    name = found.group(1)
    assert PARAMS_FILE.read_text() == before, "the file is left as it is"
    created = pipes.get(name)
    assert created["metadata"]["generateName"] == "digits-tuned-"
    assert _values(created) == {"learningRate": "0.01", "epochs": "20", "hiddenUnits": None,
                                "pruneFraction": None, "seed": None, "minAccuracy": None}
    again = mltask("run", "-f", str(PARAMS_FILE), "--param", "seed=7")
    other = CREATED.fullmatch(again.out.splitlines()[0])
    assert other and other.group(1) != name, "each run is a new Pipeline"
    assert _pipeline_names(api, namespace) == sorted([name, other.group(1)]), \
        "the file's own digits-tuned is not created"

    pipes.wait_child(f"{name}-preprocess")
    succeed(argo, namespace, f"{name}-preprocess-1", DATASET)
    train = pipes.wait_child(f"{name}-train")["spec"]["config"]["parameters"]
    assert (train["learningRate"], train["epochs"], train["seed"]) == ("0.01", "20", "0")


def test_run_refuses_a_bad_value_naming_the_parameter(api: client.ApiClient, namespace: str,
                                                      mltask_crds, mltask,
                                                      monkeypatch) -> None:
    bad = mltask("run", "-f", str(PARAMS_FILE), "--param", "epochs=ten")
    assert (bad.code, bad.out) == (2, "")
    assert bad.err == "kubectl mltask run: parameter epochs: value 'ten' is not an int, e.g. 5\n"
    assert _pipeline_names(api, namespace) == []

    # Past the plugin's own check, the API server's CEL rule refuses it too: in one line.
    monkeypatch.setattr(runs, "validate", lambda spec: [])
    for dry_run in ([], ["--dry-run"]):
        refused = mltask("run", "-f", str(PARAMS_FILE), "--param", "epochs=ten", *dry_run)
        assert (refused.code, refused.out) == (1, ""), refused.err
        assert refused.err.startswith("error: the API server refused to create "
                                      f"pipelines.mltask.dev in namespace {namespace}: "), \
            refused.err
        assert "spec.parameters[1].value: " in refused.err
        assert "parameter epochs value is not written as a value of its type" in refused.err
        assert refused.err.count("\n") == 1
    assert _pipeline_names(api, namespace) == [], "nothing created"


def test_run_refuses_an_unknown_parameter(api: client.ApiClient, namespace: str, mltask_crds,
                                          mltask) -> None:
    unknown = mltask("run", "-f", str(PARAMS_FILE), "--param", "learningRate=0.01",
                     "--param", "learningrate=0.02")
    assert (unknown.code, unknown.out) == (2, "")
    assert unknown.err == (
        f"kubectl mltask run: --param learningrate: the Pipeline of {PARAMS_FILE} has no "
        "parameter learningrate; its parameters are learningRate, epochs, hiddenUnits, "
        "pruneFraction, seed, minAccuracy\n")
    assert _pipeline_names(api, namespace) == []


def test_run_with_a_name_and_its_dry_run(api: client.ApiClient, namespace: str, mltask_crds,
                                         mltask, tmp_path) -> None:
    # the namespace from the file: the kubeconfig's context has none
    body = pipeline_example("params")
    body["metadata"]["namespace"] = namespace
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))

    dry = mltask("run", "-f", str(path), "--name", "digits-lr01", "--param",
                 "learningRate=0.01", "--dry-run", ns=None)
    assert dry.code == 0, dry.err
    printed = yaml.safe_load(dry.out)
    assert printed["metadata"] == {"name": "digits-lr01", "namespace": namespace}
    assert _values(printed)["learningRate"] == "0.01"
    assert dry.err == ("pipeline.mltask.dev/digits-lr01 checked by the API server (server dry "
                       f"run): nothing created in namespace {namespace}\n")
    assert _pipeline_names(api, namespace) == [], "a dry run creates nothing"

    run = mltask("run", "-f", str(path), "--name", "digits-lr01", "--param",
                 "learningRate=0.01", ns=None)
    assert (run.code, run.err) == (0, "")
    assert run.out == "pipeline.mltask.dev/digits-lr01 created\n  learningRate=0.01\n"
    assert _pipeline_names(api, namespace) == ["digits-lr01"]

    taken = mltask("run", "-f", str(path), "--name", "digits-lr01", "--param",
                   "learningRate=0.02")
    assert (taken.code, taken.out) == (1, "")
    assert taken.err == (f"error: pipeline digits-lr01 already exists in namespace {namespace} "
                         "(AlreadyExists): choose another --name, or leave --name out for a "
                         "generated name\n")
    stored = Pipelines(api, namespace).get("digits-lr01")
    assert _values(stored)["learningRate"] == "0.01", "the existing one is left as it is"
