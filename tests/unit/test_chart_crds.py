"""The Helm chart's CRDs are crdgen's output, byte for byte, like crds/: neither may drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltask_operator import crdgen

REPO = Path(__file__).resolve().parents[2]
CHART_CRDS = REPO / "charts" / "mltask-operator" / "crds"


@pytest.mark.parametrize("name", sorted(crdgen.rendered()))
def test_rendered_crd_equals_chart_and_crds_dir(name: str) -> None:
    text = crdgen.rendered()[name]
    for path in (REPO / "crds" / name, CHART_CRDS / name):
        assert path.exists(), f"{path} missing: run `make generate`"
        assert path.read_text() == text, f"{path} drifted from the models: run `make generate`"


def test_chart_has_no_stray_crds() -> None:
    assert {p.name for p in CHART_CRDS.iterdir()} == set(crdgen.rendered())


def test_check_reports_drift_in_any_out_dir(tmp_path: Path, capsys) -> None:
    good, bad = tmp_path / "crds", tmp_path / "chart-crds"
    assert crdgen.main(["--out", str(good), "--out", str(bad)]) == 0
    assert crdgen.main(["--check", "--out", str(good), "--out", str(bad)]) == 0
    name = sorted(crdgen.rendered())[0]
    (bad / name).write_text((bad / name).read_text().replace("MLTask", "MLTusk", 1))
    assert crdgen.main(["--check", "--out", str(good), "--out", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad / name) in err and str(good / name) not in err
