"""URIs of the transfer steps parsed into typed values: pure (no I/O), errors naming the URI.

The operator's apply-time validation (CEL on the MLTask CRD) mirrors these rules; ACCEPTED_FORMS
states them.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

ACCEPTED_FORMS = """\
Download (MLTASK_INPUT_DATASET_URI, MLTASK_INPUT_MODEL_URI):
  s3://BUCKET/KEY              the one object KEY, exactly (never KEY-v2, never KEY/...)
  s3://BUCKET/PREFIX/          every object under PREFIX/, recursively, relative paths kept
  s3://BUCKET/                 every object of the bucket
  https://HOST[:PORT]/PATH     one file, saved under the last segment of PATH; http:// too
  hf://ORG/NAME[@REVISION][/PATH]           a Hugging Face model repo, or a file or folder of it
  hf://datasets/ORG/NAME[@REVISION][/PATH]  a Hugging Face dataset repo, or a file or folder of it
  pvc://CLAIM/PATH             not downloaded: the run step mounts CLAIM read-only, reads PATH
Upload (MLTASK_OUTPUT_URI), s3:// only:
  s3://BUCKET/KEY              the output folder's one file, stored as exactly KEY
  s3://BUCKET/PREFIX/          every file of the output folder, at PREFIX/<relative path>
Rules: BUCKET is 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a
letter or digit, without '..', not an IPv4 address. KEY and PATH have no empty, '.' or '..'
segments and no control characters; KEY is at most 1024 bytes. ORG and NAME are letters, digits,
'-', '_' and '.', not starting or ending with '-' or '.', without '--' or '..', ORG/NAME at most
96 characters. REVISION is a branch, tag or commit (a branch with '/' percent-encoded as %2F,
except refs/pr/N and refs/convert/parquet|duckdb, which are written as they are). https:// and
http:// URIs carry no user:password@ and end in a file name.
"""

#: An input on a PersistentVolumeClaim (pvc://CLAIM/PATH): the run step reads it in place, the
#: download step leaves it alone.
IN_PLACE_SCHEME = "pvc://"

#: The S3 bucket naming rules (general purpose buckets), as one regex; see also _bucket_problem.
S3_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: One part (ORG or NAME) of a Hugging Face repo id.
HF_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_HF_SPECIAL_REVISION_RE = re.compile(r"refs/pr/\d+|refs/convert/(?:parquet|duckdb)")
_MAX_KEY_BYTES = 1024


class InvalidUri(ValueError):
    """A URI the transfer steps cannot use; the message names the URI and what is wrong."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"invalid URI {redact(uri)!r}: {problem}")


