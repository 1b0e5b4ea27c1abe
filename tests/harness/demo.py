"""`make demo`: the three-stage example pipeline run for real on a real node, as a newcomer
watches it: preprocessing, training and optimization of scikit-learn's handwritten digits, each
task a download -> run -> upload Workflow run by Argo's own controller and executor, the data in
a local S3 server.

The cluster (tests/harness/node.py): etcd, kube-apiserver, controller-manager, scheduler, Argo's
workflow-controller, a kubelet + containerd node, and an S3 server (versitygw) on the node's
bridge; images built here (tests/harness/images.py). Needs root. The first run builds the images
(minutes); later runs reuse them.

    python -m harness.demo [--keep]   # --keep leaves the cluster and operator running
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from harness import images, node
from harness.controlplane import REPO, ControlPlaneError
from harness.operator_proc import OperatorProcess
from harness.pipelines import Pipelines
from harness.tasks import Tasks
from harness.workspace import EXAMPLES_BUCKET, prepare_namespace, stored
from mltask_operator import cli

NS = "demo"
EXAMPLE = REPO / "examples" / "pipeline-digits.yaml"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


class Watcher(threading.Thread):
    """Prints a line each time the pipeline or one of its tasks changes status, step or
    message (like `kubectl get mlp,mlt -w`)."""

    def __init__(self, pipelines: Pipelines, tasks: Tasks, name: str) -> None:
        super().__init__(daemon=True)
        self.pipelines, self.tasks, self.name = pipelines, tasks, name
        self.stop, self.t0 = threading.Event(), time.monotonic()
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.pipeline_status: str | None = None

    def show(self, who: str, st: dict[str, Any], extra: str) -> None:
        line = (st.get("status"), st.get("executeStep") or extra, st.get("message"))
        if st and self.seen.get(who) != line:
            self.seen[who] = line
            print(f"{time.monotonic() - self.t0:6.1f}s  {who:<18} {line[0] or '':<10} "
                  f"{line[1] or '':<13} {line[2] or ''}", flush=True)

    def run(self) -> None:
        print(f"{'TIME':>7}  {'OBJECT':<18} {'STATUS':<10} {'STEP':<13} MESSAGE", flush=True)
        while not self.stop.is_set():
            try:
                st = self.pipelines.get(self.name).get("status") or {}
                self.pipeline_status = st.get("status")
                self.show(f"pipeline/{self.name}", st, st.get("progress") or "")
                for task, body in sorted(self.pipelines.children().items()):
                    self.show(task, body.get("status") or {}, "")
            except client.ApiException:
                pass
            time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo")
    parser.add_argument("--keep", action="store_true",
                        help="leave the cluster and the operator running afterwards")
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster-node",
                        help="the cluster's folder (certificates, kubeconfig, logs)")
    args = parser.parse_args(argv)
    t_start = time.monotonic()

    say("Starting a cluster with a real node: etcd, kube-apiserver, controller-manager, "
        "scheduler, Argo's workflow-controller, kubelet + containerd, an S3 server "
        "(the first run builds the images: a few minutes)")
    shutil.rmtree(args.dir, ignore_errors=True)
    cluster = node.RealNodeCluster(args.dir)
    try:
        cluster.start(detach=args.keep)
    except (ControlPlaneError, images.ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    cp = cluster.cp
    print(f"API server {cp.server}; KUBECONFIG={cp.kubeconfig}")
    op = OperatorProcess(cp.kubeconfig, args.dir / "operator.log", env={
        "MLTASK_TRANSFER_IMAGE": images.OPERATOR_TAG,
        "MLTASK_TRANSFER_IMAGE_PULL_POLICY": "IfNotPresent"})
    ok = False
    try:
        say("Installing the CRDs and starting the operator (its download and upload steps: "
            f"{images.OPERATOR_TAG}, built from the Dockerfile)")
        files = sorted((REPO / "crds").glob("*.yaml"))
        cp.kubectl("apply", "--server-side", *[a for f in files for a in ("-f", str(f))])
        cp.wait_established([yaml.safe_load(f.read_text())["metadata"]["name"] for f in files])
        op.start()
        if args.keep and op.proc is not None and cluster.node is not None:
            cp.pids["mltask-operator"] = op.proc.pid  # `make node-down` stops it too
            cluster.node.record()
        print(f"operator running (log: {op.log_path})")

        api = config.new_client_from_config(config_file=str(cp.kubeconfig))
        say(f"Namespace {NS}: Secret s3-credentials (the S3 server's keys) and Argo's executor "
            "Role; the raw data is in "
            f"s3://{EXAMPLES_BUCKET}/{node.DIGITS_KEY} (scikit-learn's digits.csv.gz)")
        prepare_namespace(api, NS, cluster.s3)
        say(f"kubectl apply -n {NS} -f {EXAMPLE.relative_to(REPO)}")
        body = yaml.safe_load(EXAMPLE.read_text())
        name = body["metadata"]["name"]
        pipelines, tasks = Pipelines(api, NS), Tasks(api, NS)
        pipelines.create(body)
        watcher = Watcher(pipelines, tasks, name)
        watcher.start()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and watcher.pipeline_status not in (
                "completed", "failed", "stopped"):
            time.sleep(0.5)
        time.sleep(1)
        watcher.stop.set()
        watcher.join()

        say(f"kubectl get mlp,mlt -n {NS}")
        print(cp.kubectl("get", "pipelines,mltasks", "-n", NS).stdout)
        base = ["--kubeconfig", str(cp.kubeconfig), "-n", NS]
        say(f"kubectl mltask describe -n {NS} {name}-train   (the kubectl plugin)")
        sys.stdout.flush()
        cli.main([*base, "describe", f"{name}-train"])
        say(f"kubectl mltask logs -n {NS} {name}-train --step run   (the training, as it ran)")
        sys.stdout.flush()
        cli.main([*base, "logs", f"{name}-train", "--step", "run"])
        say(f"kubectl mltask logs -n {NS} {name}-optimize --step download   (the operator's "
            "own download step: two inputs, handed on by the pipeline)")
        sys.stdout.flush()
        cli.main([*base, "logs", f"{name}-optimize", "--step", "download"])
        say(f"What the tasks stored in s3://{EXAMPLES_BUCKET} (read back from the S3 server; "
            "sha256 and size as status.outputs reports them)")
        for task, child in sorted(pipelines.children().items()):
            out = (child.get("status") or {}).get("outputs") or {}
            if out.get("uri"):
                data = stored(cluster.s3, out["uri"])
                same = (hashlib.sha256(data).hexdigest() == out.get("sha256")
                        and len(data) == out.get("size"))
                print(f"  {task:<16} {out['uri']}  {len(data):>7} bytes  "
                      f"sha256 {hashlib.sha256(data).hexdigest()[:16]}...  "
                      f"{'= status.outputs' if same else '!= status.outputs'}")
        say("Metrics the run steps wrote (status.metrics)")
        for task, child in sorted(pipelines.children().items()):
            metrics = (child.get("status") or {}).get("metrics") or {}
            shown = {k: metrics[k] for k in ("samples", "accuracy", "loss", "baselineAccuracy",
                                             "compressionRatio", "sizeBytes") if k in metrics}
            print(f"  {task:<16} {shown}")
        ok = watcher.pipeline_status == "completed"
        say(f"{'Done' if ok else 'FAILED'} in {time.monotonic() - t_start:.0f}s")
        if args.keep:
            print(f"The cluster is still running. Explore with:\n"
                  f"  export KUBECONFIG={cp.kubeconfig} PATH={REPO / '.venv' / 'bin'}:$PATH\n"
                  f"  kubectl get mlp,mlt -n {NS}\n  kubectl mltask describe -n {NS} "
                  f"pipeline/{name}\n"
                  f"Stop everything with: make node-down")
        return 0 if ok else 1
    finally:
        if not args.keep:
            op.stop()
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
