"""A namespace ready for real MLTasks on the real node: the storage Secret of the local S3
server, Argo's executor Role, helpers over tasks and pipelines, and the kubectl plugin as a user
runs it. Used by tests/node and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from harness.pipelines import Pipelines
from harness.s3server import S3Server
from harness.tasks import REPO, Tasks

#: The Secret every example names (spec.storage.secretRef / spec.defaults.storage.secretRef).
STORAGE_SECRET = "s3-credentials"
#: The bucket the examples read and write.
EXAMPLES_BUCKET = "mltask-examples"
#: What Argo's wait container needs to report a step's outputs (every Argo install asks for it).
EXECUTOR_RULES = [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"],
                   "verbs": ["create", "patch"]}]


#: A namespace whose pods must meet Pod Security `restricted` (the API server's own admission).
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def executor_namespace(api: client.ApiClient, namespace: str,
                       labels: dict[str, str] | None = None) -> None:
    """Create `namespace` (with `labels`) with Argo's executor Role bound to its default
    ServiceAccount, and wait until pods can be made there (the default ServiceAccount exists)."""
    core = client.CoreV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=namespace, labels=labels)))
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "mltask-executor"},
                                            "rules": EXECUTOR_RULES})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "mltask-executor"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "mltask-executor"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}]})
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except client.ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def prepare_namespace(api: client.ApiClient, namespace: str, s3: S3Server,
                      secret_key: str | None = None,
                      labels: dict[str, str] | None = None) -> None:
    """An executor namespace (above) with the storage Secret: the server's keys, or
    `secret_key` instead of its secret."""
    executor_namespace(api, namespace, labels)
    client.CoreV1Api(api).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=STORAGE_SECRET),
        string_data={"AWS_ACCESS_KEY_ID": s3.access_key,
                     "AWS_SECRET_ACCESS_KEY": secret_key or s3.secret_key}))


@dataclass
class Workspace:
    """One test's namespace on the real-node cluster."""

    api: client.ApiClient
    namespace: str
    s3: S3Server
    kubeconfig: Path
    node_name: str
    tasks: Tasks = field(init=False)
    pipelines: Pipelines = field(init=False)
    core: client.CoreV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.tasks = Tasks(self.api, self.namespace)
        self.pipelines = Pipelines(self.api, self.namespace)
        self.core = client.CoreV1Api(self.api)

    @property
    def kubectl_mltask_argv(self) -> list[str]:
        """The plugin as installed with the package (`kubectl mltask` runs this)."""
        return [sys.executable, "-m", "mltask_operator.cli", "--kubeconfig",
                str(self.kubeconfig), "-n", self.namespace]

    @property
    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO / "operator")}


def kubectl_mltask(ws: Workspace, *args: str, check: bool = True,
                   timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `kubectl mltask ARGS` in the workspace's namespace."""
    res = subprocess.run([*ws.kubectl_mltask_argv, *args], capture_output=True, text=True,
                         timeout=timeout, env=ws.cli_env)
    if check and res.returncode != 0:
        raise AssertionError(f"kubectl mltask {' '.join(args)} exited {res.returncode}: "
                             f"{res.stderr}")
    return res


def stored(s3: S3Server, uri: str) -> bytes:
    """The bytes of the object `uri` (s3://bucket/key) as the server holds them."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body: Any = s3.client().get_object(Bucket=bucket, Key=key)["Body"]
    return bytes(body.read())
