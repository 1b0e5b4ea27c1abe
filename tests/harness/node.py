"""A real node for the test control plane: containerd, the kubelet and kube-proxy on a bridge.

    python -m harness.node up     [--dir DIR]   # build/import images, start everything
    python -m harness.node down                 # stop it and restore the host (also after a crash)
    python -m harness.node status

`up` starts, in order: the bridge `mltask0` (10.244.0.1/24) and a FORWARD rule that keeps pods
off the host's outside network; the control plane with its API server on the bridge address
(`ControlPlane(address=BRIDGE_IP, node_name=NODE_NAME)`: pods reach it through the `kubernetes`
Service, the kubelet is authorized as a node); containerd from Debian with its own config, root,
state and socket; the images of `harness.images`, imported; the kubelet (node `mltask-node-0`,
cgroupfs on cgroup v1, a GPU advertised as an extended resource); kube-proxy (iptables mode);
the local volume provisioner (`harness.local_provisioner`, the default StorageClass); then
kube-scheduler and Argo's real workflow-controller (`Workloads(simulated=False)`).

One node per machine: the bridge, CIDRs, ports and directories below are fixed, and a state
file (STATE_FILE) records what the host looked like before and what runs. `down`, and the next
`up` when a run was killed, stop the processes, remove the pods' containers, unmount everything
under our directories, delete the pods' network namespaces, the bridge, our iptables chains and
rules, and restore the sysctls the kubelet changes. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness import images
from harness.controlplane import (
    BIN_DIR,
    REPO,
    ControlPlane,
    ControlPlaneError,
    _tail,
    write_kubeconfig,
)
from harness.s3server import S3Server

BRIDGE = "mltask0"
POD_CIDR = "10.244.0.0/24"
BRIDGE_IP = "10.244.0.1"
SERVICE_CIDR = "10.0.0.0/24"  # the control plane's --service-cluster-ip-range
NODE_NAME = "mltask-node-0"
NODE_LABELS = {"nvidia.com/gpu.present": "true"}
GPU_RESOURCE = "nvidia.com/gpu"
GPU_COUNT = "4"  # advertised, not present: pods requesting it schedule and run without a GPU
KUBELET_PORT = 10250  # on BRIDGE_IP: the API server reaches the kubelet there (logs, exec)
KUBELET_HEALTHZ_PORT = 10248  # the kubelet's and kube-proxy's own ports, on 127.0.0.1
PROXY_METRICS_PORT = 10249
PROXY_HEALTHZ_PORT = 10256
STORAGE_CLASS = "mltask-local"
#: The S3-compatible server the pods store datasets and models in, on the bridge; the examples
#: name it as their storage endpoint.
S3_PORT = 9000
S3_ENDPOINT = f"http://{BRIDGE_IP}:{S3_PORT}"
#: The raw data of the examples: scikit-learn's copy of the UCI digits, as the example image's
#: scikit-learn ships it; seeded into the bucket at s3://mltask-examples/raw/digits.csv.gz.
DIGITS_IN_IMAGE = "/opt/venv/lib/python3.11/site-packages/sklearn/datasets/data/digits.csv.gz"
DIGITS_KEY = "raw/digits.csv.gz"
PROVISIONER = "mltask.dev/local-standin"

DATA_DIR = Path("/var/lib/mltask-node")
RUN_DIR = Path("/run/mltask-node")
CONTAINERD_ROOT = DATA_DIR / "containerd"  # kept across runs: imported images stay
CONTAINERD_STATE = RUN_DIR / "containerd"
CONTAINERD_SOCKET = RUN_DIR / "containerd.sock"
CONTAINERD_CONFIG = RUN_DIR / "containerd.toml"
KUBELET_ROOT = DATA_DIR / "kubelet"
POD_LOGS_DIR = DATA_DIR / "pod-logs"
CNI_CONF_DIR = DATA_DIR / "cni" / "net.d"
CNI_IPAM_DIR = DATA_DIR / "cni" / "ipam"
CNI_BIN_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins
CNI_NETWORK = "mltask"
CNI_CACHE = Path("/var/lib/cni")  # libcni's cache; containerd 1.6 does not move it
VOLUMES_DIR = DATA_DIR / "volumes"
CGROUP_ROOT = "mltask-node"  # the kubelet's cgroupRoot, in every cgroup v1 hierarchy
STATE_FILE = RUN_DIR / "state.json"
LOCK_FILE = Path("/run/mltask-node.lock")
DEFAULT_CLUSTER_DIR = REPO / ".cluster-node"
#: Set by the kubelet (kernel.*, vm.*) or the bridge plugin (ip_forward); restored on stop.
SYSCTLS = ("kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory", "vm.panic_on_oom",
           "kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes", "net.ipv4.ip_forward")
FORWARD_RULE_COMMENT = "mltask-node: pods stay off the outside network"
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Debian packages the node needs, by the command that shows each is installed.
REQUIRED_TOOLS = {
    "containerd": "containerd", "ctr": "containerd", "runc": "runc", "iptables": "iptables",
    "ip": "iproute2", "conntrack": "conntrack", "buildah": "buildah",
    "debootstrap": "debootstrap", "gcc": "gcc",
}


class NodeError(ControlPlaneError):
    """The node could not be started or stopped; the message says what and why."""


def log(message: str) -> None:
    print(f"[node] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- host helpers


def _run(argv: list[str], *, check: bool = True, input: str | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout,
                         env={**os.environ, "PATH": PATH_ENV})
    if check and res.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed (exit {res.returncode}): "
                        f"{(res.stderr or res.stdout).strip()}")
    return res


def check_requirements() -> None:
    """Root, the Debian packages and the binaries of `make tools`: fail saying what is
    missing (the tests fail, never skip)."""
    if os.geteuid() != 0:
        raise NodeError("the real node needs root (containerd, the kubelet, bridge, iptables)")
    missing = sorted({pkg for tool, pkg in REQUIRED_TOOLS.items()
                      if shutil.which(tool, path=PATH_ENV) is None})
    missing += [] if (CNI_BIN_DIR / "bridge").exists() else ["containernetworking-plugins"]
    if missing:
        raise NodeError(f"missing Debian packages: {' '.join(missing)} "
                        f"(apt-get install {' '.join(missing)}; .ci/run does it)")
    bins = ["kubelet", "kube-proxy", "argoexec", "kube-scheduler", "workflow-controller"]
    absent = [b for b in bins if not (BIN_DIR / b).exists()]
    if absent:
        raise NodeError(f"missing binaries in {BIN_DIR}: {', '.join(absent)}; run `make tools`")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _sysctl_get(name: str) -> str | None:
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the pid, its identity."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same_process(pid: int, start: str | None) -> bool:
    now = _start_time(pid)
    if now is None or now != start:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _stop_process(name: str, pid: int, start: str | None, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, a process we started (pid + start time)."""
    if not _same_process(pid, start):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _same_process(pid, start):
            log(f"{name}: stopped (pid {pid})")
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    log(f"{name}: killed after {grace:.0f}s (pid {pid})")


