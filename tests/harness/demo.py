"""`make demo`: a local control plane, the operator, and an MLTask moving through its states.

No Argo controller and no kubelet run here, so the Workflow's progress is played by the Argo
stand-in (tests/harness/argo_standin.py), clearly a stand-in: the operator under demo is the
real one, reacting to Workflow changes exactly as on a cluster.

    python -m harness.demo [--keep]     # --keep leaves the control plane and operator running
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from harness import argo_standin as argo_fn
from harness.argo_standin import ArgoStandIn
from harness.controlplane import REPO, ControlPlane, ControlPlaneError
from harness.operator_proc import OperatorProcess

NS = "demo"
EXAMPLE = REPO / "examples" / "mltask-training.yaml"
PAUSE = 1.5


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


class Watcher(threading.Thread):
    """Prints the task's status line every time it changes (like `kubectl get mlt -w`)."""

    def __init__(self, objects: client.CustomObjectsApi, name: str) -> None:
        super().__init__(daemon=True)
        self.objects, self.name, self.stop = objects, name, threading.Event()
        self.last: tuple[Any, ...] = ()
        self.t0 = time.monotonic()

    def run(self) -> None:
        print(f"{'TIME':>6}  {'STATUS':<10} {'STEP':<13} {'ATTEMPT':<8} MESSAGE", flush=True)
        while not self.stop.is_set():
            try:
                st = self.objects.get_namespaced_custom_object(
                    "mltask.dev", "v1alpha1", NS, "mltasks", self.name).get("status") or {}
            except client.ApiException:
                st = {}
            line = (st.get("status"), st.get("executeStep"), st.get("attempt"), st.get("message"))
            if st and line != self.last:
                self.last = line
                print(f"{time.monotonic() - self.t0:5.1f}s  {line[0]:<10} {line[1]:<13} "
                      f"{line[2]!s:<8} {line[3]}", flush=True)
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo")
    parser.add_argument("--keep", action="store_true",
                        help="leave the control plane running afterwards")
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster" / "demo")
    args = parser.parse_args(argv)
    t_start = time.monotonic()

    say("Starting a local control plane (etcd, kube-apiserver, kube-controller-manager)")
    existing = ControlPlane.load(args.dir)
    if existing:
        existing.stop()
    shutil.rmtree(args.dir, ignore_errors=True)
    cp = ControlPlane(workdir=args.dir)
    try:
        cp.start(detach=args.keep)
    except ControlPlaneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"API server {cp.server}; KUBECONFIG={cp.kubeconfig}")
    op = OperatorProcess(cp.kubeconfig, args.dir / "operator.log")
    try:
        say("Installing the MLTask CRD and starting the operator")
        files = sorted((REPO / "crds").glob("*.yaml"))
        cp.kubectl("apply", "--server-side", *[a for f in files for a in ("-f", str(f))])
        cp.wait_established([yaml.safe_load(f.read_text())["metadata"]["name"] for f in files])
        op.start()
        print(f"operator running (log: {op.log_path})")

        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        objects = client.CustomObjectsApi(api)
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
        say(f"kubectl apply -n {NS} -f {EXAMPLE.relative_to(REPO)}")
        body = yaml.safe_load(EXAMPLE.read_text())
        name = body["metadata"]["name"]
        objects.create_namespaced_custom_object("mltask.dev", "v1alpha1", NS, "mltasks", body)
        watcher = Watcher(objects, name)
        watcher.start()

        argo = ArgoStandIn(api)
        wf = f"{name}-1"
        argo.wait_for(NS, wf)
        time.sleep(PAUSE)
        print(f"        [Argo stand-in] Workflow {NS}/{wf} created by the operator; "
              "playing Argo's part")
        script: list[tuple[str, Any, tuple[Any, ...], dict[str, Any]]] = [
            ("download pod runs", argo_fn.run_pod, ("download",), {}),
            ("download pod succeeds", argo_fn.finish_pod, ("download",), {}),
            ("run pod starts on the GPU node", argo_fn.run_pod, ("run",), {}),
            ("the GPU spot node is reclaimed: pod deleted", argo_fn.finish_pod,
             ("run", "Error"), {"message": "pod deleted"}),
            ("Argo retries the run pod", argo_fn.run_pod, ("run",), {}),
            ("run pod succeeds, metrics written", argo_fn.finish_pod, ("run",),
             {"outputs": {"metrics": json.dumps({"accuracy": 0.934, "loss": 0.198})}}),
            ("upload pod runs", argo_fn.run_pod, ("upload",), {}),
            ("upload pod succeeds, result written", argo_fn.finish_pod, ("upload",),
             {"outputs": {"result": json.dumps({
                 "uri": "s3://ml-models/resnet18/resnet18-cifar10.pt", "size": 44_712_345,
                 "sha256": "9f2c" * 16, "id": "resnet18-cifar10-v1"})}}),
        ]
        for label, fn, fargs, fkwargs in script:
            print(f"        [Argo stand-in] {label}", flush=True)
            argo.update(NS, wf, fn, *fargs, **fkwargs)
            time.sleep(PAUSE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and watcher.last[:1] != ("completed",):
            time.sleep(0.2)
        watcher.stop.set()
        watcher.join()

        say(f"kubectl get mltasks -n {NS}")
        print(cp.kubectl("get", "mltasks", "-n", NS, "-o", "wide").stdout)
        st = objects.get_namespaced_custom_object("mltask.dev", "v1alpha1", NS, "mltasks",
                                                  name)["status"]
        say("status.outputs and status.metrics")
        print(yaml.safe_dump({"outputs": st.get("outputs"), "metrics": st.get("metrics")}))
        say("Events")
        print(cp.kubectl("get", "events", "-n", NS, "--field-selector",
                         f"involvedObject.name={name}", "--sort-by=.lastTimestamp",
                         "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
              .stdout)
        ok = st.get("status") == "completed"
        say(f"{'Done' if ok else 'FAILED'} in {time.monotonic() - t_start:.0f}s")
        if args.keep:
            print(f"The control plane is still running. Explore with:\n"
                  f"  export KUBECONFIG={cp.kubeconfig}\n  kubectl get mlt -A\n"
                  f"Run the operator yourself: .venv/bin/mltask-operator --standalone\n"
                  f"Stop with: make cluster-down CLUSTER_DIR={args.dir}")
        return 0 if ok else 1
    finally:
        op.stop()
        if not args.keep:
            cp.stop()


if __name__ == "__main__":
    sys.exit(main())
