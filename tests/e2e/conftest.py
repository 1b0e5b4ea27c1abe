"""End-to-end fixtures: a control plane with Argo's own controller, kube-scheduler, kwok nodes,
the executor stand-in and the operator — every MLTask runs through Argo's real semantics."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from harness.controlplane import ControlPlane, ControlPlaneError
from harness.operator_proc import OperatorProcess
from harness.tasks import Tasks
from harness.workloads import Workloads

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def e2e_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    workdir = Path(os.environ.get("MLTASK_E2E_CLUSTER_DIR") or tmp_path_factory.mktemp("e2e"))
    cp = ControlPlane(workdir=workdir)
    try:
        cp.start()
        Workloads(cp).start()
        files = sorted((REPO / "crds").glob("*.yaml"))
        cp.kubectl("apply", "--server-side", *[a for f in files for a in ("-f", str(f))])
        cp.wait_established([yaml.safe_load(f.read_text())["metadata"]["name"] for f in files])
    except ControlPlaneError as e:
        cp.stop()
        pytest.fail(f"Could not start the end-to-end cluster: {e}", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def e2e_api(e2e_cluster: ControlPlane) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(e2e_cluster.kubeconfig))


@pytest.fixture(scope="session")
def e2e_operator(e2e_cluster: ControlPlane) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(e2e_cluster.kubeconfig, e2e_cluster.workdir / "operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def e2e_namespace(e2e_api: client.ApiClient) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(e2e_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def tasks(e2e_api: client.ApiClient, e2e_namespace: str, e2e_operator) -> Tasks:
    """MLTasks in a fresh namespace, once Argo's pods can run there."""
    t = Tasks(e2e_api, e2e_namespace)
    deadline = time.monotonic() + 30
    while True:  # Argo's pods need the namespace's default ServiceAccount
        try:
            t.core.read_namespaced_service_account("default", e2e_namespace)
            return t
        except client.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