def _processes_using(markers: list[str]) -> list[tuple[int, str, str]]:
    """(pid, start time, command) of processes whose command line names one of our own paths
    (the cluster dir, our run/data dirs): what a crashed run left running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in markers):
            found.append((int(entry.name), _start_time(int(entry.name)) or "", cmdline[:120]))
    return found


def _mountpoints() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        points.append(re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1), 8)), point))
    return points


def _unmount_under(roots: list[Path]) -> int:
    """Unmount everything mounted at or below `roots`, deepest first; returns how many."""
    prefixes = [str(r) for r in roots]
    count = 0
    for _ in range(5):  # mounts can stack: repeat until none is left
        points = [p for p in _mountpoints()
                  if any(p == r or p.startswith(r + "/") for r in prefixes)]
        if not points:
            break
        for point in sorted(set(points), key=lambda p: (p.count("/"), p), reverse=True):
            if _run(["umount", point], check=False).returncode != 0:
                _run(["umount", "-l", point], check=False)
            count += 1
    return count


def _rmtree_unmounted(path: Path) -> None:
    """rm -rf, refusing to descend into anything still mounted."""
    if not path.exists():
        return
    left = [p for p in _mountpoints() if p == str(path) or p.startswith(f"{path}/")]
    if left:
        raise NodeError(f"not removing {path}: still mounted: {', '.join(left[:5])}")
    shutil.rmtree(path)


def _cgroup_hierarchies() -> list[Path]:
    """Mount points of the cgroup v1 hierarchies (cpu, memory, ..., name=systemd), or of the
    unified hierarchy on a cgroup v2 only host."""
    v1, v2 = [], []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        kind = right.split()[0]
        if kind in ("cgroup", "cgroup2"):
            (v1 if kind == "cgroup" else v2).append(Path(left.split()[4]))
    return v1 or v2


def _default_route_interface() -> str | None:
    res = _run(["ip", "-j", "route", "show", "default"], check=False)
    with contextlib.suppress(ValueError, IndexError, KeyError):
        return json.loads(res.stdout)[0]["dev"]
    return None


# --------------------------------------------------------------------------- iptables


def _chains_to_remove(saved: str) -> dict[str, list[str]]:
    """{table: [chains]} of the KUBE-* chains in an iptables-save output (kube-proxy's and the
    kubelet's); nothing else on the host is touched."""
    out: dict[str, list[str]] = {}
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":KUBE-"):
            out.setdefault(table, []).append(line[1:].split()[0])
    return out


