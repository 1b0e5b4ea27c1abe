"""STAND-IN FOR ARGO'S WORKFLOW CONTROLLER — tests and the demo only, never the operator.

No Argo controller runs on the test control plane, so this module advances a Workflow's
`status` the way Argo v3.6 does for the DAG the operator writes: a root DAG node named after
the Workflow, one node per DAG task named `<wf>.<task>` (a Retry node with Pod children
`<wf>.<task>(N)` when the template has a retryStrategy), node ids `<wf>-<fnv32a(name)>`,
output parameters and exitCode on the Pod node, and `spec.shutdown: Stop` ending running
pods with "Stopped with strategy 'Stop'".

The pure functions take and return Workflow dicts; `ArgoStandIn` writes them to the API
server (the Workflow CRD has no status subresource: Argo updates the whole object).
"""

from __future__ import annotations

import copy
import datetime
import json
import re
import time
from typing import Any

from kubernetes import client

from mltask_operator.builders import workflow as wfb
from mltask_operator.mltask_status import fnv32a

RETRYABLE = {
    "Always": {"Failed", "Error"},
    "OnFailure": {"Failed"},
    "OnError": {"Error"},
    "OnTransientError": {"Error"},
}


def retried(retry: dict[str, Any], phase: str, message: str) -> bool:
    """Argo's choice for a failed pod: its retryPolicy, then its `expression` if any. The
    stand-in knows only the expression the operator writes (Argo's expr language is not
    reimplemented here); the e2e tests check the real controller agrees."""
    if phase not in RETRYABLE[retry.get("retryPolicy", "OnFailure")]:
        return False
    expression = retry.get("expression")
    if not expression:
        return True
    if expression != wfb.ON_INFRASTRUCTURE_ERROR:
        raise NotImplementedError(f"the Argo stand-in cannot evaluate {expression!r}")
    return phase == "Error" or bool(re.search(wfb.INFRASTRUCTURE_FAILURE, message))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat().replace(
        "+00:00", "Z")


def node_id(wf_name: str, node_name: str) -> str:
    return wf_name if node_name == wf_name else f"{wf_name}-{fnv32a(node_name)}"


def _template(wf: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in wf["spec"]["templates"] if t["name"] == name)


def dag_tasks(wf: dict[str, Any]) -> list[str]:
    main = _template(wf, wf["spec"]["entrypoint"])
    return [t["name"] for t in main["dag"]["tasks"]]


def start(wf: dict[str, Any]) -> dict[str, Any]:
    """The controller picked the Workflow up: phase Running and the root DAG node."""
    wf = copy.deepcopy(wf)
    name = wf["metadata"]["name"]
    status = wf.setdefault("status", {})
    if status.get("phase"):
        return wf
    now = _now()
    status.update({"phase": "Running", "startedAt": now, "progress": "0/0"})
    status["nodes"] = {name: {
        "id": name, "name": name, "displayName": name, "type": "DAG",
        "templateName": wf["spec"]["entrypoint"], "phase": "Running", "startedAt": now,
        "children": [],
    }}
    return wf


def _task_node(wf: dict[str, Any], task: str) -> dict[str, Any] | None:
    name = f"{wf['metadata']['name']}.{task}"
    return wf["status"]["nodes"].get(node_id(wf["metadata"]["name"], name))


def _pods(wf: dict[str, Any], task: str) -> list[dict[str, Any]]:
    return sorted(
        (n for n in wf["status"]["nodes"].values()
         if n["type"] == "Pod" and n["templateName"] == task),
        key=lambda n: int(n["name"].rsplit("(", 1)[1].rstrip(")")) if "(" in n["name"] else -1,
    )  # in Argo's retry order: `run(10)` comes after `run(9)`


def run_pod(wf: dict[str, Any], task: str) -> dict[str, Any]:
    """The step's (next) pod is running."""
    wf = start(wf)
    wf_name = wf["metadata"]["name"]
    nodes = wf["status"]["nodes"]
    root = nodes[wf_name]
    template = _template(wf, task)
    retry = template.get("retryStrategy")
    now = _now()
    task_name = f"{wf_name}.{task}"
    task_id = node_id(wf_name, task_name)
    if task_id not in nodes:
        nodes[task_id] = {
            "id": task_id, "name": task_name, "displayName": task,
            "type": "Retry" if retry else "Pod", "templateName": task, "phase": "Running",
            "startedAt": now, "boundaryID": wf_name, "children": [],
        }
        root["children"].append(task_id)
    if not retry:
        nodes[task_id]["phase"] = "Running"
        return wf
    index = len(_pods(wf, task))
    pod_name = f"{task_name}({index})"
    pod_id = node_id(wf_name, pod_name)
    nodes[pod_id] = {
        "id": pod_id, "name": pod_name, "displayName": f"{task}({index})", "type": "Pod",
        "templateName": task, "phase": "Running", "startedAt": now, "boundaryID": wf_name,
    }
    nodes[task_id]["children"].append(pod_id)
    nodes[task_id]["phase"] = "Running"
    return wf


