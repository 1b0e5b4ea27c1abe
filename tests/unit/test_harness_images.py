"""The image builder's pure parts: .dockerignore semantics (what goes into a build and its cache
key), the bases a Dockerfile builds FROM, and OCI archives that containerd imports by name."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from harness import images


@pytest.mark.parametrize(("patterns", "path", "ignored"), [
    (["*", "!operator/"], "operator/pkg/mod.py", False),
    (["*", "!operator/"], "tests/unit/test_x.py", True),
    (["*", "!operator/", "**/__pycache__"], "operator/pkg/__pycache__/m.pyc", True),
    (["**/*.egg-info"], "operator/x.egg-info/PKG-INFO", True),
    ([".cluster*"], ".cluster-node/logs/kubelet.log", True),
    ([".cluster*"], "docs/.cluster", False),
    (["/build"], "build/lib/x", True),
    (["tests/"], "tests", True),
    (["doc?"], "docs/a.md", True),
], ids=lambda v: v if isinstance(v, str) else None)
def test_dockerignore_semantics(tmp_path: Path, patterns: list[str], path: str,
                                ignored: bool) -> None:
    (tmp_path / ".dockerignore").write_text("\n".join(patterns) + "\n")
    assert images._ignored(path, images._ignore_patterns(tmp_path)) is ignored


def test_context_files_and_digest_follow_the_ignore_file(tmp_path: Path) -> None:
    (tmp_path / ".dockerignore").write_text("*\n!app/\n**/__pycache__\n")
    for rel in ("app/main.py", "app/__pycache__/main.pyc", "notes.txt", ".venv/lib/x.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    assert images.context_files(tmp_path) == [tmp_path / "app/main.py"]
    before = images.context_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("changed")  # ignored: same key
    assert images.context_digest(tmp_path) == before
    (tmp_path / "app/main.py").write_text("changed")
    assert images.context_digest(tmp_path) != before


def test_bases_of_the_repo_dockerfile() -> None:
    dockerfile = images.REPO / "Dockerfile"
    assert images._dockerfile_bases(dockerfile, {}) == ["python:3.11.7-slim-bookworm"]
    assert images._dockerfile_bases(dockerfile, {"PYTHON_IMAGE": images.PYTHON_BASE_TAG}) == \
        [images.PYTHON_BASE_TAG]


def test_oci_archive_names_the_image_for_containerd(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    images._write_layer([images.LayerEntry("bin"),
                         images.LayerEntry("bin/tool", b"#!/bin/sh\n", 0o755)], layer)
    archive = tmp_path / "image.oci.tar"
    manifest_digest, config_digest = images.write_oci_archive(
        archive, "registry.example/tool:1.0", {"Entrypoint": ["/bin/tool"]}, layer, "test")
    with tarfile.open(archive) as tar:
        index = json.loads(tar.extractfile("index.json").read())
        blob = tar.extractfile(f"blobs/sha256/{manifest_digest.split(':')[1]}").read()
        names = set(tar.getnames())
    desc = index["manifests"][0]
    assert desc["annotations"] == {"io.containerd.image.name": "registry.example/tool:1.0",
                                   "org.opencontainers.image.ref.name": "1.0"}
    assert desc["digest"] == manifest_digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest = json.loads(blob)
    assert manifest["config"]["digest"] == config_digest
    assert {f"blobs/sha256/{d['digest'].split(':')[1]}" for d in manifest["layers"]} <= names
    # deterministic: the same inputs give the same image
    again = tmp_path / "again.oci.tar"
    assert images.write_oci_archive(again, "registry.example/tool:1.0",
                                    {"Entrypoint": ["/bin/tool"]}, layer, "test") == \
        (manifest_digest, config_digest)
