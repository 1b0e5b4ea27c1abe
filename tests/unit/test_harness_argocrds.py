"""The Argo CRD patch touches only the two non-structural spots."""

from harness.argocrds import OPEN_OBJECT, make_structural


def test_patches_inline_and_inner_steps_only() -> None:
    schema = {
        "properties": {
            "dag": {"properties": {"tasks": {"items": {"properties": {
                "inline": {}, "name": {"type": "string"}}}}}},
            "steps": {"type": "array", "items": {"type": "array"}},
            "other": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        }
    }
    assert make_structural(schema) == 2
    task = schema["properties"]["dag"]["properties"]["tasks"]["items"]["properties"]
    assert task["inline"] == OPEN_OBJECT
    assert task["name"] == {"type": "string"}
    assert schema["properties"]["steps"]["items"]["items"] == OPEN_OBJECT
    assert schema["properties"]["other"]["items"]["items"] == {"type": "string"}


def test_is_idempotent() -> None:
    schema = {"properties": {"inline": {}}}
    make_structural(schema)
    assert make_structural(schema) == 0
