"""The container image recipe: multi-stage, pinned base, non-root, version matching the chart."""

from __future__ import annotations

import re
import tomllib

import yaml

from harness.tasks import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _stages() -> list[str]:
    return re.split(r"^FROM .*$", DOCKERFILE, flags=re.M)[1:]


def test_multi_stage_with_a_pinned_base() -> None:
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.M)
    assert len(bases) == 2, bases
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)
    assert default, "the base image is an ARG with a default"
    tag = default.group(1).split(":", 1)[1]
    assert re.match(r"^\d+\.\d+\.\d+-slim-\w+$", tag), f"base not pinned to a patch version: {tag}"


def test_final_stage_runs_as_non_root_without_build_tools() -> None:
    final = _stages()[-1]
    user = re.findall(r"^USER (\S+)$", final, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert int(user[-1].split(":")[0]) >= 1000
    for tool in ("gcc", "build-essential", "apt-get install", "pip wheel"):
        assert tool not in final, f"{tool} in the final image"
    assert "pip uninstall -y pip" in final
    assert "ENTRYPOINT [\"mltask-operator\"]" in final


def test_image_version_matches_project_and_chart() -> None:
    assert re.search(rf"^ARG VERSION={re.escape(VERSION)}$", DOCKERFILE, flags=re.M)
    chart = yaml.safe_load((REPO / "charts" / "mltask-operator" / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    values = yaml.safe_load((REPO / "charts" / "mltask-operator" / "values.yaml").read_text())
    assert not values["image"].get("tag"), "the chart's default tag is its appVersion"
