"""Fixtures: the real control plane (etcd, kube-apiserver, controller manager), once a session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from harness.controlplane import ControlPlane, ControlPlaneError


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """Start the control plane on free loopback ports; stop it at the end, even on failure.

    A missing binary fails the tests (never skips): CI must build what it needs.
    """
    workdir = Path(os.environ.get("MLTASK_TEST_CLUSTER_DIR") or tmp_path_factory.mktemp("cluster"))
    cp = ControlPlane(workdir=workdir)
    try:
        cp.start()
    except ControlPlaneError as e:
        pytest.fail(f"Could not start the test control plane: {e}", pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> client.ApiClient:
    """An admin client (system:masters) for the test control plane."""
    return config.new_client_from_config(config_file=str(control_plane.kubeconfig))


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture
def as_service_account(
    api: client.ApiClient, control_plane: ControlPlane
) -> Callable[[str, str], client.ApiClient]:
    """Factory: an ApiClient authenticated as a ServiceAccount with a real token (TokenRequest)."""

    def make(namespace: str, name: str) -> client.ApiClient:
        core = client.CoreV1Api(api)
        try:
            core.create_namespaced_service_account(
                namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
            )
        except client.ApiException as e:
            if e.status != 409:
                raise
        token = core.create_namespaced_service_account_token(
            name, namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[control_plane.server],
                                               expiration_seconds=3600)
            ),
        ).status.token
        cfg = client.Configuration()
        cfg.host = control_plane.server
        cfg.ssl_ca_cert = str(control_plane.certs / "ca.crt")
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)

    return make


REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def mltask_crds(control_plane: ControlPlane) -> list[str]:
    """The operator's generated CRDs (crds/*.yaml), created server-side and Established."""
    files = sorted((REPO / "crds").glob("*.yaml"))
    args = [a for f in files for a in ("-f", str(f))]
    control_plane.kubectl("apply", "--server-side", "--field-manager=mltask-tests", *args)
    import yaml

    names = [yaml.safe_load(f.read_text())["metadata"]["name"] for f in files]
    control_plane.wait_established(names)
    return names


@pytest.fixture(scope="session")
def operator(control_plane: ControlPlane, mltask_crds: list[str]):
    """The real operator process, cluster-wide, for the whole session."""
    from harness.operator_proc import OperatorProcess

    proc = OperatorProcess(control_plane.kubeconfig, control_plane.workdir / "operator.log")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def argo(api: client.ApiClient):
    """The stand-in for Argo's workflow controller (no Argo controller runs here)."""
    from harness.argo_standin import ArgoStandIn

    return ArgoStandIn(api)