def _remove_our_iptables_rules(tool: str) -> int:
    """Delete rules that jump to KUBE-* chains or carry our comment, then the KUBE-* chains.

    Not a restore of a snapshot taken before the start: other users of this host (a podman or
    buildah build's netavark rules, say) change iptables meanwhile, and a snapshot would undo
    their changes too.
    """
    if shutil.which(tool, path=PATH_ENV) is None:
        return 0
    saved = _run([f"{tool}-save"], check=False).stdout
    removed = 0
    table = ""
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:]
            continue
        if not line.startswith("-A "):
            continue
        chain = line.split()[1]
        if chain.startswith("KUBE-"):
            continue  # flushed with its chain below
        if re.search(r"-j KUBE-\S+", line) or FORWARD_RULE_COMMENT in line:
            spec = _split_rule(line)[2:]
            if _run([tool, "-w", "-t", table, "-D", chain, *spec], check=False).returncode == 0:
                removed += 1
    chains = _chains_to_remove(saved)
    for table, names in chains.items():
        for name in names:
            _run([tool, "-w", "-t", table, "-F", name], check=False)
        for name in names:
            if _run([tool, "-w", "-t", table, "-X", name], check=False).returncode == 0:
                removed += 1
    return removed


def _split_rule(line: str) -> list[str]:
    """Split an iptables-save rule line like a shell would (comments are quoted)."""
    import shlex

    return shlex.split(line)


# --------------------------------------------------------------------------- config files


def containerd_config() -> str:
    return f"""\
# containerd for the mltask test node (harness/node.py): its own root, state and socket.
version = 2
root = "{CONTAINERD_ROOT}"
state = "{CONTAINERD_STATE}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{DATA_DIR / 'containerd-opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{images.PAUSE_TAG}"
  # root here lacks CAP_SYS_RESOURCE: the -998 pod sandboxes ask for cannot be written
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{CNI_CONF_DIR}"
    max_conf_num = 1
"""


def cni_config() -> dict[str, Any]:
    """Bridge + host-local IPAM; pods get routes to the Service range only (no default route),
    and no masquerading: they reach the API server and servers on the bridge address, nothing
    else."""
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": POD_CIDR, "gateway": BRIDGE_IP}]],
                "routes": [{"dst": SERVICE_CIDR}],
                "dataDir": str(CNI_IPAM_DIR),
            },
        }],
    }


def kubelet_config(certs: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": BRIDGE_IP,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "tlsCertFile": str(certs / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(certs / "kubelet-serving.key"),
        # the API server authenticates with its kubelet client cert (system:masters); service
        # account tokens are checked by TokenReview; every request is authorized by a
        # SubjectAccessReview, as on a production node
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(certs / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT}",
        "failCgroupV1": False,  # the machine runs cgroup v1 (hybrid); 1.34 still allows it
        "failSwapOn": False,
        "podLogsDir": str(POD_LOGS_DIR),
        "volumePluginDir": str(DATA_DIR / "volume-plugins"),
        # imported images are the only copies (no registry): never collect them
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        # kube-proxy makes its own chains; the kubelet's (KUBE-FIREWALL...) are not needed
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "clusterDomain": "cluster.local",
        "resolvConf": "",
        "maxPods": 110,
        "nodeStatusReportFrequency": "10s",
    }


def kube_proxy_config(kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "hostnameOverride": NODE_NAME,
        "bindAddress": BRIDGE_IP,
        "metricsBindAddress": f"127.0.0.1:{PROXY_METRICS_PORT}",
        "healthzBindAddress": f"127.0.0.1:{PROXY_HEALTHZ_PORT}",
        "nodePortAddresses": [f"{BRIDGE_IP}/32"],
        # leave the host's conntrack sysctls and route_localnet alone
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
    }


def storage_objects() -> list[dict[str, Any]]:
    return [{
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }]


