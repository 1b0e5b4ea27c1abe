"""Data integrity of mltask-transfer (issue 26, findings 5 and 6): a given or handed-on sha256
is verified, a folder is what its upload's manifest lists (stale objects under the prefix left
out), an https server's partial answers and redirects are checked, archives and downloads are
bounded, and an output folder that is a symlink is refused.

Against the real S3 server and the HTTPS stand-in of the other transfer tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.httpsserver import HttpsServer
from harness.s3server import S3Server
from harness.transfer_cli import files, run_transfer
from mltask_operator.transfer.hashing import MANIFEST_NAME

MIB = 1024 * 1024


def put(s3: S3Server, bucket: str, objects: dict[str, bytes]) -> None:
    client = s3.client()
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- digests -----------------------------------------------------------------------------------


def test_a_digest_mismatch_fails_naming_the_uri_expected_and_actual(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    stored = b"another run's model"
    put(s3, bucket, {"models/m.joblib": stored})
    uri = f"s3://{bucket}/models/m.joblib"
    expected = sha(b"the model this task was given")
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": uri,
                                    "MLTASK_INPUT_DATASET_SHA256": expected})
    assert run.returncode == 1, run
    assert run.last_line == (
        f"mltask-transfer download: download {uri}: sha256 mismatch: expected {expected} "
        f"(MLTASK_INPUT_DATASET_SHA256), got {sha(stored)}: the data changed since its digest "
        "was recorded (another run wrote the same URI?); "
        "not used")
    assert files(tmp_path / "input") == {}, "nothing of it is kept"


def test_a_matching_digest_is_verified_and_said(s3: S3Server, bucket: str, env: dict[str, str],
                                                tmp_path: Path) -> None:
    put(s3, bucket, {"d.csv": b"1,2\n"})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/d.csv",
                                    "MLTASK_INPUT_DATASET_SHA256": sha(b"1,2\n")})
    assert run.returncode == 0, run
    digest = sha(b"1,2\n")
    assert f"verified s3://{bucket}/d.csv: sha256 {digest}" in run.stdout
    assert files(tmp_path / "input") == {"dataset/d.csv": b"1,2\n"}


def _upload(env: dict[str, str], tmp_path: Path, uri: str, contents: dict[str, bytes]
            ) -> dict[str, object]:
    out = tmp_path / "output"
    if out.exists():
        for p in sorted(out.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
    for rel, data in contents.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": uri})
    assert run.returncode == 0, run
    result: dict[str, object] = json.loads((tmp_path / "meta/result.json").read_text())
    return result


def test_a_folder_is_what_its_last_upload_wrote_stale_objects_left_out(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    """An earlier attempt's files under the same prefix are not the next task's input, and the
    folder's digest (the upload's result) holds for what is downloaded."""
    uri = f"s3://{bucket}/runs/x/model/"
    _upload(env, tmp_path, uri, {"old-checkpoint.bin": b"old", "model.bin": b"v1", "c.json": b"{}"})
    result = _upload(env, tmp_path, uri, {"model.bin": b"v2", "cfg/c.json": b"{}"})
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="runs/x/model/")["Contents"]
    assert {o["Key"] for o in listed} >= {"runs/x/model/old-checkpoint.bin",
                                          f"runs/x/model/{MANIFEST_NAME}"}
    run = run_transfer("download", {**env, "MLTASK_INPUT_MODEL_URI": uri,
                                    "MLTASK_INPUT_DATASET_URI": uri,
                                    "MLTASK_INPUT_MODEL_SHA256": str(result["sha256"])})
    assert run.returncode == 0, run
    assert files(tmp_path / "input/model") == {"model.bin": b"v2", "cfg/c.json": b"{}"}
    assert files(tmp_path / "input/dataset") == {"model.bin": b"v2", "cfg/c.json": b"{}"}
    assert "2 objects not in its .mltask-manifest left out" in run.stdout


def test_a_folder_object_changed_after_its_upload_fails(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    uri = f"s3://{bucket}/m/"
    _upload(env, tmp_path, uri, {"a.bin": b"aaaa", "b.bin": b"bbbb"})
    put(s3, bucket, {"m/b.bin": b"BBBB"})  # same size, other bytes
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": uri})
    assert run.returncode == 1, run
    assert f"download {uri}: b.bin does not match the folder's {MANIFEST_NAME}" in run.last_line
    assert files(tmp_path / "input") == {}


def test_an_output_named_like_the_manifest_is_refused(bucket: str, env: dict[str, str],
                                                      tmp_path: Path) -> None:
    (tmp_path / "output").mkdir()
    (tmp_path / "output" / MANIFEST_NAME).write_bytes(b"forged")
    (tmp_path / "output" / "m.bin").write_bytes(b"m")
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/out/"})
    assert run.returncode == 1, run
    assert "the name is the upload's own (the folder's manifest)" in run.last_line


# -- the output folder -------------------------------------------------------------------------


def test_an_output_folder_that_is_a_symlink_is_refused(bucket: str, env: dict[str, str],
                                                       tmp_path: Path) -> None:
    """Else the symlink guard (links must stay inside the output folder) would move to the
    link's target, say a folder of the pod's credentials."""
    elsewhere = tmp_path / "secrets"
    elsewhere.mkdir()
    (elsewhere / "token").write_bytes(b"s3cr3t")
    (tmp_path / "output").symlink_to(elsewhere)
    run = run_transfer("upload", {**env, "MLTASK_OUTPUT_URI": f"s3://{bucket}/out/"})
    assert run.returncode == 1, run
    assert run.last_line == (f"mltask-transfer upload: {tmp_path}/output (MLTASK_OUTPUT_DIR) is a "
                             f"symlink to {elsewhere}: the run step writes its outputs into the "
                             "folder itself, not a link")


# -- bounds ------------------------------------------------------------------------------------


def test_a_download_over_the_bound_fails_before_it_starts(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    put(s3, bucket, {"big.bin": b"x" * 2048})
    run = run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/big.bin",
                                    "MLTASK_DOWNLOAD_MAX_BYTES": "1024"})
    assert run.returncode == 1, run
    assert "is more than MLTASK_DOWNLOAD_MAX_BYTES (1024 bytes" in run.last_line


def _tar_bz2_of_zeros(size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(bytes(size)))
    return buf.getvalue()


def _unpack(s3: S3Server, bucket: str, env: dict[str, str], name: str, data: bytes,
            **extra: str):  # type: ignore[no-untyped-def]
    put(s3, bucket, {name: data})
    return run_transfer("download", {**env, "MLTASK_INPUT_DATASET_URI": f"s3://{bucket}/{name}",
                                     "MLTASK_INPUT_DATASET_UNPACK": "true", **extra})


def test_an_archive_bomb_stops_at_the_unpack_bound(s3: S3Server, bucket: str,
                                                   env: dict[str, str], tmp_path: Path) -> None:
    data = _tar_bz2_of_zeros(64 * MIB)
    assert len(data) < 2000  # bz2 of zeros: a few hundred bytes for 64 MiB
    run = _unpack(s3, bucket, env, "bomb.tar.bz2", data, MLTASK_UNPACK_MAX_BYTES=str(4 * MIB))
    assert run.returncode == 1, run
    assert run.last_line == (f"mltask-transfer download: bomb.tar.bz2 unpacks to more than "
                             f"{4 * MIB} bytes (MLTASK_UNPACK_MAX_BYTES, the working volume's "
                             "size)")
    assert files(tmp_path / "input") == {}
    assert not list(tmp_path.rglob("zeros.bin"))


def test_an_archive_of_too_many_members_is_refused(s3: S3Server, bucket: str,
                                                   env: dict[str, str], tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(1001):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    run = _unpack(s3, bucket, env, "many.tgz", buf.getvalue(), MLTASK_UNPACK_MAX_MEMBERS="1000")
    assert run.returncode == 1, run
    assert run.last_line == ("mltask-transfer download: many.tgz has more than 1000 members "
                             "(MLTASK_UNPACK_MAX_MEMBERS)")


def test_a_zip_with_a_huge_symlink_member_is_refused_in_bounded_memory_and_words(
        s3: S3Server, bucket: str, env: dict[str, str], tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w", force_zip64=True) as member:  # streamed: no 200 MiB here
            for _ in range(100):
                member.write(b"a/" * (MIB // 2) * 2)
    data = buf.getvalue()
    assert len(data) < 1 * MIB
    run = _unpack(s3, bucket, env, "links.zip", data)
    assert run.returncode == 1, run
    assert run.last_line == ("mltask-transfer download: links.zip: symlink 'link' has a target "
                             "longer than 4096 bytes")
    assert run.max_rss_mib < 200, run.max_rss_mib  # 1.6 GB before (issue 26)
    assert len(run.stderr) < 2000


def test_a_tar_with_a_long_symlink_target_is_refused(s3: S3Server, bucket: str,
                                                     env: dict[str, str]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = tarfile.SYMTYPE, "a/" * 5000
        tar.addfile(info)
    run = _unpack(s3, bucket, env, "link.tgz", buf.getvalue())
    assert run.returncode == 1, run
    assert run.last_line == ("mltask-transfer download: link.tgz: symlink 'link' has a target "
                             "longer than 4096 bytes")


def test_a_long_member_name_is_cut_short_in_the_message(s3: S3Server, bucket: str,
                                                        env: dict[str, str]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(tarfile.TarInfo("../" + "x" * 100_000), io.BytesIO(b""))
    run = _unpack(s3, bucket, env, "long.tgz", buf.getvalue())
    assert run.returncode == 1, run
    assert "has a '..' component" in run.last_line
    assert len(run.last_line) < 400


# -- https:// ----------------------------------------------------------------------------------

BODY = b"0123456789" * 1000


@pytest.fixture
def web(tmp_path: Path) -> Iterator[HttpsServer]:
    server = HttpsServer(tmp_path / "tls", {"/f/data.bin": BODY}).start()
    yield server
    server.stop()


def _get(web: HttpsServer, env: dict[str, str], path: str, **extra: str):  # type: ignore[no-untyped-def]
    return run_transfer("download", {**env, "SSL_CERT_FILE": str(web.ca),
                                     "MLTASK_INPUT_DATASET_URI": web.url(path),
                                     "MLTASK_TRANSFER_MAX_ATTEMPTS": "2", **extra})


def test_a_partial_answer_to_a_fresh_download_is_an_error(web: HttpsServer, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    web.canned["/f/part.bin"] = (206, {"Content-Range": f"bytes 0-99/{len(BODY)}"}, BODY[:100])
    run = _get(web, env, "/f/part.bin")
    assert run.returncode == 1, run
    assert run.last_line == (
        f"mltask-transfer download: download {web.url('/f/part.bin')} failed: the server "
        f"answered HTTP 206 with Content-Range 'bytes 0-99/{len(BODY)}' when asked for the whole "
        "file: a part of the file is never saved as the file")
    assert files(tmp_path / "input") == {}


def test_a_content_range_on_a_200_is_an_error(web: HttpsServer, env: dict[str, str]) -> None:
    web.canned["/f/odd.bin"] = (200, {"Content-Range": "bytes 0-9/100"}, BODY[:10])
    run = _get(web, env, "/f/odd.bin")
    assert run.returncode == 1, run
    assert "answered HTTP 200 with Content-Range 'bytes 0-9/100'" in run.last_line


def test_a_digest_mismatch_over_https(web: HttpsServer, env: dict[str, str]) -> None:
    run = _get(web, env, "/f/data.bin", MLTASK_INPUT_DATASET_SHA256="0" * 64)
    assert run.returncode == 1, run
    assert f"expected {'0' * 64} (MLTASK_INPUT_DATASET_SHA256), got {sha(BODY)}" in run.last_line


def test_redirects_on_the_same_host_are_followed(web: HttpsServer, env: dict[str, str],
                                                 tmp_path: Path) -> None:
    web.canned["/r/1/data.bin"] = (302, {"Location": "/r/2/data.bin"}, b"")
    web.canned["/r/2/data.bin"] = (301, {"Location": web.url("/f/data.bin?sig=1")}, b"")
    run = _get(web, env, "/r/1/data.bin")
    assert run.returncode == 0, run
    assert files(tmp_path / "input") == {"dataset/data.bin": BODY}


def test_a_redirect_to_http_is_refused(web: HttpsServer, env: dict[str, str]) -> None:
    web.canned["/r/data.bin"] = (302, {"Location": f"http://127.0.0.1:{web.port}/f/data.bin"},
                                 b"")
    run = _get(web, env, "/r/data.bin")
    assert run.returncode == 1, run
    assert run.last_line.endswith(
        f"redirected to http://127.0.0.1:{web.port}/f/data.bin: only https:// redirects are "
        "followed")


def test_a_redirect_to_another_host_on_a_loopback_address_is_refused(
        web: HttpsServer, env: dict[str, str]) -> None:
    """The metadata service, the node's own ports: a server must not steer the step there."""
    web.canned["/r/data.bin"] = (302, {"Location": web.url("/f/data.bin", host="localhost")}, b"")
    run = _get(web, env, "/r/data.bin")
    assert run.returncode == 1, run
    assert f"redirected to {web.url('/f/data.bin', host='localhost')}, whose host localhost is" \
        in run.last_line
    assert run.last_line.endswith("not a public address: not followed")
    assert ("GET", "/f/data.bin") not in web.requests


def test_more_than_five_redirects_are_refused(web: HttpsServer, env: dict[str, str]) -> None:
    for i in range(6):
        web.canned[f"/loop/{i}/x.bin"] = (307, {"Location": f"/loop/{i + 1}/x.bin"}, b"")
    run = _get(web, env, "/loop/0/x.bin")
    assert run.returncode == 1, run
    assert run.last_line.endswith("more than 5 redirects")


def test_a_redirect_carrying_credentials_is_refused(web: HttpsServer, env: dict[str, str]
                                                    ) -> None:
    web.canned["/r/data.bin"] = (302, {"Location": f"https://u:p@127.0.0.1:{web.port}/f/d.bin"},
                                 b"")
    run = _get(web, env, "/r/data.bin")
    assert run.returncode == 1, run
    assert "it carries a user name or password" in run.last_line
    assert "u:p" not in run.stderr


def test_the_https_download_bound(web: HttpsServer, env: dict[str, str]) -> None:
    run = _get(web, env, "/f/data.bin", MLTASK_DOWNLOAD_MAX_BYTES="1000")
    assert run.returncode == 1, run
    assert "the file is larger than MLTASK_DOWNLOAD_MAX_BYTES (1000 bytes" in run.last_line

