"""The kustomize manifests rendered from the chart carry no Helm marks: Helm does not own them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

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
