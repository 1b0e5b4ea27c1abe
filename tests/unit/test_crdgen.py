"""crds/ is generated from the models: it must not drift, and the schema must stay structural."""

from pathlib import Path

import pytest

from mltask_operator import crdgen

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("spec", crdgen.CRDS, ids=lambda s: s.kind)
def test_crds_dir_matches_models(spec: crdgen.CRDSpec) -> None:
    path = REPO / "crds" / crdgen.file_name(spec)
    assert path.exists(), f"{path} missing: run `make generate`"
    assert path.read_text() == crdgen.render(spec), f"{path} drifted: run `make generate`"


@pytest.mark.parametrize("spec", crdgen.CRDS, ids=lambda s: s.kind)
def test_every_field_is_described(spec: crdgen.CRDSpec) -> None:
    assert crdgen.check_descriptions(crdgen.openapi_schema(spec)) == []


def test_union_types_are_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="unions"):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, {}, "x",
                          keep_defaults=True)


def test_untyped_field_is_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="no type"):
        crdgen.structural({"description": "x"}, {}, "spec.x", keep_defaults=True)


def test_status_schema_has_no_defaults() -> None:
    """Defaults under status would be written back by the API server as if observed."""
    schema = crdgen.openapi_schema(crdgen.CRDS[0])["properties"]["status"]

    def walk(node: dict) -> None:
        assert "default" not in node
        for sub in (node.get("properties") or {}).values():
            walk(sub)
        if isinstance(node.get("items"), dict):
            walk(node["items"])

    walk(schema)
