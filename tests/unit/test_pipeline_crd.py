"""The generated Pipeline CRD as installed (crds/): the columns `kubectl get pipelines` shows."""

from __future__ import annotations

from pathlib import Path

import yaml

CRD = Path(__file__).resolve().parents[2] / "crds" / "mltask.dev_pipelines.yaml"


def test_printer_columns_status_progress_age_duration() -> None:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    default = [(c["name"], c["type"], c["jsonPath"]) for c in cols.values()
               if not c.get("priority")]
    assert default == [("Status", "string", ".status.status"),
                       ("Progress", "string", ".status.progress"),
                       ("Age", "date", ".metadata.creationTimestamp"),
                       ("Duration", "string", ".status.duration")]
    assert (cols["Message"]["jsonPath"], cols["Message"]["priority"]) == (".status.message", 1)
    assert crd["spec"]["names"]["shortNames"] == ["mlp"]
