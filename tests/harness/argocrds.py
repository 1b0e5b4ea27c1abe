"""Argo Workflows' full-schema CRDs, made installable on a structural-schema API server.

Argo ships "full" CRDs (manifests/base/crds/full in the pinned argo-workflows module) that the
API server rejects as they are: two recursive spots have no structural schema (a DAG task's or
step's `inline` template is `{}`, and the inner list of a `steps` template has no `items`). This
module marks exactly those two spots `x-kubernetes-preserve-unknown-fields` and leaves every
other field of the schema as Argo wrote it, so the API server validates the rest of every
Workflow. The operator writes DAG templates without `inline`, so nothing it writes falls in
the unvalidated spots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

OPEN_OBJECT = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def make_structural(node: Any) -> int:
    """Patch the non-structural spots in place; return how many were patched."""
    patched = 0
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            if props.get("inline") == {}:
                props["inline"] = dict(OPEN_OBJECT)
                patched += 1
            steps = props.get("steps")
            if (
                isinstance(steps, dict)
                and steps.get("type") == "array"
                and isinstance(steps.get("items"), dict)
                and steps["items"].get("type") == "array"
                and "items" not in steps["items"]
            ):
                steps["items"]["items"] = dict(OPEN_OBJECT)
                patched += 1
        for value in node.values():
            patched += make_structural(value)
    elif isinstance(node, list):
        for value in node:
            patched += make_structural(value)
    return patched


def write_installable(src_dir: Path, dest_dir: Path) -> list[Path]:
    """Copy Argo's CRDs from `src_dir` to `dest_dir`, patched to be structural."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for src in sorted(src_dir.glob("argoproj.io_*.yaml")):
        doc = yaml.load(src.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        make_structural(doc)
        dest = dest_dir / src.name
        dest.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
        out.append(dest)
    return out
