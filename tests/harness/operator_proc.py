"""Runs the real operator (`python -m mltask_operator`) as a child process against a kubeconfig."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from harness.controlplane import REPO, free_port


class OperatorProcess:
    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0

    def start(self, timeout: float = 60) -> None:
        self.health_port = free_port()
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": str(REPO / "operator"),
            "MLTASK_METRICS_PORT": "0",
            "MLTASK_RESYNC_SECONDS": "5",
        })
        env.update(self.extra_env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mltask_operator", "--standalone",
             f"--liveness=http://127.0.0.1:{self.health_port}/healthz"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"operator not healthy after {timeout}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: the operator gets no chance to clean up, as in a node crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def service_account_kubeconfig(control_plane, api, namespace: str, name: str,
                               path: Path) -> Path:
    """A kubeconfig with a real token (TokenRequest) of ServiceAccount namespace/name, so an
    operator process runs with exactly that identity's RBAC."""
    from kubernetes import client

    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[control_plane.server],
                                           expiration_seconds=3600))).status.token
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {
            "server": control_plane.server,
            "certificate-authority": str(control_plane.certs / "ca.crt")}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}]}))
    return path
