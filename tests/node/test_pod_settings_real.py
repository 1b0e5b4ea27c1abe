"""Pod settings for real, on the real node: a memory-backed /dev/shm the run step fills past
Kubernetes' 64 MiB default (and the hint in status without it), a pull secret on every step
pod, and a dataset on a PersistentVolumeClaim read in place (pvc://), with no download.

Unit tests of the same: tests/unit/test_pod_settings.py."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from harness.tasks import example_with, step
from harness.workspace import Workspace, stored

pytestmark = pytest.mark.timeout(900)

IMAGE = "localhost/mltask-example-sklearn:0.1.0"
#: What a PyTorch DataLoader worker does with a batch: a file on /dev/shm, mapped and written
#: (tmpfs past its size answers a write to a mapped page with SIGBUS, as pytorch#16979 shows).
FILL_SHM = ("import mmap, os; n = 100 << 20; fd = os.open('/dev/shm/batch', os.O_RDWR | "
            "os.O_CREAT); os.ftruncate(fd, n); m = mmap.mmap(fd, n); "
            "m[:] = b'\\x01' * n; m.flush(); print('wrote', n >> 20, 'MiB to /dev/shm')")


def shm_task(shared_memory: str | None) -> dict[str, Any]:
    body = example_with("preprocessing")
    run = body["spec"]["steps"]["run"]
    run["command"] = ["sh", "-c", f'python3 -c "{FILL_SHM}" && exec python3 -m digits.preprocess']
    run["resources"] = {"requests": {"cpu": "500m", "memory": "256Mi"},
                        "limits": {"memory": "768Mi"}}   # /dev/shm counts against it
    runtime = body["spec"].setdefault("runtime", {})
    runtime["retryPolicy"] = {"limit": 0}
    if shared_memory:
        runtime["sharedMemorySize"] = shared_memory
    return body


def test_a_run_step_fills_dev_shm_past_64_mib_with_shared_memory_set(ws: Workspace) -> None:
    name = ws.tasks.create(shm_task("256Mi"))["metadata"]["name"]
    st = ws.tasks.wait_state(name, "completed", timeout=300)["status"]
    assert st["metrics"]["samples"] == 1797
    pod = ws.core.read_namespaced_pod(step(st, "run")["pod"], ws.namespace)
    shm = next(v for v in pod.spec.volumes if v.name == "dshm")
    assert (shm.empty_dir.medium, shm.empty_dir.size_limit) == ("Memory", "256Mi")


def test_without_shared_memory_the_run_step_dies_and_status_says_what_to_set(
        ws: Workspace) -> None:
    name = ws.tasks.create(shm_task(None))["metadata"]["name"]
    st = ws.tasks.wait_state(name, "failed", timeout=300)["status"]
    assert step(st, "run")["exitCode"] == 135, st
    assert "set spec.runtime.sharedMemorySize" in st["message"], st["message"]
    assert "64 MiB /dev/shm" in st["message"], st["message"]


def test_a_pull_secret_reaches_every_step_pod(ws: Workspace) -> None:
    auth = base64.b64encode(b"me:token").decode()
    config = {"auths": {"registry.example.com": {"auth": auth}}}
    ws.core.create_namespaced_secret(ws.namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}})
    body = example_with("preprocessing")
    body["spec"].setdefault("runtime", {})["imagePullSecrets"] = [{"name": "regcred"}]
    name = ws.tasks.create(body)["metadata"]["name"]
    st = ws.tasks.wait_state(name, "completed", timeout=300)["status"]
    for s in ("download", "run", "upload"):
        pod = ws.core.read_namespaced_pod(step(st, s)["pod"], ws.namespace)
        assert [r.name for r in pod.spec.image_pull_secrets or []] == ["regcred"], s


SEED = ("import os, pathlib; d = pathlib.Path('/data/digits/v1'); d.mkdir(parents=True); "
        "(d / 'rows.csv').write_text('a,b\\n1,2\\n3,4\\n'); print('seeded')")
#: The run step reads the dataset where MLTASK_INPUT_DATASET_DIR says and writes a copy.
READ_IN_PLACE = (
    "import json, os, pathlib, shutil; src = pathlib.Path(os.environ['MLTASK_INPUT_DATASET_DIR']);"
    " print('reading', src); rows = (src / 'rows.csv').read_text();"
    " out = pathlib.Path(os.environ['MLTASK_OUTPUT_DIR']); out.mkdir(parents=True, exist_ok=True);"
    " (out / 'rows.npz').write_text(rows);"
    " pathlib.Path(os.environ['MLTASK_METRICS_FILE']).write_text("
    "json.dumps({'rows': rows.count(chr(10)) - 1}))")


def seed_claim(ws: Workspace, claim: str) -> None:
    """A dataset already in the cluster: a claim a pod of its own filled."""
    ws.core.create_namespaced_persistent_volume_claim(ws.namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}})
    restricted = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    ws.core.create_namespaced_pod(ws.namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "seed"},
        "spec": {"restartPolicy": "Never",
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 65532,
                                     "fsGroup": 65532,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "seed", "image": IMAGE,
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["python3", "-c", SEED],
                                 "securityContext": restricted,
                                 "volumeMounts": [{"name": "d", "mountPath": "/data"}]}],
                 "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]}})
    deadline = time.monotonic() + 120
    while ws.core.read_namespaced_pod("seed", ws.namespace).status.phase != "Succeeded":
        assert time.monotonic() < deadline, "the seed pod did not succeed"
        time.sleep(0.5)
    ws.core.delete_namespaced_pod("seed", ws.namespace, grace_period_seconds=0)


def test_a_pvc_dataset_is_read_in_place_with_no_download(ws: Workspace) -> None:
    seed_claim(ws, "datasets")
    body = example_with("preprocessing", input__dataset={"uri": "pvc://datasets/digits/v1",
                                                         "kind": "project"})
    body["spec"]["steps"]["run"]["command"] = ["python3", "-c", READ_IN_PLACE]
    body["spec"]["output"]["uri"] = "s3://mltask-examples/datasets/in-place/rows.npz"
    name = ws.tasks.create(body)["metadata"]["name"]
    st = ws.tasks.wait_state(name, "completed", timeout=300)["status"]
    assert st["metrics"] == {"rows": 2}
    assert stored(ws.s3, st["outputs"]["uri"]) == b"a,b\n1,2\n3,4\n"
    # the download step fetched nothing: it said so, and the run step read the claim's path
    pods = {s: step(st, s)["pod"] for s in ("download", "run")}
    download_log = ws.core.read_namespaced_pod_log(pods["download"], ws.namespace,
                                                   container="main")
    assert "read in place by the run step, not downloaded" in download_log, download_log
    assert "downloaded" not in download_log.replace("not downloaded", ""), download_log
    run_log = ws.core.read_namespaced_pod_log(pods["run"], ws.namespace, container="main")
    assert "reading /mltask-volumes/dataset/digits/v1" in run_log, run_log
    run_pod = ws.core.read_namespaced_pod(pods["run"], ws.namespace)
    claim = next(v for v in run_pod.spec.volumes if v.name == "input-dataset")
    assert (claim.persistent_volume_claim.claim_name,
            claim.persistent_volume_claim.read_only) == ("datasets", True)
