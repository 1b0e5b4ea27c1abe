"""The transfer program's URI parsing: accepted forms, and errors naming URI and problem.

The operator's apply-time CEL rules mirror these.
"""

from __future__ import annotations

import pytest

from mltask_operator.transfer import uris
from mltask_operator.transfer.uris import HfUri, HttpUri, S3Uri

VALID_DOWNLOADS = [
    ("s3-object", "s3://bkt/data", S3Uri("bkt", "data")),
    ("s3-nested-object", "s3://my.bucket-1/raw/digits.csv.gz",
     S3Uri("my.bucket-1", "raw/digits.csv.gz")),
    ("s3-folder", "s3://bkt/data/", S3Uri("bkt", "data/")),
    ("s3-bucket", "s3://bkt/", S3Uri("bkt", "")),
    ("s3-dotfile", "s3://bkt/.env.example", S3Uri("bkt", ".env.example")),
    ("s3-spaces-kept", "s3://bkt/my file.csv", S3Uri("bkt", "my file.csv")),
    ("https", "https://example.com/d/data.csv",
     HttpUri("https://example.com/d/data.csv", "data.csv")),
    ("https-port-query", "https://h:8443/a/b.tgz?X-Amz-Signature=x",
     HttpUri("https://h:8443/a/b.tgz?X-Amz-Signature=x", "b.tgz")),
    ("https-encoded-name", "https://h/a/my%20data.csv",
     HttpUri("https://h/a/my%20data.csv", "my data.csv")),
    ("http", "http://10.0.0.5:8080/f.bin", HttpUri("http://10.0.0.5:8080/f.bin", "f.bin")),
    ("hf-model", "hf://acme/tiny", HfUri("model", "acme/tiny", None, "", False)),
    ("hf-model-revision", "hf://acme/tiny@v1.0", HfUri("model", "acme/tiny", "v1.0", "", False)),
    ("hf-model-file", "hf://acme/tiny/config.json",
     HfUri("model", "acme/tiny", None, "config.json", False)),
    ("hf-model-folder", "hf://acme/tiny@main/onnx/",
     HfUri("model", "acme/tiny", "main", "onnx", True)),
    ("hf-dataset", "hf://datasets/acme/digits", HfUri("dataset", "acme/digits", None, "", False)),
    ("hf-dataset-rev-path", "hf://datasets/acme/digits@v2/data/train.csv",
     HfUri("dataset", "acme/digits", "v2", "data/train.csv", False)),
    ("hf-pr-ref", "hf://acme/tiny@refs/pr/3/a.bin",
     HfUri("model", "acme/tiny", "refs/pr/3", "a.bin", False)),
    ("hf-encoded-branch", "hf://acme/tiny@feat%2Fx/a",
     HfUri("model", "acme/tiny", "feat/x", "a", False)),
    ("hf-commit", "hf://acme/tiny@" + "a" * 40, HfUri("model", "acme/tiny", "a" * 40, "", False)),
]


@pytest.mark.parametrize(("uri", "expected"), [c[1:] for c in VALID_DOWNLOADS],
                         ids=[c[0] for c in VALID_DOWNLOADS])
def test_valid_download_uris(uri: str, expected: object) -> None:
    assert uris.parse_download(uri) == expected


@pytest.mark.parametrize("uri", ["s3://bkt/data", "s3://bkt/data/", "s3://bkt/",
                                 "hf://acme/tiny@v1.0/onnx/", "hf://datasets/acme/d@refs/pr/3/x",
                                 "hf://acme/tiny@feat%2Fx/a"])
def test_str_gives_the_uri_back(uri: str) -> None:
    assert str(uris.parse_download(uri)) == uri


