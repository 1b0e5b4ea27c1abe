"""The install paths for real: the operator image built from the Dockerfile here, installed by
Helm and by each kustomize overlay into a namespace that enforces Pod Security `restricted`,
running as pods on the real node with the chart's ServiceAccount and RBAC — probes, the Lease,
the metrics Service, a leader handing over, an upgrade rolling the pods, an uninstall leaving
every task deletable. The commands are the README's ("Install")."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness import images, node
from harness.chart import CHART, RELEASE, RELEASE_NS
from harness.controlplane import BIN_DIR, REPO
from harness.node import RealNodeCluster
from harness.pipelines import pipeline_example
from harness.tasks import example_with
from harness.workspace import RESTRICTED, Workspace, prepare_namespace

pytestmark = pytest.mark.timeout(1800)

LEASE = RELEASE  # the chart names the Lease after the release's full name
SELECTOR = f"app.kubernetes.io/name={RELEASE},app.kubernetes.io/instance={RELEASE}"
UPGRADE_TAG = f"{images.PROJECT_VERSION}-upgrade"
OVERLAYS = REPO / "manifests" / "overlays"
#: The namespace the single-namespace overlay watches.
SINGLE_NAMESPACE = "ml"
#: Figures measured here, for the README and the issue's note.
FIGURES: dict[str, Any] = {}


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def helm(cluster: RealNodeCluster, *args: str, timeout: float = 300) -> str:
    res = subprocess.run([str(BIN_DIR / "helm"), f"--kubeconfig={cluster.cp.kubeconfig}",
                          *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res.stdout


def operator_pods(core: client.CoreV1Api, selector: str = SELECTOR) -> list[client.V1Pod]:
    return [p for p in core.list_namespaced_pod(RELEASE_NS, label_selector=selector).items
            if p.metadata.deletion_timestamp is None]


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_pods_ready(core: client.CoreV1Api, count: int, timeout: float = 180,
                    selector: str = SELECTOR, image: str | None = None) -> list[client.V1Pod]:
    deadline = time.monotonic() + timeout
    pods: list[client.V1Pod] = []
    while time.monotonic() < deadline:
        pods = operator_pods(core, selector)
        if len(pods) == count and all(ready(p) for p in pods) and (
                image is None or all(p.spec.containers[0].image == image for p in pods)):
            return pods
        time.sleep(0.5)
    raise AssertionError(f"wanted {count} ready operator pods; have "
                         f"{[(p.metadata.name, p.status.phase, ready(p)) for p in pods]}")


def lease_holder(api: client.ApiClient) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, RELEASE_NS)
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise
    return lease.spec.holder_identity


def wait_holder(api: client.ApiClient, among: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    holder = None
    while time.monotonic() < deadline:
        holder = lease_holder(api)
        if holder in among:
            return holder
        time.sleep(0.2)
    raise AssertionError(f"Lease {RELEASE_NS}/{LEASE} held by {holder!r}, not one of {among}"
                         f"\n{_election_report(api, among | {holder} if holder else among)}")


def _election_report(api: client.ApiClient, pods: set[str]) -> str:
    """What a failed handover leaves to read: the Lease, and each pod's state and log tail."""
    lines = []
    try:
        spec = client.CoordinationV1Api(api).read_namespaced_lease(LEASE, RELEASE_NS).spec
        lines.append(f"Lease: holder {spec.holder_identity} renewed {spec.renew_time} "
                     f"duration {spec.lease_duration_seconds}s transitions "
                     f"{spec.lease_transitions}; now {time.strftime('%H:%M:%S', time.gmtime())}")
    except client.ApiException as e:
        lines.append(f"Lease: HTTP {e.status}")
    core = client.CoreV1Api(api)
    for name in sorted(pods):
        try:
            pod = core.read_namespaced_pod(name, RELEASE_NS)
            state = [c.state.to_dict() for c in pod.status.container_statuses or []]
            log = core.read_namespaced_pod_log(name, RELEASE_NS, tail_lines=15)
        except client.ApiException as e:
            lines.append(f"pod {name}: HTTP {e.status}")
            continue
        lines.append(f"pod {name}: deleted {pod.metadata.deletion_timestamp}, {state}\n{log}")
    return "\n".join(lines)


