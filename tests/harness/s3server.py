"""A real S3 server for the tests and the demo: versitygw, started on a free port, stopped.

versitygw (Apache-2.0) is an S3 gateway over a folder that checks sigv4 signatures.

    with S3Server(tmp_path / "s3") as s3:      # 127.0.0.1; S3Server(..., host="10.244.0.1")
        s3.create_bucket("datasets")
        s3.client().put_object(Bucket="datasets", Key="raw/x.csv", Body=b"1,2")
        s3.env()  # MLTASK_STORAGE_ENDPOINT and the AWS_* keys a step pod would get

The binary is built by tests/tools/build.sh (`make tools`) into the tools' bin folder;
MLTASK_VERSITYGW points at another one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from harness.controlplane import BIN_DIR

ACCESS_KEY = "mltask-test-access"


def binary() -> Path:
    """The versitygw binary, or an error saying how to build it."""
    path = Path(os.environ.get("MLTASK_VERSITYGW") or BIN_DIR / "versitygw")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"versitygw not found at {path}: build it with `make tools` "
                           "(tests/tools/build.sh versitygw) or set MLTASK_VERSITYGW")
    return path


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class S3Server:
    """versitygw serving `data_dir` (one sub-folder per bucket) on `host`:<free port>."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", *, port: int = 0,
                 access_key: str = ACCESS_KEY, secret_key: str | None = None) -> None:
        self.data_dir, self.host = Path(data_dir), host
        self.access_key = access_key
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.fixed_port = port  # 0: a free one
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.versitygw.log"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> S3Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.fixed_port or free_port(self.host)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.data_dir.parent)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(binary()), "--port", f"{self.host}:{self.port}", "--access", self.access_key,
                 "--secret", self.secret_key, "--quiet", "posix", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # outlives a detached `make node-up`
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return self
            except urllib.error.HTTPError:  # any S3 answer (403 for an unsigned request)
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"versitygw did not answer on {self.endpoint}: "
                           f"{self.log_path.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def client(self, secret: str | None = None, endpoint: str | None = None) -> Any:
        """A boto3 S3 client of this server (another `secret` to be refused, another
        `endpoint` to go through a proxy)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key if secret is None else secret,
            config=Config(request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )

    def create_bucket(self, name: str) -> None:
        with contextlib.suppress(self.client().exceptions.BucketAlreadyOwnedByYou):
            self.client().create_bucket(Bucket=name)

    def env(self, secret: str | None = None) -> dict[str, str]:
        """What a step pod gets from the operator and a Secret of these credentials."""
        return {
            "MLTASK_STORAGE_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key if secret is None else secret,
        }
