"""A stand-in for a CSI driver on the real test node: `local` volumes, one directory per claim.

No CSI driver is built here, and neither in-tree choice fits: the controller manager's hostPath
provisioner makes 0750 root directories, and the kubelet applies a pod's `fsGroup` to `local`
volumes but not to `hostPath` ones, so non-root steps (uid 65532) could not write. This process
watches PersistentVolumeClaims of its StorageClass and, for each pending one, makes a
directory under --dir (0750 root:root, like the real thing) and a `local` PersistentVolume
bound to the claim, with node affinity to the node. The kubelet then chowns it to the pod's
fsGroup. When a claim is deleted and its volume Released, it removes the directory and the
volume (reclaim policy Delete). Started by harness.node; its log is the cluster's
logs/local-provisioner.log.

    python -m harness.local_provisioner --kubeconfig K --node N --dir D \
        --storage-class C --provisioner P
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

RESYNC_SECONDS = 5


def log(message: str) -> None:
    print(f"[local-provisioner] {message}", flush=True)


class Provisioner:
    def __init__(self, api: client.ApiClient, node: str, root: Path, storage_class: str,
                 name: str) -> None:
        self.core = client.CoreV1Api(api)
        self.node, self.root, self.storage_class, self.name = node, root, storage_class, name

    def reconcile(self) -> None:
        for pvc in self.core.list_persistent_volume_claim_for_all_namespaces().items:
            if (pvc.spec.storage_class_name == self.storage_class and not pvc.spec.volume_name
                    and pvc.status.phase == "Pending" and not pvc.metadata.deletion_timestamp):
                self.provision(pvc)
        for pv in self.core.list_persistent_volume().items:
            annotations = pv.metadata.annotations or {}
            if (annotations.get("pv.kubernetes.io/provisioned-by") == self.name
                    and pv.status.phase in ("Released", "Failed")
                    and pv.spec.persistent_volume_reclaim_policy == "Delete"):
                self.delete(pv)

    def provision(self, pvc: Any) -> None:
        name = f"pvc-{pvc.metadata.uid}"
        path = self.root / name
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
        body = {
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name,
                         "annotations": {"pv.kubernetes.io/provisioned-by": self.name}},
            "spec": {
                "capacity": {"storage": pvc.spec.resources.requests["storage"]},
                "accessModes": pvc.spec.access_modes,
                "volumeMode": pvc.spec.volume_mode or "Filesystem",
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": self.storage_class,
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": pvc.metadata.namespace, "name": pvc.metadata.name,
                             "uid": pvc.metadata.uid},
                "local": {"path": str(path)},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In",
                     "values": [self.node]}]}]}},
            },
        }
        try:
            self.core.create_persistent_volume(body)
        except client.ApiException as e:
            if e.status != 409:
                raise
            return
        log(f"Created PersistentVolume {name} ({path}) for PersistentVolumeClaim "
            f"{pvc.metadata.namespace}/{pvc.metadata.name}")

    def delete(self, pv: Any) -> None:
        path = Path(pv.spec.local.path) if pv.spec.local else None
        if path is not None and path.parent == self.root:
            shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(client.ApiException):
            self.core.delete_persistent_volume(pv.metadata.name)
            log(f"Deleted PersistentVolume {pv.metadata.name} and {path}")


def _watch(list_fn: Any, events: queue.Queue[str], kind: str) -> None:
    """Put `kind` on the queue for every event; re-watch forever (errors logged)."""
    while True:
        try:
            for _ in watch.Watch().stream(list_fn, timeout_seconds=60):
                events.put(kind)
        except Exception as e:  # noqa: BLE001 - a watch that breaks is restarted
            log(f"Watch of {kind} failed ({e}); restarting")
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.local_provisioner",
                                     description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--node", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--storage-class", required=True)
    parser.add_argument("--provisioner", required=True)
    args = parser.parse_args(argv)
    api = config.new_client_from_config(config_file=args.kubeconfig)
    provisioner = Provisioner(api, args.node, args.dir, args.storage_class, args.provisioner)
    core = client.CoreV1Api(api)
    events: queue.Queue[str] = queue.Queue()
    for fn, kind in ((core.list_persistent_volume_claim_for_all_namespaces, "claims"),
                     (core.list_persistent_volume, "volumes")):
        threading.Thread(target=_watch, args=(fn, events, kind), daemon=True).start()
    log(f"Watching PersistentVolumeClaims of StorageClass {args.storage_class} for node "
        f"{args.node}, volumes in {args.dir}")
    while True:
        try:
            provisioner.reconcile()
        except Exception as e:  # noqa: BLE001 - keep serving; the next event retries
            log(f"Reconcile failed: {e}")
        with contextlib.suppress(queue.Empty):
            events.get(timeout=RESYNC_SECONDS)
            while not events.empty():  # one reconcile for a burst of events
                events.get_nowait()


if __name__ == "__main__":
    sys.exit(main())