def report_progress(wf: dict[str, Any], task: str, progress: str) -> dict[str, Any]:
    """The step's running pod reported `progress` (the last line of its ARGO_PROGRESS_FILE):
    Argo's wait container sends it in the pod's WorkflowTaskResult and the controller copies a
    valid N/M into the pod's node (an invalid one is dropped there)."""
    wf = copy.deepcopy(wf)
    retry = _template(wf, task).get("retryStrategy")
    pod = _pods(wf, task)[-1] if retry else _task_node(wf, task)
    if pod is None or pod["phase"] != "Running":
        raise ValueError(f"step {task} has no running pod")
    n, _, m = progress.partition("/")
    if n.isdigit() and m.isdigit() and int(m) > 0 and int(n) <= int(m):
        pod["progress"] = progress
    return wf


def _finish_workflow(wf: dict[str, Any], phase: str, message: str | None = None) -> None:
    now = _now()
    status = wf["status"]
    status["phase"] = phase
    status["finishedAt"] = now
    if message:
        status["message"] = message
    root = status["nodes"][wf["metadata"]["name"]]
    root["phase"] = phase
    root["finishedAt"] = now


def finish_pod(wf: dict[str, Any], task: str, phase: str = "Succeeded", *,
               outputs: dict[str, str] | None = None, exit_code: int | None = None,
               message: str | None = None) -> dict[str, Any]:
    """The step's latest pod ended in `phase` (Succeeded, Failed or Error)."""
    wf = copy.deepcopy(wf)
    task_node = _task_node(wf, task)
    if task_node is None:
        raise ValueError(f"step {task} has no running pod")
    template = _template(wf, task)
    retry = template.get("retryStrategy")
    pod = _pods(wf, task)[-1] if retry else task_node
    now = _now()
    pod["phase"] = phase
    pod["finishedAt"] = now
    if phase == "Succeeded":  # Argo's progress.UpdateProgress: a succeeded pod's N/M is M/M
        total = (pod.get("progress") or "0/1").split("/")[1]
        pod["progress"] = f"{total}/{total}"
    if exit_code is None:
        exit_code = 0 if phase == "Succeeded" else 1
    pod_outputs: dict[str, Any] = {"exitCode": str(exit_code)}
    if phase == "Succeeded":
        declared = [p["name"] for p in (template.get("outputs") or {}).get("parameters", [])]
        params = []
        for p in (template.get("outputs") or {}).get("parameters", []):
            value = (outputs or {}).get(p["name"], p.get("valueFrom", {}).get("default"))
            if value is None:
                # Argo errors the node when a declared output file is missing and has no default
                return finish_pod(wf, task, "Error", exit_code=0, message=(
                    f"failed to get output parameter '{p['name']}': open "
                    f"{p['valueFrom']['path']}: no such file or directory"))
            params.append({"name": p["name"], "value": value, "valueFrom": p["valueFrom"]})
        if declared:
            pod_outputs["parameters"] = params
    else:
        pod["message"] = message or (f"Error (exit code {exit_code})" if phase == "Failed"
                                     else "pod deleted")
    pod["outputs"] = pod_outputs
    if retry:
        tries = len(_pods(wf, task))
        limit = int(retry.get("limit", 0))
        if phase != "Succeeded" and retried(retry, phase, pod["message"]) and tries <= limit:
            return wf  # Argo will start the next pod after the backoff: call run_pod again
        task_node.update({"phase": phase, "finishedAt": now, "outputs": pod_outputs})
        if phase != "Succeeded":
            task_node["message"] = pod["message"]
    if phase != "Succeeded":
        _finish_workflow(wf, "Failed", f"child '{task_node['id']}' failed")
    elif dag_tasks(wf)[-1] == task:
        _finish_workflow(wf, "Succeeded")
    return wf


def stop(wf: dict[str, Any]) -> dict[str, Any]:
    """What Argo does for `spec.shutdown: Stop`: running pods end, the Workflow fails."""
    wf = copy.deepcopy(wf)
    if not (wf.get("spec") or {}).get("shutdown"):
        return wf
    wf = start(wf)
    strategy = wf["spec"]["shutdown"]
    now = _now()
    for node in wf["status"]["nodes"].values():
        if node["phase"] in ("Running", "Pending"):
            # Argo v3.6's words, checked against the real controller in tests/e2e
            node.update({"phase": "Failed", "finishedAt": now,
                         "message": f"workflow shutdown with strategy:  {strategy}"})
    _finish_workflow(wf, "Failed", f"Stopped with strategy '{strategy}'")
    return wf


def succeed_all(wf: dict[str, Any], *, result: dict[str, Any] | None = None,
                metrics: dict[str, float] | None = None) -> dict[str, Any]:
    for task in dag_tasks(wf):
        wf = run_pod(wf, task)
        outputs = {}
        if task == "run":
            outputs["metrics"] = json.dumps(metrics or {})
        if task == "upload":
            outputs["result"] = json.dumps(result or {})
        wf = finish_pod(wf, task, outputs=outputs)
    return wf


class ArgoStandIn:
    """Applies the pure transitions above to Workflows on the API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "workflows", name)

    def wait_for(self, namespace: str, name: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.get(namespace, name)
            except client.ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def update(self, namespace: str, name: str, change, *args, **kwargs) -> dict[str, Any]:
        """Read, apply `change(wf, ...)`, write with the read resourceVersion; retry conflicts."""
        for _ in range(20):
            wf = self.wait_for(namespace, name)
            new = change(wf, *args, **kwargs)
            try:
                return self.objects.replace_namespaced_custom_object(
                    "argoproj.io", "v1alpha1", namespace, "workflows", name, new)
            except client.ApiException as e:
                if e.status != 409:
                    raise
        raise RuntimeError(f"Workflow {namespace}/{name}: too many conflicts")
