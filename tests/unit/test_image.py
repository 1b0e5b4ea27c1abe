"""The container image recipe: multi-stage, pinned base, dependencies pinned to the tested venv in
a virtual environment (so the same file builds on the official python image and on Debian's own
Python), non-root, no hard-coded ports, version matching the chart. These read the recipe as
text; tests/node builds it for real with buildah (FROM Debian's Python, tests/harness/images.py)
and runs the image on a real node."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from types import ModuleType

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness import images
from harness.tasks import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
LOCK = (REPO / "requirements.lock").read_text()


def _stages() -> list[str]:
    return re.split(r"^FROM .*$", DOCKERFILE, flags=re.M)[1:]


def _instructions(stage: str) -> list[str]:
    """Instructions with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(
        line for line in stage.splitlines() if not line.lstrip().startswith("#")))
    return [line.strip() for line in text.splitlines() if line.strip()]


def _locker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "requirements_lock", REPO / "tests" / "tools" / "requirements_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_multi_stage_with_a_pinned_base() -> None:
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, flags=re.M)
    assert len(bases) == 2, bases
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)
    assert default, "the base image is an ARG with a default"
    tag = default.group(1).split(":", 1)[1]
    assert re.match(r"^\d+\.\d+\.\d+-slim-\w+$", tag), f"base not pinned to a patch version: {tag}"
    assert "digest" in DOCKERFILE.split("ARG PYTHON_IMAGE")[0], \
        "the header says why there is no digest and how to add one"


def test_base_python_is_the_tested_one() -> None:
    image = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)\.", DOCKERFILE, flags=re.M)
    locked = re.search(r"\(Python (\d+\.\d+)\)", LOCK)
    assert image and locked and image.group(1) == locked.group(1), \
        "the image runs the Python minor version requirements.lock was made with"


def test_dependencies_are_installed_from_the_lock_in_both_stages() -> None:
    build, final = (_instructions(s) for s in _stages())
    wheel = [i for i in build if i.startswith("RUN pip wheel")]
    assert wheel and "--constraint requirements.lock" in wheel[0], build
    assert any("requirements.lock" in i for i in build if i.startswith("COPY"))
    install = [i for i in final if i.startswith("RUN") and "pip install" in i]
    assert install and "--no-index" in install[0] and \
        "--constraint /tmp/requirements.lock" in install[0], final


def test_both_stages_install_into_a_venv_on_path() -> None:
    """Debian's system Python refuses pip (PEP 668), the official image's accepts it: a venv at
    /opt/mltask in both stages works on either, and its bin comes first on PATH."""
    build, final = (_instructions(s) for s in _stages())
    for stage in (build, final):
        assert [i for i in stage if "python3 -m venv /opt/mltask" in i], stage
        assert "ENV PATH=/opt/mltask/bin:$PATH" in stage, stage
    wheel = next(i for i in build if i.startswith("RUN pip wheel"))
    assert build.index("ENV PATH=/opt/mltask/bin:$PATH") < build.index(wheel), \
        "the build stage's pip is the venv's"
    assert all("/opt/mltask/bin/pip" in i for i in final if i.startswith("RUN") and "pip" in i), \
        "the final stage names the venv's pip"


def test_build_context_is_what_the_dockerfile_copies() -> None:
    """.dockerignore lets in exactly the COPY sources: the context (and the image cache key of
    tests/harness/images.py) changes only when they do."""
    sources = {src.rstrip("/") for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE,
                                                     flags=re.M)
               for src in line.split()[:-1]}
    top = {path.relative_to(REPO).parts[0] for path in images.context_files(REPO)}
    assert top == sources, (top, sources)
    assert not [p for p in images.context_files(REPO) if "__pycache__" in p.parts]


def test_lock_pins_every_runtime_dependency_exactly() -> None:
    pins = {}
    for line in LOCK.splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.match(r"^[0-9][0-9A-Za-z.+!-]*$", version), line
            pins[canonicalize_name(name)] = version
    for dep in PYPROJECT["project"]["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} outside {dep}"
    assert not {"pytest", "ruff", "lupa", "cryptography"} & set(pins), "no test dependencies"


def test_lock_matches_the_tested_venv() -> None:
    assert _locker().render() == LOCK, "requirements.lock is stale: run `make lock`"


def test_final_stage_runs_as_non_root_without_build_tools() -> None:
    final = _stages()[-1]
    user = re.findall(r"^USER (\S+)$", final, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert int(user[-1].split(":")[0]) >= 1000
    for tool in ("gcc", "build-essential", "apt-get install", "pip wheel"):
        assert tool not in final, f"{tool} in the final image"
    assert "pip uninstall -y pip" in final
    assert "ENTRYPOINT [\"mltask-operator\"]" in final


def test_no_command_fixes_the_ports() -> None:
    """MLTASK_HEALTH_PORT and MLTASK_METRICS_PORT work outside the chart: nothing in the
    image passes --liveness or a port."""
    instructions = _instructions(_stages()[-1])
    assert not [i for i in instructions if i.startswith("CMD")], instructions
    entry = next(i for i in instructions if i.startswith("ENTRYPOINT"))
    assert entry == 'ENTRYPOINT ["mltask-operator"]'
    assert "--liveness" not in "\n".join(instructions)


def test_image_version_matches_project_and_chart() -> None:
    assert re.search(rf"^ARG VERSION={re.escape(VERSION)}$", DOCKERFILE, flags=re.M)
    chart = yaml.safe_load((REPO / "charts" / "mltask-operator" / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION
    values = yaml.safe_load((REPO / "charts" / "mltask-operator" / "values.yaml").read_text())
    assert not values["image"].get("tag"), "the chart's default tag is its appVersion"