def memory_at_rest(cluster: RealNodeCluster, pod: str) -> int:
    """The operator container's working set, as the kubelet's summary API reports it."""
    raw = cluster.cp.kubectl("get", "--raw",
                             f"/api/v1/nodes/{node.NODE_NAME}/proxy/stats/summary").stdout
    for p in json.loads(raw)["pods"]:
        if p["podRef"]["name"] == pod:
            (c,) = [c for c in p["containers"] if c["name"] == "operator"]
            return int(c["memory"]["workingSetBytes"])
    raise AssertionError(f"no stats for pod {pod}")


def start_to_ready(pod: client.V1Pod) -> float:
    created = pod.metadata.creation_timestamp
    ready_at = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    return (ready_at - created).total_seconds()


def workflows(api: client.ApiClient, namespace: str) -> list[str]:
    items = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows")["items"]
    return sorted(i["metadata"]["name"] for i in items)


def record(name: str, value: Any) -> None:
    FIGURES[name] = value
    print(f"[figure] {name}: {value}")


# ------------------------------------------------------------------------------------ helm


@pytest.fixture(scope="module")
def release(real_node: RealNodeCluster, node_api: client.ApiClient,
            kubectl_module: Kubectl) -> Iterator[None]:
    """The README's Helm install: the image imported into the node (what `make image` builds),
    the release namespace labelled to enforce `restricted`, `helm install --wait`. Whatever a
    test leaves, the release and the overlays' operators are gone at the end."""
    kubectl_module("create", "namespace", RELEASE_NS)
    kubectl_module("label", "namespace", RELEASE_NS,
                   "pod-security.kubernetes.io/enforce=restricted")
    t0 = time.monotonic()
    helm(real_node, "install", RELEASE, str(CHART), "-n", RELEASE_NS, "--wait",
         "--timeout", "5m")
    record("helm install --wait (s)", round(time.monotonic() - t0, 1))
    try:
        yield
    finally:
        subprocess.run([str(BIN_DIR / "helm"), f"--kubeconfig={real_node.cp.kubeconfig}",
                        "uninstall", RELEASE, "-n", RELEASE_NS, "--wait"],
                       capture_output=True, timeout=300)
        for overlay in ("cluster-wide", "single-namespace"):
            delete_overlay(kubectl_module, overlay, check=False)
        kubectl_module("delete", "namespace", RELEASE_NS, "--wait=false", check=False)
        kubectl_module("delete", "namespace", SINGLE_NAMESPACE, "--wait=false", check=False)


@pytest.fixture(scope="module")
def kubectl_module(real_node: RealNodeCluster) -> Kubectl:
    def run(*args: str, timeout: float = 120, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(real_node.cp.bin_dir / "kubectl"),
               f"--kubeconfig={real_node.cp.kubeconfig}", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             input=stdin)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
        return res

    return run


def test_helm_install_runs_two_replicas_under_restricted(
        real_node: RealNodeCluster, node_api: client.ApiClient, release: None) -> None:
    core = client.CoreV1Api(node_api)
    ns = core.read_namespace(RELEASE_NS)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = wait_pods_ready(core, 2)
    image = f"{images.OPERATOR_TAG}"
    for pod in pods:
        c = pod.spec.containers[0]
        assert c.image == image, "the chart's default is the image `make image` builds"
        assert c.security_context.read_only_root_filesystem is True
        assert pod.spec.security_context.run_as_user == 65532
        assert pod.spec.service_account_name == RELEASE
        assert pod.spec.node_name == node.NODE_NAME
        status = pod.status.container_statuses[0]
        assert status.ready and status.restart_count == 0, status
    holder = wait_holder(node_api, {p.metadata.name for p in pods})
    record("operator pod start to Ready (s)", sorted(start_to_ready(p) for p in pods))

    # the metrics endpoint through its Service: the ClusterIP, routed by kube-proxy
    svc = core.read_namespaced_service(f"{RELEASE}-metrics", RELEASE_NS)
    url = f"http://{svc.spec.cluster_ip}:{svc.spec.ports[0].port}/metrics"
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(seen) < 2:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - the Service address
            text = r.read().decode()
        assert "mltask_operator_leader" in text, text[:500]
        line = next(ln for ln in text.splitlines() if ln.startswith("mltask_operator_leader"))
        seen.add(line.split()[-1])
    assert seen == {"1.0", "0.0"}, f"both replicas answer through the Service: {seen}"
    record("leader", holder)


