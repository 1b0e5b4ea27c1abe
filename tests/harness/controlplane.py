"""Test control plane: etcd, kube-apiserver and kube-controller-manager on loopback, envtest style.

Used by the pytest session fixture (tests/integration/conftest.py) and by people through
`make cluster-up` / `make cluster-down`, which call this module's command line:

    python -m harness.controlplane up   [--dir DIR] [--no-workloads]  # start, print KUBECONFIG
    python -m harness.controlplane down [--dir DIR]   # stop what `up` started
    python -m harness.controlplane status [--dir DIR]

Binaries come from tests/tools/build.sh (cached under ~/.cache/mltask-operator/bin). There is
no kubelet: pods are stored but never run — unless `harness.node` adds a real one, for which the
API server listens on the node's bridge address (`address`) and authorizes the node's kubelet
as a node (`node_name`: Node authorizer, NodeRestriction, kubelet client certificates).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import argocrds

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(
    os.environ.get("MLTASK_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mltask-operator"
)
BIN_DIR = Path(os.environ.get("MLTASK_TOOLS_BIN") or CACHE / "bin")
ARGO_CRDS_DIR = CACHE / "argo-crds"
PROMETHEUS_CRDS_DIR = CACHE / "prometheus-operator-crds"  # the ServiceMonitor CRD
ARGOCD_CRDS_DIR = CACHE / "argocd-crds"  # Argo CD's Application CRD
DEFAULT_CLUSTER_DIR = REPO / ".cluster"

REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
#: etcd's default request limit (1.5 MiB) is smaller than Argo's full Workflow CRD (~2.8 MiB).
ETCD_MAX_REQUEST_BYTES = 16 * 1024 * 1024


class ControlPlaneError(RuntimeError):
    """The control plane could not be started; the message says what is missing and why."""


def versions() -> dict[str, str]:
    """Pinned versions from tests/tools/versions.env."""
    out: dict[str, str] = {}
    for line in (REPO / "tests/tools/versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def find_binaries(bin_dir: Path = BIN_DIR) -> dict[str, Path]:
    """Locate the control-plane binaries, or fail saying how to build them."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for name in REQUIRED_BINARIES:
        path = bin_dir / name
        if path.exists() and os.access(path, os.X_OK):
            found[name] = path
        else:
            missing.append(name)
    if missing:
        raise ControlPlaneError(
            f"Missing control-plane binaries in {bin_dir}: {', '.join(missing)}. "
            "Build them from Go modules with `make tools` (runs tests/tools/build.sh; "
            "needs Go and the Go module proxy, about 15-25 minutes cold on 2 cores)."
        )
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- certificates


