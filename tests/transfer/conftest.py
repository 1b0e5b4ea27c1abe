"""The transfer suite: the real `mltask-transfer` run as a subprocess against loopback servers.

As in a step pod, against a real S3 server (versitygw, once per session on 127.0.0.1), a Hugging
Face Hub stand-in and an HTTPS server with its own CA.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.hub_standin import HubStandin
from harness.s3server import S3Server
from harness.transfer_cli import SECRET_NAME

REPO = Path(__file__).resolve().parents[2]
_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(tmp_path_factory.mktemp("versitygw") / "data") as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server, request: pytest.FixtureRequest) -> str:
    """A new bucket for the test, named after it."""
    name = request.node.name.lower()
    name = "".join(c if c.isalnum() else "-" for c in name)[:50].strip("-")
    name = f"t{next(_buckets)}-{name}".strip("-")
    s3.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def hub() -> Iterator[HubStandin]:
    standin = HubStandin().start()
    yield standin
    standin.stop()


@pytest.fixture
def env(tmp_path: Path, s3: S3Server) -> dict[str, str]:
    """A step pod's environment: the contract's folders under tmp_path, the S3 server and its
    Secret's keys, nothing of this machine's AWS or proxy settings."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO / "operator"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "MLTASK_TEST_TMP": str(tmp_path),
        "MLTASK_INPUT_DIR": str(tmp_path / "input"),
        "MLTASK_OUTPUT_DIR": str(tmp_path / "output"),
        "MLTASK_RESULT_FILE": str(tmp_path / "meta" / "result.json"),
        "MLTASK_STORAGE_SECRET": SECRET_NAME,
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 from a test
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        **s3.env(),
    }