def test_the_pipeline_completes_through_a_leader_handover(
        real_node: RealNodeCluster, node_api: client.ApiClient, release: None,
        restricted_namespace: Workspace) -> None:
    """The three-stage pipeline in a namespace enforcing `restricted` (the step pods pass it),
    run by the in-cluster operator; the leader pod is deleted while training runs: the standby
    takes the Lease and the pipeline completes with one Workflow per task."""
    ws = restricted_namespace
    core = client.CoreV1Api(node_api)
    leader = wait_holder(node_api, {p.metadata.name for p in wait_pods_ready(core, 2)})
    body = pipeline_example("digits")
    name = body["metadata"]["name"]
    ws.pipelines.create(body)
    train = ws.pipelines.wait_child(f"{name}-train", timeout=240)["metadata"]["name"]
    ws.tasks.wait(train, lambda s: s.get("executeStep") in ("run_task", "upload", "done"),
                  "training to run", timeout=240)
    standby = {p.metadata.name for p in operator_pods(core)} - {leader}
    t0 = time.monotonic()
    core.delete_namespaced_pod(leader, RELEASE_NS)
    assert wait_holder(node_api, standby, timeout=60) in standby
    record("handover after deleting the leader pod (s)", round(time.monotonic() - t0, 1))

    st = ws.pipelines.wait(name, lambda s: s.get("status") in ("completed", "failed"),
                           "the pipeline to end", timeout=600)["status"]
    assert st["status"] == "completed", json.dumps(st, indent=1)
    assert workflows(node_api, ws.namespace) == sorted(
        f"{name}-{t}-1" for t in ("preprocess", "train", "optimize")), "no duplicate Workflow"
    wait_pods_ready(core, 2)  # the Deployment replaced the deleted pod


def test_at_rest_the_operator_holds_little_memory(
        real_node: RealNodeCluster, node_api: client.ApiClient, release: None) -> None:
    core = client.CoreV1Api(node_api)
    pods = wait_pods_ready(core, 2)
    holder = wait_holder(node_api, {p.metadata.name for p in pods})
    time.sleep(5)
    used = {p.metadata.name: memory_at_rest(real_node, p.metadata.name) for p in pods}
    record("operator memory at rest (MiB, leader)", round(used[holder] / 2**20, 1))
    record("operator memory at rest (MiB, standby)",
           [round(v / 2**20, 1) for k, v in used.items() if k != holder])
    limit = 512 * 2**20  # the chart's default memory limit
    assert all(0 < v < limit for v in used.values()), used


def test_helm_upgrade_to_another_tag_rolls_the_pods_with_no_duplicate_workflow(
        real_node: RealNodeCluster, node_api: client.ApiClient, release: None,
        restricted_namespace: Workspace) -> None:
    ws = restricted_namespace
    core = client.CoreV1Api(node_api)
    before = {p.metadata.name for p in wait_pods_ready(core, 2)}
    # another tag of the image, as a release would push one
    images.ctr(node.CONTAINERD_SOCKET, "images", "tag", "--force", images.OPERATOR_TAG,
               f"localhost/mltask-operator:{UPGRADE_TAG}")
    names = []
    for i in range(3):
        body = example_with("preprocessing",
                            output__uri=f"s3://mltask-examples/upgrade/{ws.namespace}/{i}/")
        body["metadata"]["name"] = f"prep-{i}"
        names.append(ws.tasks.create(body)["metadata"]["name"])
    ws.tasks.wait(names[0], lambda s: s.get("executeStep") in ("download", "run_task"),
                  "a task in flight", timeout=120)
    t0 = time.monotonic()
    helm(real_node, "upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, "--reuse-values",
         "--set", f"image.tag={UPGRADE_TAG}", "--wait", "--timeout", "5m")
    after = wait_pods_ready(core, 2, image=f"localhost/mltask-operator:{UPGRADE_TAG}")
    record("helm upgrade --wait (s)", round(time.monotonic() - t0, 1))
    assert not before & {p.metadata.name for p in after}, "every pod was replaced"
    wait_holder(node_api, {p.metadata.name for p in after})
    for n in names:
        st = ws.tasks.wait(n, lambda s: s.get("status") in ("completed", "failed"),
                           f"{n} to end", timeout=300)["status"]
        assert st["status"] == "completed", json.dumps(st, indent=1)
    assert workflows(node_api, ws.namespace) == sorted(f"{n}-1" for n in names)