@dataclass
class _KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _make_certs(directory: Path, address: str = "127.0.0.1",
                node_name: str | None = None) -> dict[str, Path]:
    """A CA, the API server's serving cert, client certs, and the service-account signing key.

    The serving cert names 127.0.0.1, the `kubernetes` Service (10.0.0.1) and `address`. With
    `node_name`, also: the node's kubelet client cert (system:node:<name> in system:nodes, what
    the Node authorizer and NodeRestriction recognise) and serving cert (for `address`), the API
    server's client cert for kubelets, and kube-proxy's (system:kube-proxy, bound by the
    built-in system:node-proxier ClusterRoleBinding).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mltask-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def issue(cn: str, orgs: list[str], server: bool,
              sans: list[x509.GeneralName] | None = None) -> _KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return _KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem(key))

    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        path = directory / name
        path.write_bytes(data)
        path.chmod(0o600)
        files[name] = path

    write("ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    write("ca.key", key_pem(ca_key))
    ips = sorted({"127.0.0.1", "10.0.0.1", address})
    apiserver_sans: list[x509.GeneralName] = [
        x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                  "kubernetes.default.svc")]
    apiserver_sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    pairs = {
        "apiserver": issue("kube-apiserver", [], server=True, sans=apiserver_sans),
        "admin": issue("admin", ["system:masters"], server=False),
        "controller-manager": issue("system:kube-controller-manager", [], server=False),
        "scheduler": issue("system:kube-scheduler", [], server=False),
    }
    if node_name:
        pairs["kubelet"] = issue(f"system:node:{node_name}", ["system:nodes"], server=False)
        pairs["kubelet-serving"] = issue(
            f"system:node:{node_name}", ["system:nodes"], server=True,
            sans=[x509.DNSName(node_name), x509.IPAddress(ipaddress.ip_address(address))])
        pairs["apiserver-kubelet-client"] = issue(
            "kube-apiserver-kubelet-client", ["system:masters"], server=False)
        pairs["kube-proxy"] = issue("system:kube-proxy", [], server=False)
    for name, pair in pairs.items():
        write(f"{name}.crt", pair.cert_pem)
        write(f"{name}.key", pair.key_pem)
    sa_key = ec.generate_private_key(ec.SECP256R1())
    write("sa.key", key_pem(sa_key))
    write(
        "sa.pub",
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return files


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "mltask-test",
             "cluster": {"server": server, "certificate-authority-data": b64(ca)}}
        ],
        "users": [
            {"name": user,
             "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}
        ],
        "contexts": [{"name": "mltask-test", "context": {"cluster": "mltask-test", "user": user}}],
        "current-context": "mltask-test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


# --------------------------------------------------------------------------- processes


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager with data under `workdir`.

    `address` is where the API server listens and what it advertises (the `kubernetes`
    Service's endpoint): loopback by default; a real node's bridge address so pods reach it.
    `node_name` makes the cluster ready for that real node's kubelet (see `_make_certs`).
    """

    workdir: Path
    bin_dir: Path = BIN_DIR
    address: str = "127.0.0.1"
    node_name: str | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    api_port: int = 0
    etcd_port: int = 0

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    @property
    def certs(self) -> Path:
        return self.workdir / "pki"

    def log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines): requests of ServiceAccounts outside
        kube-system at Metadata level, so a test can see which verbs an identity used."""
        return self.workdir / "logs" / "audit.log"

    def audit_events(self, user: str, since: datetime.datetime) -> list[dict]:
        """Audit events (stage ResponseComplete or, for watches, ResponseStarted) of `user`
        received at or after `since`."""
        events = []
        with contextlib.suppress(FileNotFoundError), open(self.audit_log) as f:
            for line in f:
                event = json.loads(line)
                if event["user"]["username"] != user or event["stage"] not in (
                        "ResponseComplete", "ResponseStarted"):
                    continue
                received = datetime.datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00"))
                if received >= since:
                    events.append(event)
        return events

    # -- lifecycle

    def start(self, *, detach: bool = False, tries: int = 3) -> None:
        """Start everything and wait until it serves; on any failure stop what started.

        A free port can be taken by another process between picking and binding it; such a
        start is retried on new ports.
        """
        for attempt in range(1, tries + 1):
            try:
                self._start(detach)
                return
            except ControlPlaneError as e:
                if "address already in use" not in str(e) or attempt == tries:
                    raise
                for sub in ("etcd", "logs"):
                    shutil.rmtree(self.workdir / sub, ignore_errors=True)

    def _start(self, detach: bool) -> None:
        bins = find_binaries(self.bin_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        try:
            certs = _make_certs(self.certs, self.address, self.node_name)
            self._start_etcd(bins["etcd"], detach)
            self._start_apiserver(bins["kube-apiserver"], certs, detach)
            write_kubeconfig(
                self.kubeconfig, self.server, certs["ca.crt"], certs["admin.crt"],
                certs["admin.key"], "admin",
            )
            self._wait_ready(timeout=90)
            self._start_controller_manager(bins["kube-controller-manager"], certs, detach)
            self.install_argo_crds()
            self._wait_default_service_account(timeout=60)
        except BaseException:
            self.stop()
            raise
        self._save_state()

    def stop(self) -> None:
        """Stop the controller manager, the API server, then etcd; never raises."""
        order = ["executor-standin", "workflow-controller", "kwok", "kube-scheduler",
                 "kube-controller-manager", "kube-apiserver", "etcd"]
        names = [n for n in order if n in self.pids] + [n for n in self.pids if n not in order]
        for name in names:
            _terminate(self.pids[name], self.procs.get(name))
        self.procs.clear()
        self.pids.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "state.json").unlink()

    # -- components

    def _spawn(self, name: str, argv: list[str], detach: bool,
               env: dict[str, str] | None = None) -> None:
        logf = open(self.log(name), "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(
            argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, **(env or {})},
        )
        logf.close()
        self.pids[name] = proc.pid
        if not detach:
            self.procs[name] = proc

    def _start_etcd(self, etcd: Path, detach: bool) -> None:
        self.etcd_port, peer = free_port(), free_port()
        client_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{peer}"
        self._spawn(
            "etcd",
            [
                str(etcd),
                "--name=test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--listen-metrics-urls=",
                f"--max-request-bytes={ETCD_MAX_REQUEST_BYTES}",
                "--quota-backend-bytes=4294967296",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
            detach,
        )

    def _start_apiserver(self, apiserver: Path, certs: dict[str, Path], detach: bool) -> None:
        self.api_port = free_port(self.address)
        audit_policy = self.workdir / "audit-policy.yaml"
        audit_policy.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [
                {"level": "None", "userGroups": ["system:serviceaccounts:kube-system"]},
                {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
                {"level": "None"},
            ]}))
        self._spawn(
            "kube-apiserver",
            [
                str(apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={certs['apiserver.crt']}",
                f"--tls-private-key-file={certs['apiserver.key']}",
                f"--client-ca-file={certs['ca.crt']}",
                *self._authorization_args(certs),
                "--service-cluster-ip-range=10.0.0.0/24",
                f"--service-account-issuer={self.server}",
                f"--service-account-key-file={certs['sa.pub']}",
                f"--service-account-signing-key-file={certs['sa.key']}",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxbackup=1",
                "--audit-log-maxsize=200",
                "-v=1",
            ],
            detach,
        )

    def _authorization_args(self, certs: dict[str, Path]) -> list[str]:
        # as on managed clusters (OpenShift and others): setting blockOwnerDeletion on an
        # owner reference needs `update` on the owner's finalizers subresource
        plugins = ["OwnerReferencesPermissionEnforcement"]
        if not self.node_name:
            return ["--authorization-mode=RBAC", f"--enable-admission-plugins={plugins[0]}"]
        # a real kubelet: authorized as its node, limited to its own Node and pods
        return [
            "--authorization-mode=Node,RBAC",
            f"--enable-admission-plugins={','.join([*plugins, 'NodeRestriction'])}",
            f"--kubelet-client-certificate={certs['apiserver-kubelet-client.crt']}",
            f"--kubelet-client-key={certs['apiserver-kubelet-client.key']}",
            f"--kubelet-certificate-authority={certs['ca.crt']}",
            # logs, exec: dial the node's IP, not its name (nothing resolves it)
            "--kubelet-preferred-address-types=InternalIP,Hostname",
        ]

    def _start_controller_manager(
        self, kcm: Path, certs: dict[str, Path], detach: bool
    ) -> None:
        kubeconfig = self.workdir / "controller-manager.kubeconfig"
        write_kubeconfig(
            kubeconfig, self.server, certs["ca.crt"], certs["controller-manager.crt"],
            certs["controller-manager.key"], "system:kube-controller-manager",
        )
        self._spawn(
            "kube-controller-manager",
            [
                str(kcm),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={certs['sa.key']}",
                f"--root-ca-file={certs['ca.crt']}",
                "--service-cluster-ip-range=10.0.0.0/24",
                # a real dynamic provisioner (hostPath, for test clusters): PVCs get bound
                "--enable-hostpath-provisioner=true",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
                "-v=1",
            ],
            detach,
        )

    # -- readiness

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.crt"))
        ctx.load_cert_chain(str(self.certs / "admin.crt"), str(self.certs / "admin.key"))
        return ctx

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        req = urllib.request.Request(self.server + path)
        try:
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with code {proc.returncode} during start-up; "
                    f"last lines of {self.log(name)}:\n{_tail(self.log(name))}"
                )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                status, body = self.get("/readyz")
                if status == 200:
                    return
                last = body.decode(errors="replace")[-500:]
            except (OSError, ssl.SSLError) as e:
                last = str(e)
            time.sleep(0.25)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {timeout}s ({last}); "
            f"see {self.log('kube-apiserver')}:\n{_tail(self.log('kube-apiserver'))}"
        )

    def _wait_default_service_account(self, timeout: float) -> None:
        """The controller manager is working once it created the `default` ServiceAccount."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            status, _ = self.get("/api/v1/namespaces/default/serviceaccounts/default")
            if status == 200:
                return
            time.sleep(0.25)
        raise ControlPlaneError(
            f"kube-controller-manager did not create the default ServiceAccount in {timeout}s; "
            f"see {self.log('kube-controller-manager')}:\n"
            f"{_tail(self.log('kube-controller-manager'))}"
        )

    # -- Argo

    def install_argo_crds(self) -> None:
        """Create Argo's full-schema CRDs server-side (the Workflow CRD is ~2.8 MB)."""
        if not (ARGO_CRDS_DIR / "argoproj.io_workflows.yaml").exists():
            raise ControlPlaneError(
                f"Argo Workflows CRDs not found in {ARGO_CRDS_DIR}; run `make tools` "
                "(copies them from the pinned github.com/argoproj/argo-workflows/v3 module)."
            )
        files = argocrds.write_installable(ARGO_CRDS_DIR.resolve(), self.workdir / "argo-crds")
        args = [a for f in files for a in ("-f", str(f))]
        self.kubectl("apply", "--server-side", "--field-manager=mltask-test-harness", *args)
        self.wait_established(["workflows.argoproj.io", "workflowtaskresults.argoproj.io"])

    def wait_established(self, crds: list[str], timeout: float = 60) -> None:
        """Wait until every named CRD reports Established=True."""
        deadline = time.monotonic() + timeout
        pending = list(crds)
        while pending and time.monotonic() < deadline:
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{pending[0]}"
            status, body = self.get(path)
            crd = json.loads(body) if status == 200 else {}
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                pending.pop(0)
            else:
                time.sleep(0.2)
        if pending:
            raise ControlPlaneError(f"CRDs not Established after {timeout}s: {', '.join(pending)}")

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise ControlPlaneError(f"{' '.join(args)} failed: {res.stderr.strip()}")
        return res

    # -- state for the make targets

    def _save_state(self) -> None:
        state = {
            "pids": self.pids,
            "address": self.address,
            "node_name": self.node_name,
            "api_port": self.api_port,
            "etcd_port": self.etcd_port,
            "kubeconfig": str(self.kubeconfig),
        }
        (self.workdir / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, workdir: Path) -> ControlPlane | None:
        path = workdir / "state.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        cp = cls(workdir=workdir, address=state.get("address", "127.0.0.1"),
                 node_name=state.get("node_name"))
        cp.pids = {k: int(v) for k, v in state["pids"].items()}
        cp.api_port = state["api_port"]
        cp.etcd_port = state["etcd_port"]
        return cp


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        else:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                waited = 0
                if not _alive(pid):
                    return
            if waited == pid:
                return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    return True


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.controlplane", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_CLUSTER_DIR)
    parser.add_argument("--no-workloads", action="store_true",
                        help="only etcd, kube-apiserver and kube-controller-manager (no "
                        "scheduler, kwok nodes or Argo controller)")
    args = parser.parse_args(argv)
    workdir: Path = args.dir.resolve()

    existing = ControlPlane.load(workdir)
    if args.command == "up":
        if existing and all(_alive(p) for p in existing.pids.values()):
            print(f"# control plane already running at {existing.server}", file=sys.stderr)
        else:
            if existing:
                existing.stop()
            if workdir.exists():
                shutil.rmtree(workdir)
            cp = ControlPlane(workdir=workdir)
            t0 = time.monotonic()
            try:
                cp.start(detach=True)
                if not args.no_workloads:
                    from harness.workloads import Workloads

                    Workloads(cp).start(detach=True)
            except ControlPlaneError as e:
                cp.stop()
                print(f"error: {e}", file=sys.stderr)
                return 1
            print(
                f"# control plane up at {cp.server} in {time.monotonic() - t0:.1f}s; "
                f"logs in {workdir / 'logs'}",
                file=sys.stderr,
            )
        print(f"export KUBECONFIG={workdir / 'admin.kubeconfig'}")
        return 0
    if args.command == "down":
        if existing is None:
            print("# no control plane recorded in " + str(workdir), file=sys.stderr)
            return 0
        existing.stop()
        print(f"# control plane in {workdir} stopped", file=sys.stderr)
        return 0
    if existing is None:
        print("down")
        return 1
    alive = {n: _alive(p) for n, p in existing.pids.items()}
    print(json.dumps({"server": existing.server, "alive": alive}, indent=2))
    return 0 if all(alive.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

