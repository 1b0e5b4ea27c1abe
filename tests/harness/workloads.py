"""Workloads beside the test control plane: real scheduling and real Argo, with simulated nodes.

Adds to a running `ControlPlane`:
- kube-scheduler (kwok does not schedule);
- kwok, playing the kubelets of fake nodes — a GPU node (`nvidia.com/gpu: 8`, tainted
  `nvidia.com/gpu:NoSchedule`, labelled `nvidia.com/gpu.present=true`) and a CPU node — with the
  stages in `kwok/stages.yaml` that take Workflow pods through Running to Succeeded or Failed;
- a default StorageClass served by the controller manager's hostPath provisioner, so the
  tasks' working-volume claims bind;
- Argo's own workflow-controller, out of cluster, with its ConfigMap in namespace `argo`;
- the executor stand-in (`harness.executor_standin`), which reports step outputs as Argo's
  wait container would, and writes the pods' logs, which kwok serves on the kubelet API (the
  nodes' address is 127.0.0.1 and their kubelet port kwok's), so `kubectl logs` works.

With `simulated=False` (a real node, `harness.node`) only kube-scheduler and Argo's controller
start: no kwok, no stand-in, no hostPath StorageClass; the node brings its own storage, and Argo's
default executor image (quay.io/argoproj/argoexec:<version>, imported into the node) runs for
real.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from harness.controlplane import (
    CACHE,
    ControlPlane,
    ControlPlaneError,
    free_port,
    write_kubeconfig,
)

HERE = Path(__file__).resolve().parent
ARGO_NAMESPACE = "argo"
WORKLOAD_BINARIES = ("kube-scheduler", "kwok", "workflow-controller")
KWOK_LOGS_CRD = CACHE / "kwok-crds" / "kwok.x-k8s.io_logs.yaml"  # copied by build.sh

NODES: list[dict[str, Any]] = [
    {
        "name": "kwok-gpu-0",
        "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-A100",
                   "node.kubernetes.io/instance-type": "p4d.24xlarge"},
        "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        "capacity": {"cpu": "96", "memory": "1152Gi", "pods": "110", "nvidia.com/gpu": "8"},
    },
    {
        "name": "kwok-cpu-0",
        "labels": {"node.kubernetes.io/instance-type": "m6i.8xlarge", "pool": "cpu"},
        "taints": [],
        "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
    },
]


def node_body(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec["name"],
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": spec["name"], "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "type": "kwok", **spec["labels"]},
        },
        "spec": {"taints": spec["taints"]},
        "status": {"allocatable": spec["capacity"], "capacity": spec["capacity"]},
    }


class Workloads:
    def __init__(self, cp: ControlPlane, *, simulated: bool = True) -> None:
        self.cp = cp
        self.simulated = simulated  # kwok nodes and the executor stand-in

    def start(self, *, detach: bool = False) -> None:
        cp = self.cp
        binaries = WORKLOAD_BINARIES if self.simulated else ("kube-scheduler",
                                                              "workflow-controller")
        missing = [b for b in binaries if not (cp.bin_dir / b).exists()]
        if self.simulated and not KWOK_LOGS_CRD.exists():
            missing.append(str(KWOK_LOGS_CRD))
        if missing:
            raise ControlPlaneError(
                f"Missing binaries in {cp.bin_dir}: {', '.join(missing)}; run `make tools`.")
        self._apply_setup()
        self._start_scheduler(detach)
        if self.simulated:
            self._start_kwok(detach)
        self._start_argo(detach)
        if self.simulated:
            self._start_executor_standin(detach)
            self._wait_nodes_ready()
        cp._save_state()

    # -- objects

    def _apply_setup(self) -> None:
        docs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ARGO_NAMESPACE}},
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "workflow-controller-configmap", "namespace": ARGO_NAMESPACE},
             "data": {"executor": "imagePullPolicy: IfNotPresent\n",
                      # a free port: Argo's default (9090) is taken by another cluster's
                      # controller when two test sessions run at once, and it panics
                      "metricsConfig": f"port: {free_port()}\n"}},
        ]
        if self.simulated:
            docs += [
                {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                 "metadata": {"name": "hostpath", "annotations": {
                     "storageclass.kubernetes.io/is-default-class": "true"}},
                 "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete",
                 "volumeBindingMode": "Immediate"},
                *(node_body(n) for n in NODES),
            ]
        path = self.cp.workdir / "workloads-setup.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        files = ["-f", str(path)] + (["-f", str(KWOK_LOGS_CRD)] if self.simulated else [])
        self.cp.kubectl("apply", "--server-side", "--field-manager=mltask-test-harness", *files)
        if self.simulated:
            self.cp.wait_established(
                [yaml.safe_load(KWOK_LOGS_CRD.read_text())["metadata"]["name"]])

    # -- processes

    def _start_scheduler(self, detach: bool) -> None:
        cp = self.cp
        kubeconfig = cp.workdir / "scheduler.kubeconfig"
        write_kubeconfig(kubeconfig, cp.server, cp.certs / "ca.crt", cp.certs / "scheduler.crt",
                         cp.certs / "scheduler.key", "system:kube-scheduler")
        cp._spawn("kube-scheduler", [
            str(cp.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_port()}",
            # A pod Argo makes before its task's working volume is bound waits for the claim's
            # binding event; once, that event was missed and the pod waited the default 5
            # minutes in the unschedulable queue. Here it is tried again within 15 s.
            "--pod-max-in-unschedulable-pods-duration=15s",
            "-v=1",
        ], detach)

    def _start_kwok(self, detach: bool) -> None:
        cp = self.cp
        port = free_port()  # the nodes' kubelet port: the API server reaches kwok there
        cp._spawn("kwok", [
            str(cp.bin_dir / "kwok"),
            f"--kubeconfig={cp.kubeconfig}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--cidr=10.0.0.1/16",
            "--node-ip=127.0.0.1",
            f"--node-port={port}",
            f"--server-address=127.0.0.1:{port}",
            "--enable-crds=Logs",
            f"--config={HERE / 'kwok' / 'stages.yaml'}",
        ], detach)

    def _start_argo(self, detach: bool) -> None:
        cp = self.cp
        kubeconfig = cp.workdir / "argo.kubeconfig"
        cfg = yaml.safe_load(cp.kubeconfig.read_text())
        cfg["contexts"][0]["context"]["namespace"] = ARGO_NAMESPACE
        kubeconfig.write_text(yaml.safe_dump(cfg))
        cp._spawn("workflow-controller", [
            str(cp.bin_dir / "workflow-controller"),
            "--configmap=workflow-controller-configmap",
            "--loglevel=info",
            "--workflow-workers=4",
            "--pod-cleanup-workers=2",
            "--qps=50", "--burst=100",
        ], detach, env={
            "KUBECONFIG": str(kubeconfig),
            "LEADER_ELECTION_DISABLE": "true",
            # Argo requeues a Workflow every 10 s by default; a test cluster wants it faster
            "DEFAULT_REQUEUE_TIME": "1s",
            # a pod deleted mid-step leaves an unfinished task result; don't wait 2 minutes
            "RECENTLY_DELETED_POD_DURATION": "5s",
            # Argo re-creates a pod that vanishes within this time of starting; only later
            # losses are "pod deleted" errors (default 10 s; shorter keeps the tests short)
            "RECENTLY_STARTED_POD_DURATION": "2s",
            # a pod's self-reported progress reaches its node every minute by default
            "ARGO_PROGRESS_PATCH_TICK_DURATION": "5s",
        })

    def _start_executor_standin(self, detach: bool) -> None:
        cp = self.cp
        pythonpath = os.pathsep.join([str(HERE.parent), str(HERE.parents[1] / "operator")])
        cp._spawn("executor-standin", [
            sys.executable, "-m", "harness.executor_standin", f"--kubeconfig={cp.kubeconfig}",
            f"--logs-dir={cp.workdir / 'pod-logs'}",
        ], detach, env={"PYTHONPATH": pythonpath})

    def _wait_nodes_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        names = [n["name"] for n in NODES]
        while time.monotonic() < deadline:
            self.cp._check_alive()
            ready = []
            for name in names:
                status, body = self.cp.get(f"/api/v1/nodes/{name}")
                if status == 200:
                    conds = (json.loads(body).get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                        ready.append(name)
            if len(ready) == len(names):
                return
            time.sleep(0.25)
        raise ControlPlaneError(f"kwok nodes not Ready after {timeout}s; see "
                                f"{self.cp.log('kwok')}")