@dataclass(frozen=True)
class S3Uri:
    """An object (`key` not ending with /) or a folder (`key` ending with /; '' the bucket)."""

    bucket: str
    key: str

    @property
    def is_folder(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    def child(self, relative: str) -> S3Uri:
        """The object at `relative` (a '/'-separated path) under this folder."""
        return S3Uri(self.bucket, self.key + relative)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class HttpUri:
    """One file over https:// (or http://), saved under `filename`."""

    url: str
    filename: str

    def __str__(self) -> str:
        return redact(self.url)


@dataclass(frozen=True)
class HfUri:
    """A Hugging Face repo at a revision (None: the default branch), or a file or folder of it."""

    repo_type: Literal["model", "dataset"]
    repo_id: str
    revision: str | None
    path: str  # '' for the whole repo; never ends with /
    folder: bool  # the URI's path ended with /: it must be a folder

    def __str__(self) -> str:
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        revision = ""
        if self.revision is not None:
            special = _HF_SPECIAL_REVISION_RE.fullmatch(self.revision)
            revision = "@" + (self.revision if special else urllib.parse.quote(self.revision, ""))
        path = f"/{self.path}" if self.path else ""
        return f"hf://{prefix}{self.repo_id}{revision}{path}{'/' if self.folder else ''}"


DownloadUri = S3Uri | HttpUri | HfUri


def redact(uri: str) -> str:
    """The URI as it may be logged: no user:password@, no query (a presigned URL's signature)."""
    if not uri.startswith(("http://", "https://")):
        return uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return uri.split("?", 1)[0].split("#", 1)[0]
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def parse_download(uri: str) -> DownloadUri:
    """The input at `uri` (MLTASK_INPUT_DATASET_URI, MLTASK_INPUT_MODEL_URI); see ACCEPTED_FORMS."""
    scheme = _scheme(uri)
    if scheme == "s3":
        return _parse_s3(uri)
    if scheme in ("https", "http"):
        return _parse_http(uri)
    if scheme == "hf":
        return _parse_hf(uri)
    raise InvalidUri(
        uri, f"unsupported scheme {scheme!r}: use s3://, https://, http:// or hf:// to download"
    )


def parse_upload(uri: str) -> S3Uri:
    """The output's place (MLTASK_OUTPUT_URI): s3:// only; see ACCEPTED_FORMS."""
    scheme = _scheme(uri)
    if scheme != "s3":
        raise InvalidUri(uri, f"unsupported scheme {scheme!r}: outputs are uploaded to s3:// only")
    return _parse_s3(uri)


def _scheme(uri: str) -> str:
    if not uri:
        raise InvalidUri(uri, "the URI is empty")
    if _CONTROL_RE.search(uri) or uri != uri.strip():
        raise InvalidUri(uri, "it has control characters or leading or trailing spaces")
    scheme, sep, _ = uri.partition("://")
    if not sep or not scheme:
        raise InvalidUri(uri, "no scheme: use s3://, https://, http:// or hf://")
    return scheme


def _parse_s3(uri: str) -> S3Uri:
    rest = uri[len("s3://"):]
    bucket, slash, key = rest.partition("/")
    if not bucket:
        raise InvalidUri(uri, "the bucket is missing (s3://BUCKET/KEY)")
    problem = _bucket_problem(bucket)
    if problem:
        raise InvalidUri(uri, f"bucket name {bucket!r} {problem}")
    if not slash:
        raise InvalidUri(
            uri, f"it names a bucket but no object: end it with / for the whole bucket (s3://{bucket}/)"
        )
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise InvalidUri(uri, f"the key is longer than {_MAX_KEY_BYTES} bytes")
    problem = _path_problem(key.removesuffix("/")) if key else None
    if problem:
        raise InvalidUri(uri, f"the key {problem}")
    return S3Uri(bucket, key)


def _bucket_problem(bucket: str) -> str | None:
    """Why `bucket` breaks the S3 bucket naming rules, or None."""
    if not 3 <= len(bucket) <= 63:
        return f"has {len(bucket)} characters; S3 bucket names have 3 to 63"
    if re.search(r"[^a-z0-9.-]", bucket):
        return "may hold only lowercase letters, digits, dots and hyphens"
    if not S3_BUCKET_RE.fullmatch(bucket):
        return "must start and end with a lowercase letter or a digit"
    if ".." in bucket:
        return "must not have two dots in a row"
    if _IPV4_RE.fullmatch(bucket):
        return "must not look like an IP address"
    return None


def _path_problem(path: str) -> str | None:
    """Why a '/'-separated path (no trailing /) cannot name a file or folder, or None."""
    for segment in path.split("/"):
        if segment == "":
            return "has an empty segment (// or a leading /)"
        if segment in (".", ".."):
            return f"has a {segment!r} segment"
    return None


def _parse_http(uri: str) -> HttpUri:
    if any(c.isspace() for c in uri):
        raise InvalidUri(uri, "a URL cannot hold spaces; percent-encode them (%20)")
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise InvalidUri(uri, f"it is not a valid URL ({e})") from None
    if "@" in parts.netloc:
        raise InvalidUri(
            uri, "it carries a user name or password; no credentials are sent to https:// URIs "
            "(use a presigned URL)"
        )
    if not parts.hostname:
        raise InvalidUri(uri, "the host is missing")
    name = urllib.parse.unquote(parts.path.rpartition("/")[2])
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidUri(uri, "its path does not end in a file name (https://HOST/PATH/FILE)")
    return HttpUri(uri, name)


def _parse_hf(uri: str) -> HfUri:
    rest = uri[len("hf://"):]
    repo_type: Literal["model", "dataset"] = "model"
    if rest.startswith("datasets/"):
        repo_type, rest = "dataset", rest[len("datasets/"):]
    elif rest.split("/", 1)[0] in ("spaces", "kernels", "buckets"):
        raise InvalidUri(
            uri, "only model (hf://ORG/NAME) and dataset (hf://datasets/ORG/NAME) repos are "
            "supported")
    org, _, rest = rest.partition("/")
    slash, at = rest.find("/"), rest.find("@")
    revision: str | None = None
    if at != -1 and (slash == -1 or at < slash):
        name, after = rest[:at], rest[at + 1:]
        # refs/pr/N and refs/convert/... keep their slashes (the HfFileSystem convention)
        special = _HF_SPECIAL_REVISION_RE.match(after)
        if special and after[special.end():special.end() + 1] in ("", "/"):
            revision, path = special.group(0), after[special.end() + 1:]
        else:
            encoded, _, path = after.partition("/")
            revision = urllib.parse.unquote(encoded)
        if not revision:
            raise InvalidUri(uri, "the revision after @ is empty")
        if _CONTROL_RE.search(revision) or " " in revision or ".." in revision:
            raise InvalidUri(uri, f"revision {revision!r} has spaces or '..'")
    else:
        name, _, path = rest.partition("/")
    if not org or not name:
        raise InvalidUri(uri, "the repo id is empty or has no organisation (hf://ORG/NAME)")
    for part in (org, name):
        if not HF_NAME_RE.fullmatch(part) or "--" in part or ".." in part:
            raise InvalidUri(
                uri, f"repo id part {part!r} may hold only letters, digits, '-', '_' and '.', "
                "not start or end with '-' or '.', and have no '--' or '..'"
            )
    repo_id = f"{org}/{name}"
    if len(repo_id) > 96 or name.endswith(".git"):
        raise InvalidUri(uri, f"repo id {repo_id!r} is longer than 96 characters or ends in .git")
    folder = path.endswith("/")
    path = path.removesuffix("/")
    problem = _path_problem(path) if path else None
    if problem:
        raise InvalidUri(uri, f"the path in the repo {problem}")
    return HfUri(repo_type, repo_id, revision, path, folder)