# --------------------------------------------------------------------------- state


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """Serialises up and down on this machine (two test sessions starting at once)."""
    with open(LOCK_FILE, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _read_state() -> dict[str, Any] | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _write_state(state: dict[str, Any]) -> None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.rename(STATE_FILE)


def _running(state: dict[str, Any]) -> list[str]:
    """Names of the recorded processes that still run (same pid and start time, same boot)."""
    if state.get("boot_id") != _boot_id():
        return []
    return [n for n, (pid, start) in state.get("procs", {}).items() if _same_process(pid, start)]


def _in_use(state: dict[str, Any]) -> bool:
    """Whether the recorded node is someone's: its owner (a test session, or `node up` while
    starting) still runs, or `node up` finished and left it running. A test session killed
    mid-run, or an `up` killed while starting, leaves a node nobody owns: cleaned up."""
    owner = state.get("owner", [0, None])
    if state.get("boot_id") == _boot_id() and _same_process(*owner):
        return True
    return bool(state.get("detached") and state.get("complete") and _running(state))


def _record_host() -> dict[str, Any]:
    """What the host looks like before the node changes it, for `cleanup`."""
    return {
        "boot_id": _boot_id(),
        "owner": [os.getpid(), _start_time(os.getpid())],
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "sysctls": {name: _sysctl_get(name) for name in SYSCTLS},
        "netns_before": sorted(p.name for p in Path("/run/netns").glob("*"))
        if Path("/run/netns").exists() else [],
        "cni_cache_existed": CNI_CACHE.exists(),
        "nft_tables_before": _nft_tables(),
        "iptables_before": _run(["iptables-save"], check=False).stdout,
        "procs": {},
    }


def _nft_tables() -> list[str]:
    if shutil.which("nft", path=PATH_ENV) is None:
        return []
    return sorted(_run(["nft", "list", "tables"], check=False).stdout.splitlines())


# --------------------------------------------------------------------------- the node


class Node:
    """containerd, the kubelet and kube-proxy registered with `cp` (started with
    address=BRIDGE_IP and node_name=NODE_NAME), plus the local volume provisioner."""

    def __init__(self, cp: ControlPlane, state: dict[str, Any]) -> None:
        self.cp = cp
        self.state = state
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ready_seconds = 0.0
        self.gpu_advertised_at = 0.0

    # -- processes

    def _spawn(self, name: str, argv: list[str]) -> None:
        logf = open(self.cp.log(name), "ab")  # noqa: SIM115 - handed to the child process
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, "PATH": PATH_ENV})
        logf.close()
        self.procs[name] = proc
        self.record()

    def record(self) -> None:
        """Write every pid (the node's and the control plane's) into the state file."""
        pids = {**self.cp.pids, **{n: p.pid for n, p in self.procs.items()}}
        self.state["procs"] = {n: [pid, _start_time(pid)] for n, pid in pids.items()}
        self.state["cluster_dir"] = str(self.cp.workdir)
        _write_state(self.state)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise NodeError(f"{name} exited with code {proc.returncode} during start-up; "
                                f"last lines of {self.cp.log(name)}:\n{_tail(self.cp.log(name))}")
        self.cp._check_alive()

    def _wait(self, what: str, component: str, check: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.2)
        log_path = self.cp.log(component)
        raise NodeError(f"{what} not after {timeout:.0f}s; last lines of {log_path}:\n"
                        f"{_tail(log_path)}")

    # -- start

    def start(self, built: list[images.Built]) -> None:
        self._start_containerd()
        images.import_images(built, CONTAINERD_SOCKET)
        self._start_kubelet()
        self._advertise_gpu()
        self._start_kube_proxy()
        self._start_storage()

    def _start_containerd(self) -> None:
        for d in (CONTAINERD_ROOT, CONTAINERD_STATE, CNI_CONF_DIR, CNI_IPAM_DIR):
            d.mkdir(parents=True, exist_ok=True)
        CONTAINERD_CONFIG.write_text(containerd_config())
        (CNI_CONF_DIR / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(cni_config(), indent=2))
        self._spawn("containerd", ["containerd", f"--config={CONTAINERD_CONFIG}"])
        self._wait("containerd serving", "containerd",
                   lambda: _run(["ctr", f"--address={CONTAINERD_SOCKET}", "version"],
                                check=False).returncode == 0, 30)
        log(f"containerd: serving on {CONTAINERD_SOCKET} (root {CONTAINERD_ROOT})")
        remove_containers()  # a killed run's, if any

    def _start_kubelet(self) -> None:
        cp = self.cp
        for d in (KUBELET_ROOT, POD_LOGS_DIR, VOLUMES_DIR):
            d.mkdir(parents=True, exist_ok=True)
        _make_cgroup_root()
        kubeconfig = cp.workdir / "kubelet.kubeconfig"
        write_kubeconfig(kubeconfig, cp.server, cp.certs / "ca.crt", cp.certs / "kubelet.crt",
                         cp.certs / "kubelet.key", f"system:node:{NODE_NAME}")
        config = cp.workdir / "kubelet-config.yaml"
        config.write_text(yaml.safe_dump(kubelet_config(cp.certs)))
        t0 = time.monotonic()
        self._spawn("kubelet", [
            str(BIN_DIR / "kubelet"),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={KUBELET_ROOT}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",
            f"--node-labels={','.join(f'{k}={v}' for k, v in NODE_LABELS.items())}",
            "-v=1",
        ])
        self._wait(f"node {NODE_NAME} Ready", "kubelet", self._node_ready, 90)
        self.ready_seconds = time.monotonic() - t0
        log(f"kubelet: node {NODE_NAME} Ready {self.ready_seconds:.1f}s after the kubelet started")

    def _node(self) -> dict[str, Any]:
        status, body = self.cp.get(f"/api/v1/nodes/{NODE_NAME}")
        return json.loads(body) if status == 200 else {}

    def _node_ready(self) -> bool:
        conditions = (self._node().get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _advertise_gpu(self) -> None:
        """An extended resource the node does not have, as Kubernetes documents it: a patch of
        the node's status.capacity (the kubelet derives allocatable from capacity and keeps
        extended resources no device plugin manages)."""
        key = GPU_RESOURCE.replace("/", "~1")
        patch = [{"op": "add", "path": f"/status/capacity/{key}", "value": GPU_COUNT},
                 {"op": "add", "path": f"/status/allocatable/{key}", "value": GPU_COUNT}]
        self.cp.kubectl("patch", "node", NODE_NAME, "--subresource=status", "--type=json",
                        "-p", json.dumps(patch))
        self.gpu_advertised_at = time.time()
        log(f"kubelet: node {NODE_NAME} advertises {GPU_RESOURCE}: {GPU_COUNT}")

    def _start_kube_proxy(self) -> None:
        cp = self.cp
        kubeconfig = cp.workdir / "kube-proxy.kubeconfig"
        write_kubeconfig(kubeconfig, cp.server, cp.certs / "ca.crt",
                         cp.certs / "kube-proxy.crt", cp.certs / "kube-proxy.key",
                         "system:kube-proxy")
        config = cp.workdir / "kube-proxy-config.yaml"
        config.write_text(yaml.safe_dump(kube_proxy_config(kubeconfig)))
        self._spawn("kube-proxy", [str(BIN_DIR / "kube-proxy"), f"--config={config}", "-v=1"])

        def synced() -> bool:
            url = f"http://127.0.0.1:{PROXY_HEALTHZ_PORT}/healthz"
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status == 200

        self._wait("kube-proxy synced", "kube-proxy", synced, 60)
        log(f"kube-proxy: Service {SERVICE_CIDR.rsplit('.', 1)[0]}.1:443 routes to "
            f"{cp.server}")

    def _start_storage(self) -> None:
        cp = self.cp
        path = cp.workdir / "node-storage.yaml"
        path.write_text(yaml.safe_dump_all(storage_objects()))
        cp.kubectl("apply", "--server-side", "--field-manager=mltask-test-harness",
                   "-f", str(path))
        pythonpath = os.pathsep.join([str(REPO / "tests"), str(REPO / "operator")])
        cp._spawn("local-provisioner", [
            sys.executable, "-m", "harness.local_provisioner",
            f"--kubeconfig={cp.kubeconfig}", f"--node={NODE_NAME}", f"--dir={VOLUMES_DIR}",
            f"--storage-class={STORAGE_CLASS}", f"--provisioner={PROVISIONER}",
        ], detach=False, env={"PYTHONPATH": pythonpath})
        self.record()
        log(f"local-provisioner: StorageClass {STORAGE_CLASS} (default) -> local volumes in "
            f"{VOLUMES_DIR}")

    # -- stop

    def stop(self) -> None:
        """kubelet and kube-proxy, then the pods' containers, then containerd."""
        for name in ("kubelet", "kube-proxy"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                _stop_process(name, proc.pid, _start_time(proc.pid))
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            remove_containers()
        proc = self.procs.pop("containerd", None)
        if proc is not None:
            _stop_process("containerd", proc.pid, _start_time(proc.pid))


def _make_cgroup_root() -> None:
    """The kubelet's cgroupRoot in every hierarchy (a v1 cpuset needs its cpus and mems)."""
    for hierarchy in _cgroup_hierarchies():
        path = hierarchy / CGROUP_ROOT
        path.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (path / name).exists() and not (path / name).read_text().strip():
                (path / name).write_text((hierarchy / name).read_text())


def _remove_cgroup_root() -> None:
    for hierarchy in _cgroup_hierarchies():
        root = hierarchy / CGROUP_ROOT
        if not root.exists():
            continue
        dirs = sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True) + [root]
        for d in dirs:
            with contextlib.suppress(OSError):
                for pid in (d / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)  # a container left behind
        for d in dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def remove_containers() -> int:
    """Kill and delete every task and container in containerd's k8s.io namespace (the pods'),
    through our containerd. Returns how many containers were removed."""
    def ctr(*args: str) -> subprocess.CompletedProcess[str]:
        return _run(["ctr", f"--address={CONTAINERD_SOCKET}", "--namespace=k8s.io", *args],
                    check=False, timeout=120)

    tasks = [line.split()[0] for line in ctr("tasks", "ls", "-q").stdout.splitlines() if line]
    for task in tasks:
        ctr("tasks", "kill", "--signal=SIGKILL", "--all", task)
    for task in tasks:
        for _ in range(50):
            if ctr("tasks", "delete", "--force", task).returncode == 0:
                break
            time.sleep(0.1)
    containers = [c for c in ctr("containers", "ls", "-q").stdout.split() if c]
    for container in containers:
        ctr("containers", "delete", container)
    if containers:
        log(f"containerd: removed {len(containers)} containers of namespace k8s.io")
    return len(containers)


# --------------------------------------------------------------------------- host set-up


def prepare_host(state: dict[str, Any]) -> None:
    """The bridge (before the API server binds its address) and the FORWARD rule."""
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        raise NodeError(f"bridge {BRIDGE} exists but no node is recorded in {STATE_FILE}; "
                        f"remove it (`ip link del {BRIDGE}`) or run `python -m harness.node down`")
    _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    _run(["ip", "addr", "add", f"{BRIDGE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    state["bridge"] = BRIDGE
    _write_state(state)
    log(f"host: bridge {BRIDGE} {BRIDGE_IP}/{POD_CIDR.split('/')[1]}")
    out = _default_route_interface()
    if out:
        # the bridge plugin turns ip_forward on; pods have no default route, and this rule
        # drops anything from them towards the outside network anyway
        _run(["iptables", "-w", "-I", "FORWARD", "-s", POD_CIDR, "-o", out, "-m", "comment",
              "--comment", FORWARD_RULE_COMMENT, "-j", "DROP"])
        log(f"host: iptables FORWARD drops {POD_CIDR} -> {out}")


def cleanup(state: dict[str, Any] | None = None, node: Node | None = None) -> None:
    """Stop whatever a run started and undo its host changes; safe to repeat, and what `down`
    and the next `up` after a killed run do."""
    state = state if state is not None else (_read_state() or {})
    same_boot = state.get("boot_id") == _boot_id()
    procs = state.get("procs", {}) if same_boot else {}
    # 1. the kubelet and kube-proxy first (they would restart containers), then the rest but
    #    containerd, which removes the pods' containers below
    order = ["kubelet", "kube-proxy", "local-provisioner", "workflow-controller",
             "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"]
    names = [n for n in order if n in procs] + [n for n in procs if n not in order]
    if node is not None:
        node.stop()
    for name in names:
        if name != "containerd":
            pid, start = procs[name]
            _stop_process(name, pid, start)
    # 2. the pods' containers, through containerd: the run's own if it still runs, else a
    #    temporary one when containers may still run (their task state is left)
    containerd_pid: tuple[int, str | None] | None = None
    if "containerd" in procs and _same_process(*procs["containerd"]):
        containerd_pid = (procs["containerd"][0], procs["containerd"][1])
    elif any((CONTAINERD_STATE / "io.containerd.runtime.v2.task" / "k8s.io").glob("*")):
        containerd_pid = _temporary_containerd(Path(state.get("cluster_dir") or RUN_DIR))
    if containerd_pid:
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            remove_containers()
        _stop_process("containerd", *containerd_pid)
    # 3. anything else still naming our directories (shims of a killed containerd, say)
    markers = [f"{RUN_DIR}/", f"{DATA_DIR}/"]
    if state.get("cluster_dir"):
        markers.append(state["cluster_dir"].rstrip("/") + "/")
    for pid, start, command in _processes_using(markers):
        log(f"host: stopping leftover process {pid}: {command}")
        _stop_process(command.split()[0], pid, start, grace=5)
    _remove_cgroup_root()
    # 4. mounts (the kubelet's bind mount of its root, pod volumes, container roots, shm),
    #    then the pods' network namespaces
    count = _unmount_under([DATA_DIR, RUN_DIR])
    # containerd names them cni-<uuid>; without a state file, whose they are is unknown
    before = set(state.get("netns_before", []))
    netns = [p for p in Path("/run/netns").glob("cni-*") if p.name not in before] \
        if state and Path("/run/netns").exists() else []
    for ns in netns:
        _run(["umount", str(ns)], check=False)
        with contextlib.suppress(OSError):
            ns.unlink()
    # 5. network: the bridge (its veths went with the namespaces), iptables, CNI's cache
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run(["ip", "link", "del", BRIDGE], check=False)
    rules = _remove_our_iptables_rules("iptables") + _remove_our_iptables_rules("ip6tables")
    for table in set(_nft_tables()) - set(state.get("nft_tables_before", _nft_tables())):
        if "kube" in table:  # e.g. kube-proxy's own nftables table
            _run(["nft", "delete", *table.split()[1:]], check=False)
    for path in (CNI_CACHE / "results").glob(f"{CNI_NETWORK}-*"):
        path.unlink()
    if CNI_CACHE.exists() and state and not state.get("cni_cache_existed", True):
        shutil.rmtree(CNI_CACHE, ignore_errors=True)
    # 6. sysctls the kubelet and the bridge plugin changed
    restored = _restore_sysctls(state.get("sysctls", {}) if same_boot else {})
    # 7. our directories, but containerd's root: imported images are kept for the next run
    for path in (KUBELET_ROOT, POD_LOGS_DIR, DATA_DIR / "cni", VOLUMES_DIR,
                 DATA_DIR / "volume-plugins", DATA_DIR / "containerd-opt"):
        _rmtree_unmounted(path)
    with contextlib.suppress(FileNotFoundError):
        STATE_FILE.unlink()
    _rmtree_unmounted(RUN_DIR)
    log(f"host: cleaned up ({count} mounts, {len(netns)} network namespaces, {rules} iptables "
        f"rules and chains, sysctls {', '.join(restored) or 'unchanged'})")


def _temporary_containerd(logs: Path) -> tuple[int, str | None] | None:
    """Start containerd with our config to remove a killed run's containers."""
    CONTAINERD_STATE.mkdir(parents=True, exist_ok=True)
    CONTAINERD_CONFIG.write_text(containerd_config())
    logs.mkdir(parents=True, exist_ok=True)
    logf = open(logs / "containerd-cleanup.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["containerd", f"--config={CONTAINERD_CONFIG}"], stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PATH": PATH_ENV})
    logf.close()
    for _ in range(100):
        if _run(["ctr", f"--address={CONTAINERD_SOCKET}", "version"],
                check=False).returncode == 0:
            log(f"containerd: started (pid {proc.pid}) to remove a previous run's containers")
            return proc.pid, _start_time(proc.pid)
        time.sleep(0.1)
    _stop_process("containerd", proc.pid, _start_time(proc.pid))
    return None


def _restore_sysctls(before: dict[str, str | None]) -> list[str]:
    restored = []
    for name, value in before.items():
        now = _sysctl_get(name)
        if value is None or now is None or now == value:
            continue
        if name == "net.ipv4.ip_forward" and _other_bridges_in_use():
            log(f"host: leaving {name}={now}: another bridge with ports forwards (podman?)")
            continue
        _sysctl_path(name).write_text(value)
        restored.append(f"{name}={value}")
    return restored


def _other_bridges_in_use() -> bool:
    return any(p.parent.parent.name != BRIDGE
               for p in Path("/sys/class/net").glob("*/brif/*"))


# --------------------------------------------------------------------------- the cluster


class RealNodeCluster:
    """The control plane on the bridge, the node, kube-scheduler and Argo: what tests and
    `make node-up` run. `start()` cleans up a killed earlier run first and refuses while
    another node runs; `stop()` undoes everything (see `cleanup`)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cp = ControlPlane(workdir=workdir, address=BRIDGE_IP, node_name=NODE_NAME)
        self.node: Node | None = None
        self.built: list[images.Built] = []
        self.timings: dict[str, float] = {}
        self.s3 = S3Server(workdir / "s3", host=BRIDGE_IP, port=S3_PORT)

    def start(self, *, detach: bool = False) -> None:
        check_requirements()
        t0 = time.monotonic()
        # before touching the host: the node's images and the examples' (they name it)
        self.built = images.build(images.NODE_IMAGES + images.EXAMPLE_IMAGES)
        self.timings["images"] = time.monotonic() - t0
        with _host_lock():
            previous = _read_state()
            if previous is not None:
                if _in_use(previous):
                    raise NodeError(
                        f"a real node already runs on this machine (since {previous['started']}"
                        f", owner pid {previous['owner'][0]}, cluster in "
                        f"{previous.get('cluster_dir')}); one node per machine (bridge {BRIDGE}, "
                        f"{POD_CIDR} and its ports are fixed): stop it with `make node-down`")
                log(f"host: a previous run (started {previous.get('started')}) did not stop; "
                    "cleaning up after it")
                cleanup(previous)
            elif Path(f"/sys/class/net/{BRIDGE}").exists() or RUN_DIR.exists():
                log("host: leftovers of a run without a state file; cleaning up")
                cleanup({})
            state = _record_host()
            state["detached"] = detach
            _write_state(state)
            try:
                from harness.workloads import Workloads

                prepare_host(state)
                t1 = time.monotonic()
                self.cp.start(detach=detach)
                self.timings["control plane"] = time.monotonic() - t1
                self.node = Node(self.cp, state)
                self.node.record()
                t1 = time.monotonic()
                self.node.start(self.built)
                self.timings["node"] = time.monotonic() - t1
                self.timings["node Ready after kubelet start"] = self.node.ready_seconds
                t1 = time.monotonic()
                Workloads(self.cp, simulated=False).start(detach=detach)
                self.node.record()
                self.timings["scheduler + Argo"] = time.monotonic() - t1
                t1 = time.monotonic()
                self._start_s3()
                self.timings["S3 server"] = time.monotonic() - t1
                state["complete"] = True
                self.node.record()
            except BaseException:
                self._stop_locked()
                raise
        self.timings["total"] = time.monotonic() - t0
        log("up in " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items()))

    def _start_s3(self) -> None:
        """The S3 server on the bridge, the examples' bucket with their raw data, and a
        Secret manifest of its credentials in the cluster folder (s3-credentials.yaml)."""
        from harness.workspace import EXAMPLES_BUCKET, STORAGE_SECRET

        self.s3.start()
        assert self.s3.proc is not None
        self.cp.pids["s3"] = self.s3.proc.pid  # recorded: `node down` stops it too
        assert self.node is not None
        self.node.record()
        self.s3.create_bucket(EXAMPLES_BUCKET)
        sklearn = next(b for b in self.built if b.name == "example-sklearn")
        self.s3.client().put_object(Bucket=EXAMPLES_BUCKET, Key=DIGITS_KEY,
                                    Body=images.read_file(sklearn, DIGITS_IN_IMAGE))
        (self.workdir / "s3-credentials.yaml").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": STORAGE_SECRET},
            "stringData": {"AWS_ACCESS_KEY_ID": self.s3.access_key,
                           "AWS_SECRET_ACCESS_KEY": self.s3.secret_key}}))
        log(f"S3 server on {S3_ENDPOINT} (versitygw), bucket {EXAMPLES_BUCKET} with "
            f"{DIGITS_KEY}; its Secret: {self.workdir / 's3-credentials.yaml'}")

    def stop(self) -> None:
        with _host_lock():
            self._stop_locked()

    def _stop_locked(self) -> None:
        self.s3.stop()
        state = _read_state()
        cleanup(state, self.node)
        self.cp.stop()


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.node", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_CLUSTER_DIR,
                        help="certificates, kubeconfigs, logs/ (default: .cluster-node)")
    args = parser.parse_args(argv)
    if args.command == "up":
        workdir = args.dir.resolve()
        state = _read_state()
        if state and _in_use(state):
            print(f"# a real node already runs (cluster in {state.get('cluster_dir')})",
                  file=sys.stderr)
            print(f"export KUBECONFIG={Path(state['cluster_dir']) / 'admin.kubeconfig'}")
            return 0
        if workdir.exists():
            shutil.rmtree(workdir)
        cluster = RealNodeCluster(workdir)
        try:
            cluster.start(detach=True)
        except (ControlPlaneError, images.ImageError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={workdir / 'admin.kubeconfig'}")
        return 0
    if args.command == "down":
        try:
            check_requirements()
        except NodeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        with _host_lock():
            state = _read_state()
            if state is None and not Path(f"/sys/class/net/{BRIDGE}").exists() \
                    and not RUN_DIR.exists():
                print("# no real node recorded on this machine", file=sys.stderr)
                return 0
            cleanup(state or {})
        return 0
    state = _read_state()
    if state is None:
        print("down")
        return 1
    running = _running(state)
    print(json.dumps({"cluster_dir": state.get("cluster_dir"), "started": state.get("started"),
                      "running": running,
                      "stopped": sorted(set(state.get("procs", {})) - set(running))}, indent=2))
    return 0 if running and len(running) == len(state.get("procs", {})) else 1


if __name__ == "__main__":
    sys.exit(main())
