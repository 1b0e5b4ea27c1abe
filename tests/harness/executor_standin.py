"""STAND-IN FOR ARGO'S EXECUTOR (the `wait` container) — end-to-end tests and the demo only.

kwok runs no containers, so nothing writes the files of the step-image contract and nothing
reports them. This process does what Argo's wait container does, for every pod of a Workflow:

- when the pod appears, it creates the pod's WorkflowTaskResult (named after the pod's
  `workflows.argoproj.io/node-id` annotation, labelled with the workflow and
  `workflows.argoproj.io/report-outputs-completed=false`, owned by the Workflow);
- when the pod finishes, it fills in the output parameters the template declares and the exit
  code, and sets `report-outputs-completed=true`, which Argo's controller waits for.

The output values are what the contract's step images would have written: the run step's
metrics file comes from the step's env `E2E_METRICS` (JSON); the upload step's result file is
`{uri, size, sha256}` of `$MLTASK_OUTPUT_URI/$MLTASK_OUTPUT_NAME.$MLTASK_OUTPUT_FILE_EXTENSION`.

No container prints a log either. For each pod it also writes the log its main container would
have printed (the step's env `E2E_LOG`, or a line naming the step and pod) as a CRI log file in
`--logs-dir`, and registers the file with kwok (a `Logs` object named after the pod); kwok then
serves it on the kubelet API, so `kubectl logs` and `kubectl mltask logs` read it through the
API server as they would on a real node.

    python -m harness.executor_standin --kubeconfig FILE --logs-dir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

log = logging.getLogger("executor-standin")

WF_LABEL = "workflows.argoproj.io/workflow"
NODE_ID = "workflows.argoproj.io/node-id"
COMPLETED = "workflows.argoproj.io/report-outputs-completed"


def container_env(pod: dict[str, Any], name: str = "main") -> dict[str, str]:
    for c in pod["spec"].get("containers", []):
        if c["name"] == name:
            return {e["name"]: e.get("value", "") for e in c.get("env") or [] if "name" in e}
    return {}


def template_of(pod: dict[str, Any]) -> dict[str, Any]:
    """Argo passes the step's template to its init and wait containers as $ARGO_TEMPLATE."""
    for c in pod["spec"].get("initContainers", []) + pod["spec"].get("containers", []):
        for e in c.get("env") or []:
            if e.get("name") == "ARGO_TEMPLATE" and e.get("value"):
                return json.loads(e["value"])
    return {}


def exit_code(pod: dict[str, Any]) -> int | None:
    for s in (pod.get("status") or {}).get("containerStatuses") or []:
        if s["name"] == "main":
            term = (s.get("state") or {}).get("terminated")
            if term:
                return int(term.get("exitCode", 0))
    return None


def step_outputs(pod: dict[str, Any]) -> dict[str, Any]:
    """The outputs the contract's step images would have written, for a finished pod."""
    outputs: dict[str, Any] = {}
    code = exit_code(pod)
    if code is not None:
        outputs["exitCode"] = str(code)
    if pod["status"].get("phase") != "Succeeded":
        return outputs
    env = container_env(pod)
    params = []
    for p in (template_of(pod).get("outputs") or {}).get("parameters") or []:
        if p["name"] == "metrics":
            value = env.get("E2E_METRICS") or (p.get("valueFrom") or {}).get("default", "{}")
        elif p["name"] == "result":
            uri = (f"{env.get('MLTASK_OUTPUT_URI', 's3://bucket/').rstrip('/')}/"
                   f"{env.get('MLTASK_OUTPUT_NAME', 'output')}."
                   f"{env.get('MLTASK_OUTPUT_FILE_EXTENSION', 'bin')}")
            digest = hashlib.sha256(uri.encode()).hexdigest()
            value = json.dumps({"uri": uri, "size": int(digest[:6], 16), "sha256": digest})
        else:
            value = (p.get("valueFrom") or {}).get("default", "")
        params.append({"name": p["name"], "value": value})
    if params:
        outputs["parameters"] = params
    return outputs


def cri_log(text: str, when: datetime) -> str:
    """`text` as a container runtime writes it: one `<time> stdout F <line>` per line."""
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "".join(f"{stamp} stdout F {line}\n" for line in text.splitlines())


def main_log(pod: dict[str, Any]) -> str:
    """What the pod's main container prints: the step's env E2E_LOG, or a line naming it."""
    env = container_env(pod)
    step = template_of(pod).get("name", "?")
    return env.get("E2E_LOG") or (f"[{step}] stand-in log of pod {pod['metadata']['name']} "
                                   f"of mltask {env.get('MLTASK_NAME', '?')}")


class ExecutorStandIn:
    def __init__(self, api: client.ApiClient, logs_dir: Path) -> None:
        self.api = api
        self.logs_dir = logs_dir
        self.core = client.CoreV1Api(api)
        self.objects = client.CustomObjectsApi(api)
        self.started: set[str] = set()
        self.reported: set[str] = set()
        self.stop = threading.Event()

    def _owner(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Workflow":
                return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                        "name": ref["name"], "uid": ref["uid"]}
        return None

    def handle(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        node_id = (meta.get("annotations") or {}).get(NODE_ID)
        owner = self._owner(pod)
        if not node_id or owner is None:
            return
        ns = meta["namespace"]
        key = f"{ns}/{node_id}"
        if key not in self.started:
            body = {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "WorkflowTaskResult",
                "metadata": {"name": node_id, "namespace": ns, "ownerReferences": [owner],
                             "labels": {WF_LABEL: meta["labels"][WF_LABEL], COMPLETED: "false"}},
            }
            try:
                self.objects.create_namespaced_custom_object(
                    "argoproj.io", "v1alpha1", ns, "workflowtaskresults", body)
            except client.ApiException as e:
                if e.status != 409:
                    raise
            self._write_log(pod)
            self.started.add(key)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and key not in self.reported:
            patch = {"metadata": {"labels": {COMPLETED: "true"}}, "outputs": step_outputs(pod)}
            self.objects.patch_namespaced_custom_object(
                "argoproj.io", "v1alpha1", ns, "workflowtaskresults", node_id, patch)
            self.reported.add(key)
            log.info("Reported outputs of pod %s/%s (node %s, %s)", ns, meta["name"], node_id,
                     phase)

    def _write_log(self, pod: dict[str, Any]) -> None:
        """The main container's log, served by kwok for `kubectl logs`."""
        meta = pod["metadata"]
        path = self.logs_dir / f"{meta['namespace']}_{meta['name']}_main.log"
        path.write_text(cri_log(main_log(pod), datetime.now(UTC)))
        body = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"],
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod",
                                              "name": meta["name"], "uid": meta["uid"]}]},
            "spec": {"logs": [{"containers": ["main"], "logsFile": str(path)}]},
        }
        try:
            self.objects.create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1",
                                                         meta["namespace"], "logs", body)
        except client.ApiException as e:
            if e.status != 409:
                raise

    def run(self) -> None:
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(self.core.list_pod_for_all_namespaces,
                                      label_selector=WF_LABEL, timeout_seconds=30):
                    if self.stop.is_set():
                        w.stop()
                        break
                    obj = event["raw_object"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        try:
                            self.handle(obj)
                        except Exception:
                            log.exception("Failed to report pod %s", obj["metadata"]["name"])
            except Exception:
                log.exception("Pod watch failed; restarting")
                self.stop.wait(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.executor_standin")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--logs-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    args.logs_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    api = config.new_client_from_config(config_file=args.kubeconfig)
    ExecutorStandIn(api, args.logs_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
