"""mltask-transfer for https:// and hf:// downloads.

https:// against a loopback server with a CA made in the test; hf:// against the Hub stand-in,
since the real Hub cannot be reached here: revisions, sub-paths, private repos, retries, and
where the files land.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.httpsserver import HttpsServer
from harness.hub_standin import HubStandin
from harness.transfer_cli import files, run_transfer

# -- https:// ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    server = HttpsServer(tmp_path_factory.mktemp("tls"), {
        "/files/digits.csv": b"0,1\n" * 50_000, "/files/raw.tgz": b"\x1f\x8bnot really"}).start()
    yield server
    server.stop()


def test_https_download_with_a_custom_ca_retries_a_503(web: HttpsServer, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    web.fail_next(1)
    run = run_transfer("download", {**env, "SSL_CERT_FILE": str(web.ca),
                                    "MLTASK_INPUT_DATASET_URI": web.url("/files/digits.csv?sig=x")})
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {"dataset/digits.csv": b"0,1\n" * 50_000}
    url = web.url("/files/digits.csv")
    assert f"retry: GET {url}?...: HTTP 503; attempt 2 of 8 in 0.0 s" in run.stdout
    assert f"download {url}?...: 195.3 KiB of 195.3 KiB (100%)" in run.stdout
    assert "sig=x" not in run.stdout + run.stderr  # a presigned URL's query is never logged


def test_https_without_the_ca_fails_at_once_saying_so(web: HttpsServer, env: dict[str, str]
                                                      ) -> None:
    uri = web.url("/files/digits.csv")
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": uri})
    assert run.returncode == 1, run
    assert "the server's TLS certificate is not trusted" in run.last_line
    assert "set SSL_CERT_FILE to a CA bundle that signs it" in run.last_line
    assert "retry:" not in run.stdout


def test_https_404_names_the_url(web: HttpsServer, env: dict[str, str]) -> None:
    run = run_transfer("download", {**env, "SSL_CERT_FILE": str(web.ca),
                                    "MLTASK_INPUT_DATASET_URI": web.url("/files/nope.csv")})
    assert run.returncode == 1, run
    assert run.last_line == (f"mltask-transfer download: download {web.url('/files/nope.csv')} "
                             "failed: HTTP 404 Not Found (no such file on the server)")


def test_https_not_an_archive_when_unpack_is_asked(web: HttpsServer, env: dict[str, str],
                                                    tmp_path: Path) -> None:
    run = run_transfer("download", {**env, "SSL_CERT_FILE": str(web.ca),
                                    "MLTASK_INPUT_DATASET_URI": web.url("/files/raw.tgz"),
                                    "MLTASK_INPUT_DATASET_UNPACK": "true"})
    assert run.returncode == 1, run
    assert "raw.tgz is not a .zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz archive" in run.last_line
    assert not (tmp_path / "input" / "dataset").exists()


# -- hf:// -------------------------------------------------------------------------------------

TOKEN = "hf_test_token_5d1e0c"
V1 = {"config.json": b'{"v": 1}', "onnx/model.onnx": os.urandom(5000), "onnx/int8/model.onnx":
      b"q", "README.md": b"# tiny", ".gitattributes": b"*.onnx filter=lfs"}


@pytest.fixture(scope="module")
def repos(hub: HubStandin) -> dict[str, str]:
    """Models and datasets of the stand-in; their commits."""
    return {
        "v1": hub.add("model", "acme/tiny", V1, tags=("v1.0",), lfs=("onnx/model.onnx",)),
        "main": hub.add("model", "acme/tiny", {"config.json": b'{"v": 2}'}),
        "digits": hub.add("dataset", "acme/digits", {"data/train.csv": b"1\n", "data/test.csv":
                                                     b"2\n", "README.md": b"d"}, tags=("v2",)),
        "private": hub.add("model", "acme/secret-model", {"w.bin": b"w"}, token=TOKEN),
    }


@pytest.fixture
def hf_env(env: dict[str, str], hub: HubStandin, repos: dict[str, str]) -> dict[str, str]:
    return {**env, "HF_ENDPOINT": hub.endpoint}


@pytest.mark.parametrize(("uri", "expected"), [
    ("hf://acme/tiny", {"config.json": b'{"v": 2}'}),
    ("hf://acme/tiny@v1.0", V1),
    ("hf://acme/tiny@v1.0/onnx/", {"model.onnx": V1["onnx/model.onnx"],
                                   "int8/model.onnx": b"q"}),
    ("hf://acme/tiny@v1.0/onnx/model.onnx", {"model.onnx": V1["onnx/model.onnx"]}),
    ("hf://datasets/acme/digits@v2/data", {"train.csv": b"1\n", "test.csv": b"2\n"}),
], ids=["model-main", "model-tag", "model-folder", "model-lfs-file", "dataset-revision-path"])
def test_hf_download(hf_env: dict[str, str], tmp_path: Path, uri: str,
                     expected: dict[str, bytes]) -> None:
    run = run_transfer("download", {**hf_env, "MLTASK_INPUT_DATASET_URI": uri})
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {f"dataset/{k}": v for k, v in expected.items()}
    assert not list((tmp_path / "home").iterdir())  # the Hub's cache stayed off the pod's home
    assert run.stdout.splitlines()[0].startswith(f"download {uri}: ")
    assert "without a token" in run.stdout.splitlines()[0]


def test_hf_revision_is_pinned_to_its_commit(hf_env: dict[str, str], hub: HubStandin,
                                             repos: dict[str, str]) -> None:
    before = len(hub.requests)
    run = run_transfer("download", {**hf_env, "MLTASK_INPUT_DATASET_URI": "hf://acme/tiny@v1.0"})
    assert run.returncode == 0, run
    assert f"at revision v1.0 (commit {repos['v1']})" in run.stdout
    resolved = [p for _, p, _ in hub.requests[before:] if "/resolve/" in p]
    assert resolved and all(f"/resolve/{repos['v1']}/" in p for p in resolved)


def test_hf_private_repo_without_a_token_is_a_401_naming_the_repo(hf_env: dict[str, str]) -> None:
    run = run_transfer("download", {**hf_env,
                                    "MLTASK_INPUT_DATASET_URI": "hf://acme/secret-model@main"})
    assert run.returncode == 1, run
    assert run.last_line == (
        "mltask-transfer download: download hf://acme/secret-model@main: the Hub answered HTTP 401 "
        "for the model repo acme/secret-model (revision main): it does not exist or is private; "
        "no token was sent (HF_TOKEN is not set: put it in the task's storage Secret)")


def test_hf_private_repo_with_the_secrets_token(hf_env: dict[str, str], hub: HubStandin,
                                                tmp_path: Path) -> None:
    run = run_transfer("download", {**hf_env, "HF_TOKEN": TOKEN, "MLTASK_STORAGE_SECRET": "hf",
                                    "MLTASK_INPUT_MODEL_URI": "hf://acme/secret-model",
                                    "MLTASK_INPUT_DATASET_URI": "hf://datasets/acme/digits"})
    assert run.returncode == 0, run
    assert files(tmp_path / "input/model") == {"w.bin": b"w"}
    assert "with the token of HF_TOKEN from Secret hf" in run.stdout
    assert TOKEN not in run.stdout + run.stderr
    assert ("GET", "/api/models/acme/secret-model/revision/main", f"Bearer {TOKEN}") \
        in hub.requests


def test_hf_wrong_token_names_it_was_sent(hf_env: dict[str, str]) -> None:
    run = run_transfer("download", {**hf_env, "HF_TOKEN": "hf_wrong", "MLTASK_STORAGE_SECRET": "hf",
                                    "MLTASK_INPUT_DATASET_URI": "hf://acme/secret-model"})
    assert run.returncode == 1, run
    assert "HTTP 401" in run.last_line and "the token of HF_TOKEN from Secret hf was sent" \
        in run.last_line
    assert "hf_wrong" not in run.stdout + run.stderr


@pytest.mark.parametrize(("uri", "message"), [
    ("hf://acme/tiny@v9", "the model repo acme/tiny has no revision v9 (HTTP 404)"),
    ("hf://acme/nothing", "HTTP 404 for the model repo acme/nothing (revision main)"),
    ("hf://acme/tiny/onnx", "the model repo acme/tiny at revision main has no file or folder onnx"),
], ids=["revision", "repo", "path"])
def test_hf_missing_things_are_named(hf_env: dict[str, str], uri: str, message: str) -> None:
    run = run_transfer("download", {**hf_env, "MLTASK_INPUT_DATASET_URI": uri})
    assert run.returncode == 1, run
    assert message in run.last_line


def test_hf_retries_a_503(hf_env: dict[str, str], hub: HubStandin, tmp_path: Path) -> None:
    hub.fail_next(1)
    run = run_transfer("download", {**hf_env, "MLTASK_INPUT_DATASET_URI": "hf://acme/tiny"})
    assert run.returncode == 0, run
    assert "retry: download hf://acme/tiny: HTTP 503; attempt 2 of 8" in run.stdout
    assert files(tmp_path / "input") == {"dataset/config.json": b'{"v": 2}'}
