"""The kustomize manifests rendered from the chart: no Helm marks (Helm does not own them), a
namespace override moves the Lease with its Role, restricted Pod Security on the namespace."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from harness.chart import pod_env

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
FILES = sorted(p for p in MANIFESTS.rglob("*.yaml") if "argocd" not in p.parts)


def _labels(doc: dict) -> list[dict]:
    template = ((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return [doc["metadata"].get("labels") or {}, template.get("labels") or {}]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_no_helm_labels(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc or doc.get("kind") == "Kustomization":
            continue
        for labels in _labels(doc):
            assert "helm.sh/chart" not in labels, (path, doc["metadata"]["name"])
            assert labels.get("app.kubernetes.io/managed-by") in (None, "kustomize"), \
                (path, doc["metadata"]["name"])


def _kustomize(tmp_path: Path, overlay: str, namespace: str) -> list[dict]:
    """`kubectl kustomize` (the pinned kubectl) of a user's overlay that only sets namespace."""
    from harness.controlplane import BIN_DIR

    base = os.path.relpath(MANIFESTS / "overlays" / overlay, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": namespace, "resources": [base]}))
    out = subprocess.run([str(BIN_DIR / "kubectl"), "kustomize", str(tmp_path)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_a_namespace_override_moves_the_lease_with_its_role(tmp_path: Path) -> None:
    """A user's `namespace: ops` moves the Role for the Lease; the operator then looks for the
    Lease in its pod's namespace (POD_NAMESPACE), not in a namespace written into the env.
    (Only cluster-wide: the single-namespace overlay's Role lives in the watched namespace, which
    such an override would move too.)"""
    from mltask_operator.settings import Settings

    docs = _kustomize(tmp_path, "cluster-wide", "ops")
    role = next(d for d in docs if d["kind"] == "Role"
                and d["metadata"]["name"].endswith("-leader-election"))
    assert role["metadata"]["namespace"] == "ops"
    assert any("leases" in r["resources"] for r in role["rules"])
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["metadata"]["namespace"] == "ops"
    env = pod_env(dep, "mltask-operator-abc")
    assert "mltask-system" not in env.values(), env
    lease = Settings.from_env(env).leader_election
    assert (lease.enabled, lease.namespace) == (True, "ops")
    namespace = next(d for d in docs if d["kind"] == "Namespace"
                     and d["metadata"]["name"] == "ops")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_operators_namespace_enforces_restricted_pod_security() -> None:
    ns = yaml.safe_load((MANIFESTS / "base" / "namespace.yaml").read_text())
    assert ns["metadata"]["labels"] == {"pod-security.kubernetes.io/enforce": "restricted"}
