"""crds/ is generated from the models: it must not drift, and the schema must stay structural."""

import re
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


@pytest.mark.parametrize(("name", "credential"), [
    ("AWS_SECRET_ACCESS_KEY", True),
    ("HF_TOKEN", True),
    ("GITHUB_TOKEN", True),
    ("WANDB_API_KEY", True),
    ("db_password", True),
    ("apikey", True),
    ("aws.secret.key", True),
    ("private-key", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("hfToken", True),
    ("openaiApiKey", True),
    ("clientSecret", True),
    ("TOKENIZERS_PARALLELISM", False),  # Hugging Face's usual knob, not a credential
    ("tokenizer", False),
    ("max_tokens", False),
    ("numTokens", False),
    ("SECRETS_DIR", False),
    ("learning_rate", False),
    ("epochs", False),
])
def test_credential_names(name: str, credential: bool) -> None:
    """The CEL rule's regex (RE2), checked with Python's re: the syntax both share."""
    from mltask_operator.api.v1alpha1.common import CREDENTIAL_NAME

    assert bool(re.search(CREDENTIAL_NAME, name)) is credential
