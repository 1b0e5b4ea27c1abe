"""mltask-transfer against a real S3 server (versitygw, sigv4 signatures checked).

Exact objects and folders, errors that name what failed, retries through a fault-injecting
proxy, uploads whose result matches what the store holds, archives, and bounded memory on a
300 MiB file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.faultproxy import FaultProxy
from harness.s3server import S3Server
from harness.transfer_cli import SECRET_NAME, files, run_transfer
from mltask_operator.transfer.hashing import FileDigest, manifest_sha256

MIB = 1024 * 1024


def put(s3: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def stored_sha256(s3: S3Server, bucket: str, key: str) -> tuple[int, str]:
    """(size, sha256) of the object as the store holds it, read back."""
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    for chunk in iter(lambda: body.read(MIB), b""):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[FaultProxy]:
    p = FaultProxy("127.0.0.1", s3.port)
    yield p
    p.close()


# -- what a URI names ------------------------------------------------------------------------


def test_folder_uri_copies_everything_under_it_recursively_and_nothing_beside(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    put(s3, bucket, {
        "data/": b"", "data/sub/": b"",  # folder markers: skipped
        "data/train.csv": b"1,2\n", "data/empty.csv": b"", "data/.hidden": b"h",
        "data/sub/deep/x.bin": b"xyz",
        "data-v2": b"sibling object", "datax/y": b"sibling folder", "other/data/z": b"z",
    })
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/data/"})
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {"dataset/train.csv": b"1,2\n", "dataset/empty.csv": b"",
                                         "dataset/.hidden": b"h", "dataset/sub/deep/x.bin": b"xyz"}
    first = run.stdout.splitlines()[0]
    assert first == (f"download s3://{bucket}/data/ (4 objects, 8 B) to "
                     f"{tmp_path}/input/dataset from {s3.endpoint}, credentials: "
                     f"AWS_ACCESS_KEY_ID from Secret {SECRET_NAME} (environment)")
    assert f"download s3://{bucket}/data/sub/deep/x.bin: 3 B of 3 B (100%)," in run.stdout
    assert f"download s3://{bucket}/data/: 8 B of 8 B (100%)" in run.stdout
    assert run.stdout.splitlines()[-1].startswith(
        f"downloaded s3://{bucket}/data/ to {tmp_path}/input/dataset: 4 files, 8 B in ")


def test_exact_uri_is_that_object_only(s3: S3Server, bucket: str, env: dict[str, str],
                                       tmp_path: Path) -> None:
    put(s3, bucket, {"models/m.bin": b"m", "models/m.bin-v2": b"v2", "models/m.bin.old": b"o"})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/models/m.bin"})
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {"dataset/m.bin": b"m"}


def test_whole_bucket_and_a_model_input(s3: S3Server, bucket: str, env: dict[str, str],
                                        tmp_path: Path) -> None:
    put(s3, bucket, {"a.csv": b"a", "d/b.csv": b"b", "m/weights.bin": b"w"})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/",
                                    "MLTASK_INPUT_MODEL_URI": f"s3://{bucket}/m/weights.bin"})
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {"dataset/a.csv": b"a", "dataset/d/b.csv": b"b",
                                         "dataset/m/weights.bin": b"w", "model/weights.bin": b"w"}


def test_a_retry_replaces_the_earlier_attempts_folder(s3: S3Server, bucket: str,
                                                      env: dict[str, str], tmp_path: Path) -> None:
    put(s3, bucket, {"d/new.csv": b"new"})
    (tmp_path / "input/dataset").mkdir(parents=True)
    (tmp_path / "input/dataset/old.csv").write_bytes(b"old")
    (tmp_path / "input/.dataset.partial").mkdir()
    (tmp_path / "input/.dataset.partial/half.csv").write_bytes(b"half")
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/d/"})
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {"dataset/new.csv": b"new"}


# -- errors name what failed -------------------------------------------------------------------


def test_missing_object_with_a_folder_of_its_name_says_to_end_the_uri_with_slash(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    put(s3, bucket, {"data/a.csv": b"a", "data/b/c.csv": b"c"})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/data"})
    assert run.returncode == 1, run
    assert run.last_line == (
        f"mltask-transfer download: s3://{bucket}/data does not exist; s3://{bucket}/data/ is a "
        "folder of 2 objects: end the URI with / to download it")
    assert not (tmp_path / "input" / "dataset").exists()


@pytest.mark.parametrize(("uri", "message"), [
    ("nothing/", "s3://{b}/nothing/ holds no objects; credentials: AWS_ACCESS_KEY_ID from Secret"),
    ("file.csv/", "s3://{b}/file.csv/ holds no objects; s3://{b}/file.csv is an object: drop the "
                  "final / to download it"),
    ("nothing.csv", "s3://{b}/nothing.csv does not exist (HTTP 404)"),
], ids=["empty-folder", "folder-of-an-object", "missing-object"])
def test_zero_objects_is_an_error_naming_the_uri(s3: S3Server, bucket: str, env: dict[str, str],
                                                 uri: str, message: str) -> None:
    put(s3, bucket, {"file.csv": b"f", "nothing-else/x": b"x"})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/{uri}"})
    assert run.returncode == 1, run
    assert message.format(b=bucket) in run.last_line


@pytest.mark.parametrize("uri", ["s3://no-such-bucket-here/data.csv",
                                 "s3://no-such-bucket-here/data/"], ids=["object", "folder"])
def test_missing_bucket(env: dict[str, str], uri: str) -> None:
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": uri})
    assert run.returncode == 1, run
    assert f"{uri} failed: HTTP 404 NoSuchBucket (bucket no-such-bucket-here does not exist)" \
        in run.last_line


@pytest.mark.parametrize("command", ["download", "upload"])
def test_wrong_secret_is_refused_naming_object_code_and_secret_not_its_value(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path, command: str) -> None:
    put(s3, bucket, {"raw/digits.csv": b"1"})
    (tmp_path / "output").mkdir()
    (tmp_path / "output/model.onnx").write_bytes(b"m")
    wrong = "wrong-secret-8c1f0a77d2"
    run = run_transfer(command, {**env, "AWS_SECRET_ACCESS_KEY": wrong,
                                 "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/raw/digits.csv",
                                 "MLTASK_OUTPUT_URI": f"s3://{bucket}/models/model.onnx"})
    assert run.returncode == 1, run
    key = "raw/digits.csv" if command == "download" else "models/model.onnx"
    assert f"s3://{bucket}/{key}" in run.last_line
    assert "HTTP 403 SignatureDoesNotMatch" in run.last_line
    assert f"Secret {SECRET_NAME}" in run.last_line
    assert wrong not in run.stdout + run.stderr
    assert s3.secret_key not in run.stdout + run.stderr
    assert not (tmp_path / "meta" / "result.json").exists()


def test_invalid_uri_exits_2_naming_it(env: dict[str, str]) -> None:
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": "s3://Bad_Bucket/x"})
    assert run.returncode == 2, run
    assert run.last_line.startswith("mltask-transfer download: invalid URI 's3://Bad_Bucket/x': "
                                    "bucket name 'Bad_Bucket'")


# -- retries -----------------------------------------------------------------------------------


def test_download_retries_after_slowdown(s3: S3Server, bucket: str, env: dict[str, str],
                                         tmp_path: Path, proxy: FaultProxy) -> None:
    data = os.urandom(3 * MIB)
    put(s3, bucket, {"d/x.bin": data})
    proxy.inject("slowdown", method="GET", path=f"/{bucket}/d/x.bin", times=2)
    run = run_transfer("download", {**env, "MLTASK_STORAGE_ENDPOINT": proxy.endpoint,
                                    "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/d/x.bin"})
    assert run.returncode == 0, run
    assert (tmp_path / "input/dataset/x.bin").read_bytes() == data
    assert [r[2] for r in proxy.requests if r[0] == "GET"] == ["slowdown", "slowdown", "ok"]
    assert f"retry: GetObject /{bucket}/d/x.bin: HTTP 503 SlowDown; attempt 2 of 8 in" in run.stdout
    assert f"retry: GetObject /{bucket}/d/x.bin: HTTP 503 SlowDown; attempt 3 of 8 in" in run.stdout


def test_download_retries_a_body_cut_off_midway(s3: S3Server, bucket: str, env: dict[str, str],
                                                tmp_path: Path, proxy: FaultProxy) -> None:
    data = os.urandom(20 * MIB)  # ranged GETs of 8 MiB parts
    put(s3, bucket, {"big.bin": data})
    proxy.inject("cut", method="GET", path=f"/{bucket}/big.bin", times=1, cut_after=MIB)
    run = run_transfer("download", {**env, "MLTASK_STORAGE_ENDPOINT": proxy.endpoint,
                                    "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/big.bin"})
    assert run.returncode == 0, run
    assert hashlib.sha256((tmp_path / "input/dataset/big.bin").read_bytes()).digest() == \
        hashlib.sha256(data).digest()
    assert "cut" in [r[2] for r in proxy.requests]
    assert "retry: GetObject body: interrupted (" in run.stdout


def test_upload_retries_a_part_after_slowdown(s3: S3Server, bucket: str, env: dict[str, str],
                                              tmp_path: Path, proxy: FaultProxy) -> None:
    (tmp_path / "output").mkdir()
    (tmp_path / "output/model.bin").write_bytes(os.urandom(20 * MIB))
    proxy.inject("slowdown", method="PUT", path="partNumber=2", times=1)
    run = run_transfer("upload", {**env, "MLTASK_STORAGE_ENDPOINT": proxy.endpoint,
                                  "MLTASK_OUTPUT_URI": f"s3://{bucket}/models/model.bin"})
    assert run.returncode == 0, run
    assert f"retry: UploadPart /{bucket}/models/model.bin part 2: HTTP 503 SlowDown; attempt 2" \
        in run.stdout
    result = json.loads((tmp_path / "meta/result.json").read_text())
    assert (result["size"], result["sha256"]) == stored_sha256(s3, bucket, "models/model.bin")


def test_no_retry_beyond_max_attempts(s3: S3Server, bucket: str, env: dict[str, str],
                                      proxy: FaultProxy) -> None:
    put(s3, bucket, {"x.bin": b"x"})
    proxy.inject("slowdown", method="GET", path=f"/{bucket}/x.bin", times=10)
    run = run_transfer("download", {**env, "MLTASK_STORAGE_ENDPOINT": proxy.endpoint,
                                    "MLTASK_TRANSFER_MAX_ATTEMPTS": "2",
                                    "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/x.bin"})
    assert run.returncode == 1, run
    assert [r[2] for r in proxy.requests if r[0] == "GET"] == ["slowdown", "slowdown"], (
        proxy.requests, run)
    assert f"download s3://{bucket}/x.bin failed: HTTP 503 SlowDown" in run.last_line


# -- uploads and their result ------------------------------------------------------------------


def test_upload_folder_result_is_the_folder_with_its_manifest_sha256(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "output"
    contents = {"model.onnx": os.urandom(1000), "config/params.json": b"{}", "empty": b"",
                ".meta": b"m", "checkpoints/ep1/w.bin": os.urandom(10)}
    for rel, data in contents.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/runs/1/"})
    assert run.returncode == 0, run
    result = json.loads((tmp_path / "meta/result.json").read_text())
    stored = [FileDigest(rel, *stored_sha256(s3, bucket, f"runs/1/{rel}")) for rel in contents]
    assert result == {"uri": f"s3://{bucket}/runs/1/", "size": sum(map(len, contents.values())),
                      "sha256": manifest_sha256(stored), "files": 5}
    assert run.stdout.splitlines()[0].startswith(
        f"upload {out} (5 files, 1013 B) to s3://{bucket}/runs/1/ at {s3.endpoint}, "
        f"credentials: AWS_ACCESS_KEY_ID from Secret {SECRET_NAME} (environment)")


def test_upload_of_one_file_to_a_folder_gives_the_objects_uri(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "output").mkdir()
    (tmp_path / "output/digits.parquet").write_bytes(b"PAR1")
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/datasets/"})
    assert run.returncode == 0, run
    result = json.loads((tmp_path / "meta/result.json").read_text())
    assert result == {"uri": f"s3://{bucket}/datasets/digits.parquet", "size": 4,
                      "sha256": hashlib.sha256(b"PAR1").hexdigest(), "files": 1}


def test_upload_to_an_exact_key(s3: S3Server, bucket: str, env: dict[str, str],
                                tmp_path: Path) -> None:
    (tmp_path / "output/nested").mkdir(parents=True)
    (tmp_path / "output/nested/best.pt").write_bytes(b"weights")
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/models/resnet.pt"})
    assert run.returncode == 0, run
    result = json.loads((tmp_path / "meta/result.json").read_text())
    assert result["uri"] == f"s3://{bucket}/models/resnet.pt"
    assert (result["size"], result["sha256"]) == stored_sha256(s3, bucket, "models/resnet.pt")


def test_upload_to_an_exact_key_of_two_files_is_refused(bucket: str, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    (tmp_path / "output").mkdir()
    for name in ("a.bin", "b.bin"):
        (tmp_path / "output" / name).write_bytes(b"x")
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/m.bin"})
    assert run.returncode == 1, run
    assert run.last_line == (
        f"mltask-transfer upload: MLTASK_OUTPUT_URI s3://{bucket}/m.bin names one object but "
        f"{tmp_path}/output holds 2 files (a.bin, b.bin): end the URI with / to store a folder")


def test_upload_of_nothing_is_an_error(bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "output/empty-folder").mkdir(parents=True)
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/out/"})
    assert run.returncode == 1, run
    assert run.last_line == ("mltask-transfer upload: the run step wrote nothing to "
                             f"{tmp_path}/output (MLTASK_OUTPUT_DIR)")


def test_upload_to_another_scheme_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": "https://example.com/up/m.bin"})
    assert run.returncode == 2, run
    assert "outputs are uploaded to s3:// only" in run.last_line


# -- archives ----------------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tgz_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("unpack", [True, False], ids=["unpack", "as-is"])
def test_archives_are_unpacked_only_when_asked(s3: S3Server, bucket: str, env: dict[str, str],
                                               tmp_path: Path, kind: str, unpack: bool) -> None:
    members = {"images/0.png": b"png0", "labels.csv": b"0,1\n", "empty": b""}
    data = zip_bytes(members) if kind == "zip" else tgz_bytes(members)
    put(s3, bucket, {f"raw/digits.{kind}": data})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/raw/digits.{kind}",
                                    "MLTASK_INPUT_DATASET_UNPACK": "true" if unpack else "false"})
    assert run.returncode == 0, run
    expected = {f"dataset/{k}": v for k, v in members.items()} if unpack else \
        {f"dataset/digits.{kind}": data}
    assert files(tmp_path / "input") == expected


def test_a_malicious_archive_is_refused_and_nothing_is_kept(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    put(s3, bucket, {"evil.tar.gz": tgz_bytes({"ok.txt": b"ok", "../../escaped.txt": b"x"})})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/evil.tar.gz",
                                    "MLTASK_INPUT_DATASET_UNPACK": "true"})
    assert run.returncode == 1, run
    assert run.last_line == ("mltask-transfer download: evil.tar.gz: member '../../escaped.txt' "
                             "has a '..' component")
    assert files(tmp_path / "input") == {}
    assert not list(tmp_path.rglob("escaped.txt"))


def test_unpacking_a_folder_is_refused(s3: S3Server, bucket: str, env: dict[str, str]) -> None:
    put(s3, bucket, {"d/a.zip": zip_bytes({"a": b"a"}), "d/b.zip": zip_bytes({"b": b"b"})})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/d/",
                                    "MLTASK_INPUT_DATASET_UNPACK": "true"})
    assert run.returncode == 1, run
    assert run.last_line.endswith(f"MLTASK_INPUT_DATASET_UNPACK is true but s3://{bucket}/d/ is a "
                                  "folder of 2 files: unpacking needs one archive")


# -- a large file, bounded memory ----------------------------------------------------------------


def test_a_300_mib_file_goes_up_and_down_in_bounded_memory(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "output"
    out.mkdir()
    digest, size = hashlib.sha256(), 300 * MIB
    with (out / "model.safetensors").open("wb") as f:
        for _ in range(size // (8 * MIB)):
            chunk = os.urandom(8 * MIB)
            digest.update(chunk)
            f.write(chunk)
        chunk = os.urandom(size % (8 * MIB))
        digest.update(chunk)
        f.write(chunk)
    try:
        up = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/big/"})
        assert up.returncode == 0, up
        (out / "model.safetensors").unlink()
        result = json.loads((tmp_path / "meta/result.json").read_text())
        assert result == {"uri": f"s3://{bucket}/big/model.safetensors", "size": size,
                          "sha256": digest.hexdigest(), "files": 1}
        down = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": result["uri"]})
        assert down.returncode == 0, down
        got, read = hashlib.sha256(), tmp_path / "input/dataset/model.safetensors"
        with read.open("rb") as f:
            for chunk in iter(lambda: f.read(8 * MIB), b""):
                got.update(chunk)
        assert got.hexdigest() == digest.hexdigest()
        print(f"peak RSS: upload {up.max_rss_mib:.0f} MiB, download {down.max_rss_mib:.0f} MiB")
        assert up.max_rss_mib < 200, up.max_rss_mib
        assert down.max_rss_mib < 200, down.max_rss_mib
        assert "upload s3://" in up.stdout and "(100%)" in up.stdout
    finally:
        s3.client().delete_object(Bucket=bucket, Key="big/model.safetensors")
        for path in (out / "model.safetensors", tmp_path / "input/dataset/model.safetensors"):
            path.unlink(missing_ok=True)
