"""Generated files agree with their sources: crds/, the chart's CRDs and manifests/."""

from __future__ import annotations

import pytest

from harness.tasks import REPO
from mltask_operator import crdgen


@pytest.mark.parametrize("name", sorted(crdgen.rendered()))
def test_chart_crds_match_models_and_crds_dir(name: str) -> None:
    text = crdgen.rendered()[name]
    assert (REPO / "crds" / name).read_text() == text, "run `make generate`"
    assert (REPO / "charts" / "mltask-operator" / "crds" / name).read_text() == text, \
        "run `make generate`"


def test_chart_has_no_stray_crds() -> None:
    files = {p.name for p in (REPO / "charts" / "mltask-operator" / "crds").glob("*.yaml")}
    assert files == set(crdgen.rendered())
