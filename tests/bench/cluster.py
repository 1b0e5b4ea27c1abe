"""The bench's cluster: the test control plane with the repo's CRDs and the operator's shipped
cluster-wide RBAC, and the operator as a subprocess under its own ServiceAccount (so the API
server's audit log tells its requests from everyone else's)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import yaml
from kubernetes import client

from bench.cutproxy import CutProxy
from bench.load import Objects, RequestCounter, make_client
from bench.meter import cpu_seconds
from harness.controlplane import REPO, ControlPlane
from harness.operator_proc import OperatorProcess

OPERATOR_NAMESPACE, OPERATOR_SA = "mltask-system", "mltask-operator"
#: The operator's shipped defaults (Settings, the chart, manifests/): harness.operator_proc
#: sets a 5 s resync for the tests, the bench runs what users run.
SHIPPED_ENV = {"MLTASK_RESYNC_SECONDS": "60", "MLTASK_WORKERS": "8"}
RBAC = REPO / "manifests" / "overlays" / "cluster-wide" / "rbac.yaml"


class BenchCluster:
    def __init__(self, workdir: Path, threads: int, log) -> None:
        self.cp = ControlPlane(workdir=workdir)
        self.threads = threads
        self.log = log
        self.counter = RequestCounter()
        self.api: client.ApiClient | None = None
        self.objects: Objects | None = None
        self.operator: OperatorProcess | None = None
        self.operator_user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"
        self.dead_operator_cpu = 0.0  # CPU of operator processes that ended, for the Meter
        self._token = ""
        self._starts = 0
        self.operator_started = 0.0  # monotonic time the current operator became healthy

    # -- lifecycle

    def start(self) -> None:
        self.cp.start()
        files = sorted((REPO / "crds").glob("*.yaml"))
        self.cp.kubectl("apply", "--server-side", "--field-manager=mltask-bench",
                        *[a for f in files for a in ("-f", str(f))])
        self.cp.wait_established([yaml.safe_load(f.read_text())["metadata"]["name"]
                                  for f in files])
        self.api = make_client(str(self.cp.kubeconfig), self.threads, self.counter)
        self.objects = Objects(self.api)
        self._install_operator_identity()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_operator()
        self.cp.stop()

    def _install_operator_identity(self) -> None:
        """The ServiceAccount and ClusterRole(Binding) of manifests/ (cluster-wide), and a
        token for it."""
        self.objects.ensure_namespace(OPERATOR_NAMESPACE)
        core = client.CoreV1Api(self.api)
        core.create_namespaced_service_account(OPERATOR_NAMESPACE, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name=OPERATOR_SA)))
        self.cp.kubectl("apply", "--server-side", "--field-manager=mltask-bench",
                        "-f", str(RBAC))
        self._token = core.create_namespaced_service_account_token(
            OPERATOR_SA, OPERATOR_NAMESPACE, client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[self.cp.server],
                                               expiration_seconds=48 * 3600))).status.token

    def operator_kubeconfig(self, server: str) -> Path:
        path = self.cp.workdir / f"operator-{server.rsplit(':', 1)[1]}.kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "c", "cluster": {
                "server": server, "certificate-authority": str(self.cp.certs / "ca.crt")}}],
            "users": [{"name": "sa", "user": {"token": self._token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}]}))
        path.chmod(0o600)
        return path

    # -- the operator

    def operator_env(self) -> dict[str, str]:
        """The environment the operator runs with (what its Settings read)."""
        return {**os.environ, "MLTASK_METRICS_PORT": "0", **SHIPPED_ENV}

    def start_operator(self, label: str, proxy: CutProxy | None = None) -> OperatorProcess:
        """A new operator process, straight to the API server or through `proxy`."""
        if self.operator is not None:
            self.stop_operator()
        self._starts += 1
        server = f"https://127.0.0.1:{proxy.port}" if proxy else self.cp.server
        log = self.cp.workdir / f"operator-{self._starts:02d}-{label}.log"
        self.operator = OperatorProcess(self.operator_kubeconfig(server), log, env=SHIPPED_ENV)
        self.operator.start(timeout=120)
        self.operator_started = time.monotonic()
        return self.operator

    def _account_cpu(self) -> None:
        if self.operator and self.operator.proc and self.operator.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.dead_operator_cpu += cpu_seconds(self.operator.proc.pid)

    def stop_operator(self) -> None:
        if self.operator is not None:
            self._account_cpu()
            self.operator.stop()
            self.operator = None

    def kill_operator(self) -> None:
        """SIGKILL, as in a node crash."""
        if self.operator is not None:
            self._account_cpu()
            self.operator.kill()
            self.operator = None

    def pid(self, name: str) -> int:
        if name == "operator":
            assert self.operator is not None and self.operator.proc is not None
            return self.operator.proc.pid
        return self.cp.pids[name]

    def proxy(self) -> CutProxy:
        return CutProxy("127.0.0.1", self.cp.api_port)
