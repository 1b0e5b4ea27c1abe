"""The apply-time gate (the CRD's CEL regexes) and the transfer program's own URI parser agree:
what the API server accepts for the default steps, the program can parse, and the other way."""

from __future__ import annotations

import re

import pytest

from mltask_operator.api.v1alpha1.mltask import DOWNLOAD_URI, UPLOAD_URI
from mltask_operator.transfer.uris import InvalidUri, parse_download, parse_upload

BOTH_ACCEPT = [
    "s3://mltask-examples/raw/digits.csv.gz", "s3://mltask-examples/datasets/digits/",
    "s3://bkt/", "s3://my.bucket-1/raw data/a b.csv",
    "https://data.example.com/raw/digits.csv.gz", "http://mirror.ml.svc:8080/d/x.tar.gz",
    "https://h:8443/f?x=1",
    "hf://openai/whisper-tiny", "hf://datasets/acme/digits@v1.0/train/",
    "hf://acme/digits-mlp/model.joblib", "hf://acme/digits-mlp@main",
]
BOTH_REFUSE = [
    "gs://bkt/x", "s3://B_ad/x", "s3://ab/x", "https://data.example.com/raw/",
    "https://data.example.com/raw data.csv", "ftp://h/x", "s3:/bkt/x", "", "hf://",
    "file:///etc/passwd",
]
#: Finer rules only the program checks (the gate is a first filter, the program says why).
ONLY_THE_PROGRAM_REFUSES = [
    "s3://bkt/a/../b", "s3://bkt//x", "s3://192.168.1.1/x", "s3://bkt..x/y",
    "https://user:pw@host/x.csv",
]


@pytest.mark.parametrize("uri", BOTH_ACCEPT)
def test_both_accept(uri: str) -> None:
    assert re.match(DOWNLOAD_URI, uri), uri
    parse_download(uri)


@pytest.mark.parametrize("uri", BOTH_REFUSE)
def test_both_refuse(uri: str) -> None:
    assert not re.match(DOWNLOAD_URI, uri), uri
    with pytest.raises(InvalidUri):
        parse_download(uri)


@pytest.mark.parametrize("uri", ONLY_THE_PROGRAM_REFUSES)
def test_the_program_is_the_finer_check(uri: str) -> None:
    with pytest.raises(InvalidUri):
        parse_download(uri)


@pytest.mark.parametrize(("uri", "ok"), [
    ("s3://mltask-examples/models/digits/", True), ("s3://bkt/model.joblib", True),
    ("https://h/x/", False), ("hf://acme/m", False), ("gs://bkt/x/", False),
])
def test_upload_uris_agree(uri: str, ok: bool) -> None:
    assert bool(re.match(UPLOAD_URI, uri)) == ok
    if ok:
        parse_upload(uri)
    else:
        with pytest.raises(InvalidUri):
            parse_upload(uri)
