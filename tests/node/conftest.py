"""Fixtures for tests on the real node: the control plane on the node's bridge, containerd, a
real kubelet and kube-proxy, kube-scheduler, Argo's real workflow-controller and the images built
here (`harness.node.RealNodeCluster`), once a session. Needs root; fails, never skips."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from harness import images, node
from harness.controlplane import REPO, ControlPlaneError
from harness.images import ImageError
from harness.node import RealNodeCluster
from harness.operator_proc import OperatorProcess
from harness.workspace import RESTRICTED, Workspace, executor_namespace, prepare_namespace


@pytest.fixture(scope="session")
def real_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNodeCluster]:
    """Start the cluster with a real node (building and importing images as needed), install
    the repo's CRDs; stop everything and restore the host at the end, even on failure."""
    workdir = Path(os.environ.get("MLTASK_NODE_CLUSTER_DIR") or tmp_path_factory.mktemp("node"))
    cluster = RealNodeCluster(workdir)
    error = None
    try:
        cluster.start()
    except (ControlPlaneError, ImageError) as e:
        error = str(e)
    if error is not None:
        pytest.fail(f"Could not start the cluster with a real node: {error}", pytrace=False)
    try:
        files = sorted((REPO / "crds").glob("*.yaml"))
        cluster.cp.kubectl("apply", "--server-side", *[a for f in files for a in ("-f", str(f))])
        cluster.cp.wait_established(
            [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files])
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def node_api(real_node: RealNodeCluster) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(real_node.cp.kubeconfig))


@pytest.fixture
def node_namespace(node_api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace whose `default` ServiceAccount may report Argo step results (the
    `executor` Role every Argo install asks for); deleted afterwards."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    executor_namespace(node_api, name)
    yield name
    client.CoreV1Api(node_api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def kubectl(real_node: RealNodeCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl as admin against the real-node cluster."""

    def run(*args: str, timeout: float = 60, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        cmd = [str(real_node.cp.bin_dir / "kubectl"), f"--kubeconfig={real_node.cp.kubeconfig}",
               *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {res.stderr}")
        return res

    return run



@pytest.fixture(scope="module")
def node_operator(real_node: RealNodeCluster) -> Iterator[OperatorProcess]:
    """The operator, out of cluster, whose default transfer steps use the image built here;
    per module, so that the install tests' in-cluster operator never runs beside it."""
    proc = OperatorProcess(real_node.cp.kubeconfig, real_node.workdir / "operator.log", env={
        "MLTASK_TRANSFER_IMAGE": images.OPERATOR_TAG,
        "MLTASK_TRANSFER_IMAGE_PULL_POLICY": "IfNotPresent",
        # test_pod_security_real runs a step as root on purpose (what Pod Security then says)
        "MLTASK_POLICY_ALLOW_ROOT": "true"})
    proc.start()
    yield proc
    proc.stop()


def _workspace(real_node: RealNodeCluster, api: client.ApiClient,
               secret_key: str | None = None,
               labels: dict[str, str] | None = None) -> Iterator[Workspace]:
    name = f"ml-{uuid.uuid4().hex[:8]}"
    prepare_namespace(api, name, real_node.s3, secret_key=secret_key, labels=labels)
    yield Workspace(api, name, real_node.s3, real_node.cp.kubeconfig, node.NODE_NAME)
    client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def ws(real_node: RealNodeCluster, node_api: client.ApiClient,
       node_operator: OperatorProcess) -> Iterator[Workspace]:
    """A namespace for MLTasks with the examples' storage Secret (the S3 server's keys) and
    Argo's executor Role, the operator running."""
    yield from _workspace(real_node, node_api)


@pytest.fixture
def ws_wrong_secret(real_node: RealNodeCluster, node_api: client.ApiClient,
                    node_operator: OperatorProcess) -> Iterator[Workspace]:
    """The same, but the Secret holds a wrong secret key: the S3 server must refuse it."""
    yield from _workspace(real_node, node_api, secret_key="wrong-secret-key-0123456789")


@pytest.fixture
def restricted_ws(real_node: RealNodeCluster, node_api: client.ApiClient,
                  node_operator: OperatorProcess) -> Iterator[Workspace]:
    """A workspace whose namespace enforces Pod Security `restricted`, the operator running."""
    yield from _workspace(real_node, node_api, labels=RESTRICTED)


@pytest.fixture
def restricted_namespace(real_node: RealNodeCluster,
                         node_api: client.ApiClient) -> Iterator[Workspace]:
    """The same without an operator: the test brings its own (installed in the cluster)."""
    yield from _workspace(real_node, node_api, labels=RESTRICTED)
