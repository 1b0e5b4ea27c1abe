"""Every string, list and map of both CRDs has a size bound: the operator holds every object in
memory, and the API server's CEL cost estimate of a rule grows with the sizes it cannot bound."""

from __future__ import annotations

from typing import Any

import pytest

from mltask_operator.crdgen import CRDS, CRDSpec, openapi_schema


def unbounded(schema: dict[str, Any], path: str = "") -> list[str]:
    """The paths of `schema` without a size bound: a string without maxLength (an enum or a
    date-time is bounded by what it may be), an array without maxItems, a map
    (additionalProperties) without maxProperties."""
    out: list[str] = []
    kind = schema.get("type")
    if (kind == "string" or schema.get("x-kubernetes-int-or-string")) \
            and "maxLength" not in schema and "enum" not in schema \
            and schema.get("format") != "date-time":
        out.append(path)
    if kind == "array":
        if "maxItems" not in schema:
            out.append(f"{path}[]")
        out += unbounded(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        if "maxProperties" not in schema:
            out.append(f"{path}.*")
        out += unbounded(schema["additionalProperties"], f"{path}.*")
    for name, sub in (schema.get("properties") or {}).items():
        out += unbounded(sub, f"{path}.{name}")
    return out


@pytest.mark.parametrize("spec", CRDS, ids=lambda s: s.kind)
def test_every_string_list_and_map_of_the_crd_is_bounded(spec: CRDSpec) -> None:
    assert unbounded(openapi_schema(spec)) == []


def test_the_walk_finds_each_kind_of_unbounded_path() -> None:
    schema = {"type": "object", "properties": {
        "s": {"type": "string"}, "e": {"type": "string", "enum": ["a"]},
        "t": {"type": "string", "format": "date-time"},
        "q": {"x-kubernetes-int-or-string": True},
        "l": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
        "m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 3}},
        "ok": {"type": "array", "maxItems": 1, "items": {"type": "string", "maxLength": 1}},
    }}
    assert unbounded(schema) == [".s", ".q", ".l[]", ".m.*"]
