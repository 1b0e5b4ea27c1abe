"""Smoke tests of the real-node harness: pods of the project image run on a real kubelet, logs
read back through the API server, limits hold, an advertised GPU schedules, pods reach the API
server and not an outside address (a listener the test makes: `harness.outside`), Argo's real
executor passes outputs, and non-root steps write to the working volume."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from harness import images, node
from harness.node import RealNodeCluster
from harness.outside import Outside

# the session fixture may build images (minutes when cold); each test itself takes seconds
pytestmark = pytest.mark.timeout(1800)

IMAGE = images.OPERATOR_TAG
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60,
             interval: float = 0.2) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A one-container pod of the project image running `python3 -c script`."""
    container = {"name": "main", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                 "command": ["python3", "-c", script], **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": [container], **spec}}


def run_pod(core: client.CoreV1Api, namespace: str, body: dict[str, Any],
            timeout: float = 60) -> tuple[client.V1Pod, float]:
    """Create the pod and wait until it ends; returns it and the seconds from create to end."""
    t0 = time.monotonic()
    core.create_namespaced_pod(namespace, body)

    def ended() -> client.V1Pod | None:
        p = core.read_namespaced_pod(body["metadata"]["name"], namespace)
        return p if p.status.phase in ("Succeeded", "Failed") else None

    ended_pod = wait_for(f"pod {namespace}/{body['metadata']['name']} to end", ended, timeout)
    return ended_pod, time.monotonic() - t0


def test_python_pod_runs_and_its_log_reads_back(node_api: client.ApiClient, node_namespace: str,
                                                kubectl: Kubectl) -> None:
    core = client.CoreV1Api(node_api)
    script = ("import os, shutil, sys; print('hello from', sys.version.split()[0], 'uid', "
              "os.getuid()); print(*(shutil.which(s) for s in ('mltask-operator', "
              "'kubectl-mltask', 'mltask-transfer')))")
    ended, seconds = run_pod(core, node_namespace, pod("hello", script))
    assert ended.status.phase == "Succeeded", ended.status
    assert ended.spec.node_name == node.NODE_NAME
    out = kubectl("-n", node_namespace, "logs", "hello").stdout
    assert "hello from 3.11" in out and "uid 65532" in out, out
    # the image's console scripts are on PATH, from the venv
    assert "/opt/mltask/bin/mltask-operator /opt/mltask/bin/kubectl-mltask " \
           "/opt/mltask/bin/mltask-transfer" in out, out
    print(f"python pod: apply -> Succeeded in {seconds:.1f}s")


def test_logs_follow_ends_with_the_container(node_api: client.ApiClient, node_namespace: str,
                                             kubectl: Kubectl) -> None:
    core = client.CoreV1Api(node_api)
    core.create_namespaced_pod(node_namespace, pod(
        "follow", "import time; print('start', flush=True); time.sleep(3); print('end')"))
    wait_for("pod follow Running", lambda: core.read_namespaced_pod(
        "follow", node_namespace).status.phase in ("Running", "Succeeded"), 60)
    t0 = time.monotonic()
    res = kubectl("-n", node_namespace, "logs", "-f", "follow", timeout=30)
    assert res.stdout.split() == ["start", "end"], res.stdout
    assert time.monotonic() - t0 < 15


def test_memory_limit_is_enforced(node_api: client.ApiClient, node_namespace: str) -> None:
    core = client.CoreV1Api(node_api)
    body = pod("hog", "b = bytearray(512 * 1024 * 1024); print('allocated', len(b))",
               container={"resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}})
    ended, _ = run_pod(core, node_namespace, body)
    state = ended.status.container_statuses[0].state.terminated
    assert ended.status.phase == "Failed" and state.reason == "OOMKilled", ended.status


def test_pod_requesting_a_gpu_runs_on_the_node(real_node: RealNodeCluster,
                                               node_api: client.ApiClient,
                                               node_namespace: str) -> None:
    core = client.CoreV1Api(node_api)

    def status_refreshed() -> bool:  # the kubelet has written its status since the patch
        n = core.read_node(node.NODE_NAME)
        ready = next(c for c in n.status.conditions if c.type == "Ready")
        return ready.last_heartbeat_time.timestamp() > real_node.node.gpu_advertised_at + 1

    wait_for("a node status update by the kubelet", status_refreshed, 30, 1)
    n = core.read_node(node.NODE_NAME)
    assert n.status.capacity[node.GPU_RESOURCE] == node.GPU_COUNT
    assert n.status.allocatable[node.GPU_RESOURCE] == node.GPU_COUNT
    assert n.metadata.labels["nvidia.com/gpu.present"] == "true"
    body = pod("gpu", "print('no GPU here, and scheduled anyway')",
               container={"resources": {"limits": {node.GPU_RESOURCE: "1"}}})
    ended, _ = run_pod(core, node_namespace, body)
    assert ended.status.phase == "Succeeded", ended.status
    assert ended.spec.node_name == node.NODE_NAME


NETWORK_SCRIPT = """
import json, socket, ssl, sys, time, urllib.request
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
req = urllib.request.Request('https://kubernetes.default.svc/version'.replace(
    'kubernetes.default.svc', '10.0.0.1'),
    headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})
print('api', json.load(urllib.request.urlopen(req, context=ctx, timeout=10))['gitVersion'])
t0 = time.monotonic()
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print('outside reachable')
except OSError as e:
    print('outside unreachable', type(e).__name__, round(time.monotonic() - t0, 2))
"""


@pytest.fixture
def outside() -> Iterator[Outside]:
    """An outside address made here: a listener in a network namespace of its own, off the
    node's bridge, that the host reaches (never a public address)."""
    with Outside() as made:
        yield made


def test_pod_reaches_the_api_server_and_nothing_outside(node_api: client.ApiClient,
                                                        node_namespace: str,
                                                        kubectl: Kubectl,
                                                        outside: Outside) -> None:
    assert outside.reachable_from_host(), "the host reaches the outside listener"
    core = client.CoreV1Api(node_api)
    ended, _ = run_pod(core, node_namespace, pod(
        "net", NETWORK_SCRIPT, container={"args": [outside.address, str(outside.port)]}))
    out = kubectl("-n", node_namespace, "logs", "net").stdout
    assert ended.status.phase == "Succeeded", out
    assert "api v1.34.4" in out, out
    line = next(line for line in out.splitlines() if line.startswith("outside"))
    assert line.startswith("outside unreachable"), out
    assert float(line.split()[-1]) < 1, f"should fail fast (no route): {line}"
    pod_ip = ended.status.pod_ip
    assert pod_ip not in outside.accepted(), f"the listener saw the pod: {outside.accepted()}"


def workflow(name: str, claim: str, exit_code: int = 0) -> dict[str, Any]:
    """Two steps of the project image sharing a PVC: the first writes a file and an output
    parameter, the second reads both (or exits with `exit_code`)."""
    first = ("import pathlib; pathlib.Path('/work/data.txt').write_text('from step one'); "
             "pathlib.Path('/tmp/msg').write_text('hello-param')")
    second = ("import pathlib, sys; print('param', sys.argv[1]); "
              "print('file', pathlib.Path('/work/data.txt').read_text()); "
              f"sys.exit({exit_code})")
    mount = [{"name": "work", "mountPath": "/work"}]
    return {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "main",
            "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
            "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": claim}}],
            "templates": [
                {"name": "main", "steps": [
                    [{"name": "one", "template": "one"}],
                    [{"name": "two", "template": "two", "arguments": {"parameters": [
                        {"name": "msg", "value": "{{steps.one.outputs.parameters.msg}}"}]}}],
                ]},
                {"name": "one", "container": {
                    "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", first], "volumeMounts": mount},
                 "outputs": {"parameters": [{"name": "msg", "valueFrom": {"path": "/tmp/msg"}}]}},
                {"name": "two", "inputs": {"parameters": [{"name": "msg"}]}, "container": {
                    "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", second, "{{inputs.parameters.msg}}"],
                    "volumeMounts": mount}},
            ],
        },
    }