INVALID = [
    ("empty", "", "empty"),
    ("no-scheme", "bkt/data", "no scheme"),
    ("ftp", "ftp://h/f", "unsupported scheme 'ftp'"),
    ("gs", "gs://bkt/f", "unsupported scheme 'gs'"),
    ("s3-no-bucket", "s3:///key", "bucket is missing"),
    ("s3-bucket-only", "s3://bkt", "end it with / for the whole bucket"),
    ("s3-short-bucket", "s3://ab/x", "3 to 63"),
    ("s3-long-bucket", "s3://" + "a" * 64 + "/x", "3 to 63"),
    ("s3-upper-bucket", "s3://MyBucket/x", "lowercase letters, digits, dots and hyphens"),
    ("s3-underscore-bucket", "s3://my_bucket/x", "lowercase letters, digits, dots and hyphens"),
    ("s3-hyphen-start", "s3://-bkt/x", "start and end"),
    ("s3-double-dot", "s3://b..kt/x", "two dots"),
    ("s3-ip-bucket", "s3://192.168.1.1/x", "IP address"),
    ("s3-empty-segment", "s3://bkt/a//b", "empty segment"),
    ("s3-dotdot", "s3://bkt/a/../b", "'..' segment"),
    ("s3-dot", "s3://bkt/./b", "'.' segment"),
    ("s3-long-key", "s3://bkt/" + "k" * 1025, "1024 bytes"),
    ("control-char", "s3://bkt/a\nb", "control characters"),
    ("spaces-around", " s3://bkt/a", "spaces"),
    ("https-no-file", "https://h/dir/", "file name"),
    ("https-no-host", "https:///f.csv", "host is missing"),
    ("https-userinfo", "https://user:pw@h/f.csv", "user name or password"),
    ("https-bad-port", "https://h:99999/f", "not a valid URL"),
    ("hf-no-org", "hf://gpt2", "no organisation"),
    ("hf-empty", "hf://", "repo id is empty"),
    ("hf-space", "hf://spaces/acme/demo", "only model"),
    ("hf-empty-revision", "hf://acme/tiny@", "revision after @ is empty"),
    ("hf-bad-name", "hf://acme/ti--ny", "'--'"),
    ("hf-bad-char", "hf://acme/ti$ny", "letters, digits"),
    ("hf-dotdot-path", "hf://acme/tiny/a/../b", "'..' segment"),
    ("hf-dotdot-revision", "hf://acme/tiny@a..b", "'..'"),
]


@pytest.mark.parametrize(("uri", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_download_uris_name_the_uri_and_problem(uri: str, problem: str) -> None:
    with pytest.raises(uris.InvalidUri) as caught:
        uris.parse_download(uri)
    assert isinstance(caught.value, ValueError)
    assert problem in str(caught.value)
    assert caught.value.uri == uri
    if "pw@" not in uri:
        assert repr(uri)[1:-1] in str(caught.value)


def test_password_in_an_https_uri_is_never_shown() -> None:
    with pytest.raises(uris.InvalidUri) as caught:
        uris.parse_download("https://user:hunter2@h/f.csv")
    assert "hunter2" not in str(caught.value)
    assert "https://***@h/f.csv" in str(caught.value)


def test_a_presigned_query_is_not_shown() -> None:
    uri = uris.parse_download("https://h/f.csv?X-Amz-Signature=deadbeef")
    assert str(uri) == "https://h/f.csv?..."


UPLOADS = [
    ("object", "s3://bkt/models/m.onnx", S3Uri("bkt", "models/m.onnx")),
    ("folder", "s3://bkt/models/run-1/", S3Uri("bkt", "models/run-1/")),
    ("bucket", "s3://bkt/", S3Uri("bkt", "")),
]


@pytest.mark.parametrize(("uri", "expected"), [c[1:] for c in UPLOADS], ids=[c[0] for c in UPLOADS])
def test_valid_upload_uris(uri: str, expected: S3Uri) -> None:
    assert uris.parse_upload(uri) == expected


@pytest.mark.parametrize(("uri", "problem"), [
    ("https://h/f.bin", "uploaded to s3:// only"),
    ("hf://acme/tiny", "uploaded to s3:// only"),
    ("s3://bkt", "end it with /"),
], ids=["https", "hf", "bucket-without-slash"])
def test_invalid_upload_uris(uri: str, problem: str) -> None:
    with pytest.raises(uris.InvalidUri, match=problem):
        uris.parse_upload(uri)


def test_folder_and_child() -> None:
    folder = uris.parse_upload("s3://bkt/out/")
    assert folder.is_folder and not S3Uri("bkt", "out").is_folder and S3Uri("bkt", "").is_folder
    assert str(folder.child("a/b.bin")) == "s3://bkt/out/a/b.bin"