def test_helm_uninstall_leaves_every_task_and_pipeline_deletable(
        real_node: RealNodeCluster, node_api: client.ApiClient, release: None,
        restricted_namespace: Workspace, kubectl_module: Kubectl) -> None:
    ws = restricted_namespace
    ws.tasks.create(example_with("preprocessing"))
    ws.pipelines.create(pipeline_example("digits"))
    ws.pipelines.wait_child("digits-preprocess", timeout=60)
    helm(real_node, "uninstall", RELEASE, "-n", RELEASE_NS, "--wait")
    assert operator_pods(client.CoreV1Api(node_api)) == []
    kubectl_module("delete", "mltasks,pipelines", "--all", "-n", ws.namespace,
                   "--timeout=60s")
    left = kubectl_module("get", "mltasks,pipelines", "-n", ws.namespace, "-o", "name").stdout
    assert left.strip() == "", left


# ------------------------------------------------------------------------------- kustomize


def overlay_objects(kubectl: Kubectl, overlay: str) -> list[dict[str, Any]]:
    out = kubectl("kustomize", str(OVERLAYS / overlay)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def delete_overlay(kubectl: Kubectl, overlay: str, check: bool = True) -> None:
    """Remove what an overlay runs (the operator, its RBAC), leaving the CRDs (and every task
    with them) and the namespace, as `kubectl delete -k` would not."""
    keep = {"CustomResourceDefinition", "Namespace"}
    docs = [d for d in overlay_objects(kubectl, overlay) if d["kind"] not in keep]
    kubectl("delete", "--ignore-not-found", "--wait", "-f", "-",
            stdin=yaml.safe_dump_all(docs), check=check, timeout=180)


@pytest.mark.parametrize("overlay", ["cluster-wide", "single-namespace"])
def test_each_kustomize_overlay_runs_an_operator_that_completes_a_task(
        overlay: str, real_node: RealNodeCluster, node_api: client.ApiClient, release: None,
        kubectl_module: Kubectl, restricted_namespace: Workspace) -> None:
    core = client.CoreV1Api(node_api)
    assert operator_pods(core) == [], "the Helm release is gone (uninstalled above)"
    if overlay == "single-namespace":
        prepare_namespace(node_api, SINGLE_NAMESPACE, real_node.s3, labels=RESTRICTED)
        ws = Workspace(node_api, SINGLE_NAMESPACE, real_node.s3, real_node.cp.kubeconfig,
                       node.NODE_NAME)
    else:
        ws = restricted_namespace
    kubectl_module("apply", "--server-side", "-k", str(OVERLAYS / overlay))
    try:
        kubectl_module("-n", RELEASE_NS, "rollout", "status", "deployment/mltask-operator",
                       "--timeout=180s", timeout=200)
        pods = wait_pods_ready(core, 2, selector="app.kubernetes.io/name=mltask-operator")
        wait_holder(node_api, {p.metadata.name for p in pods})
        name = ws.tasks.create(example_with("preprocessing"))["metadata"]["name"]
        st = ws.tasks.wait(name, lambda s: s.get("status") in ("completed", "failed"),
                           f"{name} to end", timeout=300)["status"]
        assert st["status"] == "completed", json.dumps(st, indent=1)
    finally:
        delete_overlay(kubectl_module, overlay)
        if overlay == "single-namespace":
            core.delete_namespace(SINGLE_NAMESPACE, propagation_policy="Background")


def test_figures_are_written(real_node: RealNodeCluster) -> None:
    """Keep what was measured beside the cluster's logs (`make node-test` prints it too)."""
    FIGURES["measured"] = datetime.datetime.now(datetime.UTC).isoformat()
    path = Path(real_node.workdir) / "install-figures.json"
    path.write_text(json.dumps(FIGURES, indent=1))
    assert "operator pod start to Ready (s)" in FIGURES
