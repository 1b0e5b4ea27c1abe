"""`make demo-simulated`: the story of `make demo` without a real node (no root needed): a local
cluster running Argo's own controller, and an MLTask moving through its states under the
operator.

The cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, Argo's
workflow-controller, and kwok playing a GPU node and a CPU node (tests/harness/workloads.py).
kwok runs no containers: pods go Running -> Succeeded on a timer, and the executor stand-in
reports the step outputs Argo's wait container would. Midway, the demo deletes the running
training pod, as when a GPU spot node is reclaimed: Argo retries it and the task shows `retry`.

    python -m harness.demo_simulated [--keep]   # --keep: leave the cluster and operator running
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

from harness.controlplane import REPO, ControlPlane, ControlPlaneError
from harness.operator_proc import OperatorProcess
from harness.workloads import Workloads
from mltask_operator import cli

NS = "demo"
EXAMPLE = REPO / "examples" / "mltask-training.yaml"


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
    parser = argparse.ArgumentParser(prog="python -m harness.demo_simulated")
    parser.add_argument("--keep", action="store_true",
                        help="leave the control plane running afterwards")
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster" / "demo")
    args = parser.parse_args(argv)
    t_start = time.monotonic()

    say("Starting a local cluster: etcd, kube-apiserver, controller-manager, scheduler, "
        "Argo's workflow-controller, kwok nodes")
    existing = ControlPlane.load(args.dir)
    if existing:
        existing.stop()
    shutil.rmtree(args.dir, ignore_errors=True)
    cp = ControlPlane(workdir=args.dir)
    try:
        cp.start(detach=args.keep)
        Workloads(cp).start(detach=args.keep)
    except ControlPlaneError as e:
        cp.stop()
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
        while True:  # pods need the namespace's default ServiceAccount
            try:
                client.CoreV1Api(api).read_namespaced_service_account("default", NS)
                break
            except client.ApiException:
                time.sleep(0.2)
        say(f"kubectl apply -n {NS} -f {EXAMPLE.relative_to(REPO)}")
        body = yaml.safe_load(EXAMPLE.read_text())
        name = body["metadata"]["name"]
        # simulation knobs (kwok / executor stand-in only) of the run step: how long its pod
        # runs, the metrics the training image "writes" and what it "prints" (as
        # examples/images/sklearn-digits does). The download and upload steps are the
        # operator's own (the example leaves them out): their pods run kwok's default second.
        body["spec"]["steps"]["run"].setdefault("env", []).extend([
            {"name": "E2E_DURATION", "value": "8s"},
            {"name": "E2E_METRICS", "value": json.dumps(
                {"accuracy": 0.975, "loss": 0.098, "f1Macro": 0.9749, "epochs": 40})},
            {"name": "E2E_LOG", "value": "\n".join([
                "fitting MLPClassifier: 64 inputs -> hidden 128 (relu) -> 10 classes; adam, "
                "learningRate=0.001, batchSize=32, alpha=0.0001, epochs=40, seed=0",
                *(f"epoch {e:>2}/40  loss {loss:.4f}  train accuracy {train:.4f}  "
                  f"test accuracy {test:.4f}"
                  for e, loss, train, test in ((10, 0.0921, 0.9896, 0.9639),
                                               (20, 0.0252, 1.0, 0.9722),
                                               (30, 0.0113, 1.0, 0.9750),
                                               (40, 0.0068, 1.0, 0.9750))),
                "held-out test split (360 samples): accuracy 0.9750, log loss 0.0980, "
                "macro F1 0.9749; training split: accuracy 1.0000",
                "wrote /mltask/output/model.joblib (37704 bytes, 9610 weights, MLPClassifier)",
            ])},
        ])
        objects.create_namespaced_custom_object("mltask.dev", "v1alpha1", NS, "mltasks", body)
        watcher = Watcher(objects, name)
        watcher.start()

        core = client.CoreV1Api(api)
        lost = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and watcher.last[:1] != ("completed",):
            if not lost:
                run = [p for p in core.list_namespaced_pod(
                    NS, label_selector=f"mltask.dev/task={name}").items
                       if "-run-" in p.metadata.name and p.status.phase == "Running"
                       and p.status.start_time
                       and time.time() - p.status.start_time.timestamp() > 3]
                if run:
                    print(f"        [demo] the GPU spot node reclaims pod {run[0].metadata.name}",
                          flush=True)
                    core.delete_namespaced_pod(run[0].metadata.name, NS)
                    lost = True
            time.sleep(0.2)
        watcher.stop.set()
        watcher.join()

        say(f"kubectl get mltasks -n {NS}")
        print(cp.kubectl("get", "mltasks", "-n", NS, "-o", "wide").stdout)
        st = objects.get_namespaced_custom_object("mltask.dev", "v1alpha1", NS, "mltasks",
                                                  name)["status"]
        say(f"kubectl mltask describe -n {NS} {name}   (the kubectl plugin: steps, outputs, "
            "metrics)")
        sys.stdout.flush()
        cli.main(["--kubeconfig", str(cp.kubeconfig), "-n", NS, "describe", name])
        say(f"kubectl mltask logs -n {NS} {name} --step run   (the run pod's log, through the "
            "API server and kwok's kubelet API)")
        sys.stdout.flush()
        cli.main(["--kubeconfig", str(cp.kubeconfig), "-n", NS, "logs", name, "--step", "run"])
        say(f"kubectl get pods -n {NS} -o wide   (scheduled onto the kwok GPU node)")
        print(cp.kubectl("get", "pods", "-n", NS, "-o", "wide").stdout)
        say("Events")
        print(cp.kubectl("get", "events", "-n", NS, "--field-selector",
                         f"involvedObject.name={name}", "--sort-by=.lastTimestamp",
                         "-o", "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")
              .stdout)
        ok = st.get("status") == "completed"
        say(f"{'Done' if ok else 'FAILED'} in {time.monotonic() - t_start:.0f}s")
        if args.keep:
            print(f"The cluster is still running (Argo, kwok, scheduler). Explore with:\n"
                  f"  export KUBECONFIG={cp.kubeconfig} PATH={REPO / '.venv' / 'bin'}:$PATH\n"
                  f"  kubectl get mlt -A\n  kubectl mltask describe -n {NS} {name}\n"
                  f"Run the operator yourself: .venv/bin/mltask-operator --standalone\n"
                  f"Stop with: make cluster-down CLUSTER_DIR={args.dir}")
        return 0 if ok else 1
    finally:
        op.stop()
        if not args.keep:
            cp.stop()


if __name__ == "__main__":
    sys.exit(main())