def claim(name: str) -> dict[str, Any]:
    """A working-volume claim of the default StorageClass, as the operator makes one."""
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}


def run_workflow(node_api: client.ApiClient, namespace: str,
                 body: dict[str, Any]) -> tuple[dict[str, Any], float]:
    objects = client.CustomObjectsApi(node_api)
    t0 = time.monotonic()
    objects.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace, "workflows",
                                            body)

    def done() -> dict[str, Any] | None:
        wf = objects.get_namespaced_custom_object("argoproj.io", "v1alpha1", namespace,
                                                  "workflows", body["metadata"]["name"])
        phase = (wf.get("status") or {}).get("phase")
        return wf if phase in ("Succeeded", "Failed", "Error") else None

    wf = wait_for(f"Workflow {namespace}/{body['metadata']['name']}", done, 120, 0.5)
    return wf, time.monotonic() - t0


def test_two_step_workflow_passes_outputs_through_the_real_executor(
        node_api: client.ApiClient, node_namespace: str, kubectl: Kubectl) -> None:
    client.CoreV1Api(node_api).create_namespaced_persistent_volume_claim(
        node_namespace, claim("work"))
    wf, seconds = run_workflow(node_api, node_namespace, workflow("two-steps", "work"))
    nodes = wf["status"].get("nodes", {}).values()
    assert wf["status"]["phase"] == "Succeeded", json.dumps(wf["status"], indent=1)[:3000]
    one = next(n for n in nodes if n.get("displayName") == "one")
    assert one["outputs"]["parameters"][0]["value"] == "hello-param"
    two = next(n for n in nodes if n.get("displayName") == "two")
    pods = client.CoreV1Api(node_api).list_namespaced_pod(
        node_namespace, label_selector="workflows.argoproj.io/workflow=two-steps").items
    pod_two = next(p for p in pods
                   if p.metadata.annotations.get("workflows.argoproj.io/node-id") == two["id"])
    out = kubectl("-n", node_namespace, "logs", pod_two.metadata.name, "-c", "main").stdout
    assert "param hello-param" in out and "file from step one" in out, out
    print(f"two-step Workflow: create -> Succeeded in {seconds:.1f}s")


