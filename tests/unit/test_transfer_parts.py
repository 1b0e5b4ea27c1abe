"""The transfer program's pure parts, and that it stays standalone.

Manifest hashing, progress lines, retry settings, credential sources in words, the S3 client
configuration, folder listings to files, hf:// file selection, and what the upload step takes
from the output folder.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from mltask_operator.transfer import hf, progress, s3, steps
from mltask_operator.transfer.errors import ContractError, TransferError
from mltask_operator.transfer.hashing import FileDigest, HashingReader, manifest, manifest_sha256
from mltask_operator.transfer.retry import Policy
from mltask_operator.transfer.uris import HfUri, S3Uri

# -- hashing ---------------------------------------------------------------------------------


def test_hashing_reader_hashes_and_counts_what_is_read_and_is_not_seekable() -> None:
    data = os.urandom(100_000)
    reader = HashingReader(io.BytesIO(data))
    assert reader.readable() and not reader.seekable()
    assert not hasattr(reader, "seek") and not hasattr(reader, "tell")
    while reader.read(7_000):
        pass
    assert reader.size == len(data)
    assert reader.sha256 == hashlib.sha256(data).hexdigest()


def test_manifest_is_sorted_by_path_and_hashes_to_the_folder_sha256() -> None:
    files = [FileDigest("b/x.bin", 3, "bb" * 32), FileDigest("a.txt", 0, "aa" * 32),
             FileDigest("B.txt", 1, "cc" * 32)]
    text = manifest(files)
    assert text == (f"{'cc' * 32}  1  B.txt\n{'aa' * 32}  0  a.txt\n{'bb' * 32}  3  b/x.bin\n")
    assert manifest_sha256(files) == hashlib.sha256(text.encode()).hexdigest()
    assert manifest_sha256(reversed(files)) == manifest_sha256(files)


# -- progress --------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (40 * 2**20, "40.0 MiB"),
    (int(1.5 * 2**30), "1.5 GiB"), (3 * 2**40, "3.0 TiB"),
], ids=["zero", "bytes", "kib", "mib", "gib", "tib"])
def test_format_size(n: int, text: str) -> None:
    assert progress.format_size(n) == text


def test_progress_line_has_bytes_total_percent_and_rate() -> None:
    line = progress.progress_line("download", "s3://bkt/raw/digits.csv.gz", 40 * 2**20,
                                  128 * 2**20, 40 / 52.1)
    assert line == "download s3://bkt/raw/digits.csv.gz: 40.0 MiB of 128.0 MiB (31%), 52.1 MiB/s"
    assert progress.progress_line("upload", "x", 5, None, 1.0) == "upload x: 5 B, 5 B/s"
    assert progress.progress_line("upload", "x", 0, 0, 0.0, files=(0, 1)).endswith(
        "0 B of 0 B (100%), 0 B/s, 0 of 1 file")


def test_meter_prints_at_most_every_interval_and_at_the_end() -> None:
    now = [0.0]
    lines: list[str] = []
    meter = progress.Meter("download", "u", 100, clock=lambda: now[0], emit=lines.append)
    for _ in range(10):  # 10 bytes every 0.5 s
        now[0] += 0.5
        meter.add(10)
    meter.finish()
    assert lines == ["download u: 40 B of 100 B (40%), 20 B/s",
                     "download u: 80 B of 100 B (80%), 20 B/s",
                     "download u: 100 B of 100 B (100%), 20 B/s"]


# -- retry settings ----------------------------------------------------------------------------


def test_policy_from_env() -> None:
    assert Policy.from_env({}) == Policy(attempts=8, connect_timeout=10.0, read_timeout=60.0)
    policy = Policy.from_env({"MLTASK_TRANSFER_MAX_ATTEMPTS": "3",
                              "MLTASK_TRANSFER_READ_TIMEOUT": "5.5"})
    assert (policy.attempts, policy.read_timeout) == (3, 5.5)


@pytest.mark.parametrize(("env", "message"), [
    ({"MLTASK_TRANSFER_MAX_ATTEMPTS": "many"}, "MLTASK_TRANSFER_MAX_ATTEMPTS='many' is not an int"),
    ({"MLTASK_TRANSFER_MAX_ATTEMPTS": "0"}, "must be at least 1"),
    ({"MLTASK_TRANSFER_CONNECT_TIMEOUT": "-1"}, "must be positive"),
], ids=["not-a-number", "zero-attempts", "negative-timeout"])
def test_policy_refuses_bad_values(env: dict[str, str], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        Policy.from_env(env)


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = Policy()
    assert [policy.backoff(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.backoff(1, rand=lambda: 0.0) == 0.25
    assert policy.backoff(30, rand=lambda: 1.0) == policy.max_backoff


# -- S3 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "env", "text"), [
    ("env", {"MLTASK_STORAGE_SECRET": "s3-credentials"},
     "AWS_ACCESS_KEY_ID from Secret s3-credentials (environment)"),
    ("env", {"MLTASK_STORAGE_SECRET": "s", "AWS_SESSION_TOKEN": "t"},
     "AWS_ACCESS_KEY_ID and AWS_SESSION_TOKEN from Secret s (environment)"),
    ("env", {}, "AWS_ACCESS_KEY_ID from the environment"),
    ("assume-role-with-web-identity", {"AWS_ROLE_ARN": "arn:aws:iam::1:role/ml"},
     "web identity token (AWS_ROLE_ARN=arn:aws:iam::1:role/ml)"),
    ("container-role", {}, "container credentials (EKS Pod Identity or ECS task role)"),
    ("iam-role", {}, "instance profile (EC2 instance metadata)"),
    (None, {}, "no credentials found (anonymous requests)"),
    (None, {"MLTASK_STORAGE_SECRET": "s"},
     "no credentials found (anonymous requests); Secret s holds no AWS_ACCESS_KEY_ID"),
    ("something-new", {}, "something-new"),
], ids=["secret", "secret-session", "env", "web-identity", "container", "instance", "none",
        "none-secret", "unknown"])
def test_credential_sources_in_words(method: str | None, env: dict[str, str], text: str) -> None:
    assert s3.describe_credentials(method, env) == text


def test_custom_endpoint_config_asks_checksums_only_when_required() -> None:
    config = s3.client_config("http://10.244.0.1:9000", Policy(attempts=5), anonymous=False)
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3 == {"addressing_style": "path"}
    assert config.retries == {"mode": "standard", "total_max_attempts": 5}
    assert (config.connect_timeout, config.read_timeout) == (10.0, 60.0)
    aws = s3.client_config(None, Policy(), anonymous=True)
    assert aws.request_checksum_calculation != "when_required" and not aws.s3
    assert aws.signature_version is not None  # UNSIGNED: anonymous requests


def test_select_keeps_relative_paths_skips_only_folder_markers() -> None:
    listing = [("data/", 0, None), ("data/a.csv", 4, '"e1"'), ("data/empty", 0, None),
               ("data/.hidden", 1, None), ("data/sub/", 0, None), ("data/sub/deep/x", 2, None)]
    objs = s3.select(S3Uri("bkt", "data/"), listing)
    assert [(o.key, o.path, o.size) for o in objs] == [
        ("data/a.csv", "a.csv", 4), ("data/empty", "empty", 0), ("data/.hidden", ".hidden", 1),
        ("data/sub/deep/x", "sub/deep/x", 2)]
    whole = s3.select(S3Uri("bkt", ""), [("k", 1, None)])
    assert whole[0].path == "k"


@pytest.mark.parametrize(("listing", "message"), [
    ([("d/x/", 5, None)], "s3://b/d/x/ ends with / but holds 5 bytes"),
    ([("d/a//b", 1, None)], "has an empty, '.' or '..' segment"),
    ([("d/../x", 1, None)], "has an empty, '.' or '..' segment"),
    ([("d/a", 1, None), ("d/a/b", 1, None)], "s3://b/d/a is an object and also a folder"),
], ids=["marker-with-bytes", "empty-segment", "dotdot", "file-and-folder"])
def test_select_refuses_keys_that_cannot_be_files(listing: list, message: str) -> None:
    with pytest.raises(TransferError, match=message.replace("(", r"\(")):
        s3.select(S3Uri("b", "d/"), listing)


# -- hf:// -------------------------------------------------------------------------------------

FILES = ["config.json", "onnx/model.onnx", "onnx/int8/model.onnx", "onnx-v2/x", "a[1].txt"]


@pytest.mark.parametrize(("path", "folder", "chosen", "patterns"), [
    ("", False, sorted(FILES), None),
    ("config.json", False, ["config.json"], ["config.json"]),
    ("onnx", False, ["onnx/int8/model.onnx", "onnx/model.onnx"], ["onnx/*"]),
    ("onnx", True, ["onnx/int8/model.onnx", "onnx/model.onnx"], ["onnx/*"]),
    ("a[1].txt", False, ["a[1].txt"], ["a[[]1].txt"]),
], ids=["whole-repo", "file", "folder", "folder-slash", "glob-chars-escaped"])
def test_hf_select(path: str, folder: bool, chosen: list[str], patterns: list[str] | None
                   ) -> None:
    uri = HfUri("model", "acme/tiny", None, path, folder)
    assert hf.select(uri, FILES, "main") == (chosen, patterns)


@pytest.mark.parametrize(("path", "folder", "message"), [
    ("nothing", False, "has no file or folder nothing"),
    ("config.json", True, "config.json is a file of the model repo acme/tiny at revision main"),
], ids=["missing", "file-as-folder"])
def test_hf_select_errors(path: str, folder: bool, message: str) -> None:
    with pytest.raises(TransferError, match=message):
        hf.select(HfUri("model", "acme/tiny", None, path, folder), FILES, "main")


# -- the steps' environment and the output folder ----------------------------------------------


def test_inputs_from_the_contract(tmp_path: Path) -> None:
    found = steps.inputs({"MLTASK_INPUT_DIR": str(tmp_path),
                          "MLTASK_INPUT_DATASET_URI": "s3://bkt/d/",
                          "MLTASK_INPUT_DATASET_UNPACK": "true",
                          "MLTASK_INPUT_MODEL_URI": "hf://acme/tiny",
                          "MLTASK_INPUT_MODEL_DIR": str(tmp_path / "m")})
    assert [(i.name, str(i.uri), i.unpack, i.dest) for i in found] == [
        ("dataset", "s3://bkt/d/", True, tmp_path / "dataset"),
        ("model", "hf://acme/tiny", False, tmp_path / "m")]


@pytest.mark.parametrize(("env", "message"), [
    ({}, "MLTASK_INPUT_DATASET_URI is not set"),
    ({"MLTASK_INPUT_DATASET_URI": "s3://bkt/x", "MLTASK_INPUT_DATASET_UNPACK": "maybe"},
     "MLTASK_INPUT_DATASET_UNPACK='maybe' is not true or false"),
], ids=["no-dataset", "bad-unpack"])
def test_inputs_refuse_a_bad_contract(env: dict[str, str], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        steps.inputs(env)


def test_scan_lists_files_and_follows_only_inside_symlinks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "w.bin").write_bytes(b"123")
    (out / ".meta").write_bytes(b"")
    (out / "latest.bin").symlink_to("sub/w.bin")
    files, subfolders = steps.scan(out)
    assert subfolders
    assert [(f.rel, f.size) for f in files] == [(".meta", 0), ("latest.bin", 3), ("sub/w.bin", 3)]


@pytest.mark.parametrize("kind", ["outside-link", "fifo", "folder-link"])
def test_scan_refuses_what_must_not_be_uploaded(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "token"
    secret.write_text("s3cr3t")
    if kind == "outside-link":
        (out / "token").symlink_to(secret)
        message = "is a symlink to .*, outside"
    elif kind == "fifo":
        os.mkfifo(out / "pipe")
        message = "is not a regular file"
    else:
        (out / "dir").symlink_to(tmp_path)
        message = "is a symlink to a folder"
    with pytest.raises(TransferError, match=message):
        steps.scan(out)


def test_write_json_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "meta" / "result.json"
    steps.write_json(target, {"uri": "s3://b/k"})
    steps.write_json(target, {"uri": "s3://b/k2", "size": 1})
    assert target.read_text() == '{"uri": "s3://b/k2", "size": 1}\n'
    assert os.listdir(target.parent) == ["result.json"]


def test_the_transfer_program_imports_nothing_of_the_operator_kopf_or_kubernetes() -> None:
    import subprocess
    import sys

    code = ("import sys, mltask_operator.transfer.__main__, mltask_operator.transfer.s3, "
            "mltask_operator.transfer.https, mltask_operator.transfer.hf; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes') "
            "or (m.startswith('mltask_operator.') and not m.startswith('mltask_operator.transfer'))"
            "))")
    operator_dir = str(Path(__file__).resolve().parents[2] / "operator")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": operator_dir})
    assert out.stdout.strip() == "[]"