def test_failing_step_fails_the_workflow_with_its_exit_code(
        node_api: client.ApiClient, node_namespace: str) -> None:
    client.CoreV1Api(node_api).create_namespaced_persistent_volume_claim(
        node_namespace, claim("work"))
    wf, _ = run_workflow(node_api, node_namespace, workflow("fails", "work", exit_code=3))
    assert wf["status"]["phase"] == "Failed", wf["status"]
    two = next(n for n in wf["status"]["nodes"].values() if n.get("displayName") == "two")
    assert "exit code 3" in two.get("message", ""), two


@pytest.mark.parametrize("user", [65532, 0], ids=["non-root-with-fsGroup", "root"])
def test_pod_writes_to_a_working_volume(node_api: client.ApiClient, node_namespace: str,
                                        kubectl: Kubectl, user: int) -> None:
    core = client.CoreV1Api(node_api)
    core.create_namespaced_persistent_volume_claim(node_namespace, claim("work"))
    script = ("import os, pathlib; p = pathlib.Path('/work/out.txt'); p.write_text('ok'); "
              "st = os.stat('/work'); print('wrote', p.read_text(), 'dir gid', st.st_gid, "
              "'uid', os.getuid())")
    security = {"runAsUser": user, "runAsGroup": user, "fsGroup": 65532}
    body = pod("writer", script, securityContext=security,
               volumes=[{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}],
               container={"volumeMounts": [{"name": "work", "mountPath": "/work"}]})
    ended, _ = run_pod(core, node_namespace, body)
    out = kubectl("-n", node_namespace, "logs", "writer").stdout
    assert ended.status.phase == "Succeeded", out
    assert f"wrote ok dir gid 65532 uid {user}" in out, out
    pvc = core.read_namespaced_persistent_volume_claim("work", node_namespace)
    pv = core.read_persistent_volume(pvc.spec.volume_name)
    assert pv.spec.local.path.startswith(str(node.VOLUMES_DIR)), pv.spec
    assert pvc.spec.storage_class_name == node.STORAGE_CLASS
