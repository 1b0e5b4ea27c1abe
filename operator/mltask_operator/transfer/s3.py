"""S3 and S3-compatible stores through boto3 and s3transfer.

The client (endpoint, region, retries, timeouts), where its credentials came from, listing with
exact-object and folder semantics, streaming downloads, hashing uploads, and errors naming the
bucket, key, HTTP status, S3 error code and credential source.
"""

from __future__ import annotations

import http
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from botocore import UNSIGNED
from s3transfer.exceptions import RetriesExceededError
from s3transfer.manager import TransferConfig, TransferManager
from s3transfer.subscribers import BaseSubscriber

from mltask_operator.transfer import progress
from mltask_operator.transfer.errors import TransferError
from mltask_operator.transfer.hashing import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    FileDigest,
    HashingReader,
    parse_manifest,
)
from mltask_operator.transfer.retry import Policy, log_retry
from mltask_operator.transfer.uris import S3Uri

MIB = 1024 * 1024
#: Multipart threshold and part size of uploads and ranged downloads.
CHUNK_BYTES = 8 * MIB
#: Requests in flight at once; with the in-memory part limit below this bounds memory.
CONCURRENCY = 8
_OPEN_FILES = 16  # uploads whose file is open at once
_HINT_PAGES = 10  # pages (of 1000 keys) counted for the "is a folder of N objects" hint

#: botocore's credential `method` in words, for messages (never the credentials themselves).
CREDENTIAL_SOURCES = {
    "assume-role-with-web-identity": "web identity token (AWS_ROLE_ARN={role})",
    "container-role": "container credentials (EKS Pod Identity or ECS task role)",
    "iam-role": "instance profile (EC2 instance metadata)",
    "shared-credentials-file": "shared credentials file (AWS_SHARED_CREDENTIALS_FILE)",
    "config-file": "AWS config file (AWS_CONFIG_FILE)",
    "custom-process": "credential_process of the AWS config file",
    "assume-role": "role assumed through the AWS config file",
    "sso": "AWS IAM Identity Center (SSO) token",
    "explicit": "keys given to the client",
}

#: What an S3 error code means, in words.
_MEANINGS = {
    "NoSuchBucket": "bucket {bucket} does not exist",
    "NoSuchKey": "{uri} does not exist",
    "SignatureDoesNotMatch": "the secret access key does not match the access key id",
    "InvalidAccessKeyId": "the store knows no such access key id",
    "AccessDenied": "the credentials are not allowed to {action} {uri}",
    "Forbidden": "the credentials are not allowed to {action} {uri}, or it does not exist",
    "AllAccessDisabled": "all access to bucket {bucket} is disabled",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is malformed or invalid",
    "PermanentRedirect": "bucket {bucket} is in another region: set AWS_REGION",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's: set AWS_REGION",
}


def describe_credentials(method: str | None, env: Mapping[str, str]) -> str:
    """Where botocore found credentials (its `Credentials.method`), in words."""
    secret = env.get("MLTASK_STORAGE_SECRET")
    if method is None:
        return "no credentials found (anonymous requests)" + (
            f"; Secret {secret} holds no AWS_ACCESS_KEY_ID" if secret else ""
        )
    if method == "env":
        keys = "AWS_ACCESS_KEY_ID" + (" and AWS_SESSION_TOKEN" if env.get("AWS_SESSION_TOKEN")
                                      else "")
        return f"{keys} from Secret {secret} (environment)" if secret else \
            f"{keys} from the environment"
    text = CREDENTIAL_SOURCES.get(method, method)
    return text.format(role=env.get("AWS_ROLE_ARN", "unset"))


def client_config(endpoint: str | None, policy: Policy, anonymous: bool) -> botocore.config.Config:
    """The botocore configuration: standard retries, timeouts, and for custom endpoints path-style
    addressing and checksums only when required (recent boto3 sends CRC checksums by default,
    which many S3-compatible stores refuse)."""
    options: dict[str, Any] = {
        # total_max_attempts counts the first attempt too (botocore's max_attempts does not)
        "retries": {"mode": "standard", "total_max_attempts": policy.attempts},
        "connect_timeout": policy.connect_timeout,
        "read_timeout": policy.read_timeout,
        "max_pool_connections": CONCURRENCY + 2,
        "user_agent_extra": "mltask-transfer",
    }
    if endpoint:
        options |= {
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            "s3": {"addressing_style": "path"},
        }
    if anonymous:
        options["signature_version"] = UNSIGNED
    return botocore.config.Config(**options)


@dataclass(frozen=True)
class Obj:
    """An object to download: its key, size, ETag and path relative to the destination folder."""

    key: str
    size: int
    etag: str | None
    path: str


def select(uri: S3Uri, listing: Iterable[tuple[str, int, str | None]]) -> list[Obj]:
    """The objects of folder `uri` from a listing of (key, size, etag) under its prefix: folder
    markers (keys ending with / of size 0) skipped, nothing else; each key's path relative to the
    folder checked, so that it names a file the destination can hold."""
    objs: list[Obj] = []
    for key, size, etag in listing:
        rel = key[len(uri.key):]
        if key.endswith("/"):
            if size == 0:
                continue
            raise TransferError(f"s3://{uri.bucket}/{key} ends with / but holds {size} bytes, "
                                "so it cannot be saved as a file")
        if any(part in ("", ".", "..") for part in rel.split("/")):
            raise TransferError(f"s3://{uri.bucket}/{key} cannot be saved as a file: its path "
                                f"{rel!r} has an empty, '.' or '..' segment")
        objs.append(Obj(key, size, etag, rel))
    paths = {o.path for o in objs}
    for o in objs:
        parts = o.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in paths:
                raise TransferError(
                    f"s3://{uri.bucket}/{uri.key}{'/'.join(parts[:i])} is an object and also a "
                    f"folder (of s3://{uri.bucket}/{o.key}): one folder cannot hold both")
    return objs


class Store:
    """One S3 client for the step, built from the step's environment."""

    def __init__(self, env: Mapping[str, str], policy: Policy) -> None:
        self.policy = policy
        self.endpoint = env.get("MLTASK_STORAGE_ENDPOINT") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
        session = boto3.session.Session(region_name=region)
        credentials = session.get_credentials()
        self.credentials = describe_credentials(credentials.method if credentials else None, env)
        verify = env.get("AWS_CA_BUNDLE") or env.get("REQUESTS_CA_BUNDLE") or \
            env.get("SSL_CERT_FILE") or None
        self.client = session.client(
            "s3", endpoint_url=self.endpoint, verify=verify,
            config=client_config(self.endpoint, policy, anonymous=credentials is None),
        )
        _RetryLog.install(self.client, policy.attempts)
        self.transfer_config = TransferConfig(
            multipart_threshold=CHUNK_BYTES,
            multipart_chunksize=CHUNK_BYTES,
            max_request_concurrency=CONCURRENCY,
            max_submission_concurrency=4,
            max_io_queue_size=100,  # 100 chunks of 256 KiB waiting for the disk at most
            num_download_attempts=policy.attempts,
            max_in_memory_upload_chunks=6,
            max_in_memory_download_chunks=6,
        )

    @property
    def where(self) -> str:
        return self.endpoint or "AWS S3"

    # -- errors ------------------------------------------------------------------------------

    def client_error(self, action: str, uri: S3Uri, e: botocore.exceptions.ClientError
                     ) -> TransferError:
        """A TransferError naming the object, HTTP status, S3 error code and credential source."""
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(e.response.get("Error", {}).get("Code") or "")
        if code.isdigit():  # a HEAD has no body: only the status
            code = _phrase(int(code))
        meaning = _MEANINGS.get(code)
        if meaning:
            why = meaning.format(bucket=uri.bucket, uri=uri, action=action)
        else:
            why = " ".join(str(e.response.get("Error", {}).get("Message") or "").split())[:200]
        return TransferError(
            f"{action} {uri} failed: HTTP {status} {code}{f' ({why})' if why else ''}; "
            f"credentials: {self.credentials}; store: {self.where}"
        )

    def other_error(self, action: str, uri: S3Uri, e: Exception) -> TransferError:
        text = " ".join(str(e).split()) or type(e).__name__
        return TransferError(f"{action} {uri} failed: {text} (after up to {self.policy.attempts} "
                             f"attempts); store: {self.where}")

    def _call(self, action: str, uri: S3Uri, fn: Any) -> Any:
        """`fn()`, its botocore and s3transfer errors made TransferErrors naming `uri`."""
        try:
            return fn()
        except botocore.exceptions.ClientError as e:
            raise self.client_error(action, uri, e) from None
        except (botocore.exceptions.BotoCoreError, RetriesExceededError) as e:
            raise self.other_error(action, uri, e) from None

    # -- listing -----------------------------------------------------------------------------

    def objects(self, uri: S3Uri) -> list[Obj]:
        """The objects `uri` names: one exact object, or every object under a folder."""
        if not uri.is_folder:
            return [self._head(uri)]
        listing = self._call("list", uri, lambda: self._listing(uri))
        objs = select(uri, listing)
        if objs:
            return objs
        markers = " (only empty folder markers)" if listing else ""
        if uri.key and self._exists(S3Uri(uri.bucket, uri.key.removesuffix("/"))):
            raise TransferError(
                f"{uri} holds no objects{markers}; s3://{uri.bucket}/{uri.key.removesuffix('/')} "
                "is an object: drop the final / to download it")
        raise TransferError(f"{uri} holds no objects{markers}; credentials: {self.credentials}")

    def manifested(self, uri: S3Uri, objs: list[Obj]) -> tuple[list[Obj], list[FileDigest] | None]:
        """(the objects to download, the files the folder's manifest lists or None): with a
        manifest (the upload step's), exactly the objects it lists; others under the prefix (an
        earlier attempt's, another run's) are left out, and a listed one missing is an error."""
        found = {o.path: o for o in objs}
        marker = found.pop(MANIFEST_NAME, None)
        if marker is None:
            return objs, None
        where = uri.child(MANIFEST_NAME)
        if marker.size > MAX_MANIFEST_BYTES:
            raise TransferError(f"{where} is larger than {MAX_MANIFEST_BYTES} bytes")
        body = self._call("download", where, lambda: self.client.get_object(
            Bucket=uri.bucket, Key=where.key)["Body"].read(MAX_MANIFEST_BYTES + 1))
        try:
            listed = parse_manifest(body.decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise TransferError(f"{where} is not a manifest of the upload step ({e})") from None
        chosen = []
        for f in listed:
            obj = found.pop(f.path, None)
            if obj is None or obj.size != f.size:
                state = "is missing" if obj is None else f"holds {obj.size} bytes, not {f.size}"
                raise TransferError(f"download {uri}: {uri.child(f.path)}, listed in {where}, "
                                    f"{state} (the folder is being written again?)")
            chosen.append(obj)
        if found:
            progress.log(f"{uri}: {progress.count(len(found), 'object')} not in its "
                         f"{MANIFEST_NAME} left out (an earlier upload's)")
        return chosen, listed

    def put(self, uri: S3Uri, data: bytes) -> None:
        """Store a small object (the manifest) in one request."""
        self._call("upload", uri, lambda: self.client.put_object(
            Bucket=uri.bucket, Key=uri.key, Body=data))

    def _listing(self, uri: S3Uri, max_pages: int | None = None
                 ) -> list[tuple[str, int, str | None]]:
        """(key, size, etag) of every object whose key starts with the folder's key; raises
        botocore's errors."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=uri.bucket, Prefix=uri.key)
        found = []
        for n, page in enumerate(pages, 1):
            found += [(i["Key"], int(i["Size"]), i.get("ETag")) for i in page.get("Contents", [])]
            if max_pages is not None and n >= max_pages:
                break
        return found

    def _exists(self, uri: S3Uri) -> bool:
        try:
            self.client.head_object(Bucket=uri.bucket, Key=uri.key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            return False
        return True

    def _head(self, uri: S3Uri) -> Obj:
        try:
            head = self.client.head_object(Bucket=uri.bucket, Key=uri.key)
        except botocore.exceptions.ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise self._missing(uri) from None
            raise self.client_error("download", uri, self._probe(uri, e)) from None
        except (botocore.exceptions.BotoCoreError, RetriesExceededError) as e:
            raise self.other_error("download", uri, e) from None
        return Obj(uri.key, int(head["ContentLength"]), head.get("ETag"), uri.key.split("/")[-1])

    def _missing(self, uri: S3Uri) -> TransferError:
        """The error for a missing object: the bucket's absence, or the folder of that name."""
        folder = S3Uri(uri.bucket, uri.key + "/")
        try:
            listing = self._listing(folder, max_pages=_HINT_PAGES)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return self.client_error("download", uri, e)
            listing = []  # no right to list: the hint is not to be had
        except botocore.exceptions.BotoCoreError:
            listing = []
        count = sum(1 for key, size, _ in listing if not (key.endswith("/") and size == 0))
        if count:
            many = "more than " if len(listing) >= _HINT_PAGES * 1000 else ""
            return TransferError(f"{uri} does not exist; {folder} is a folder of {many}{count} "
                                 "objects: end the URI with / to download it")
        return TransferError(f"{uri} does not exist (HTTP 404); credentials: {self.credentials}; "
                             f"store: {self.where}")

    def _probe(self, uri: S3Uri, e: botocore.exceptions.ClientError
               ) -> botocore.exceptions.ClientError:
        """A HEAD's error has no body, so no S3 error code: ask with a 1-byte GET to learn it."""
        try:
            self.client.get_object(Bucket=uri.bucket, Key=uri.key, Range="bytes=0-0")
        except botocore.exceptions.ClientError as probe:
            return probe
        except botocore.exceptions.BotoCoreError:
            pass
        return e

    # -- transfers ---------------------------------------------------------------------------

    def download(self, uri: S3Uri, objs: list[Obj], dest: Path, meter: progress.Meter) -> None:
        """Every object into `dest` at its relative path; s3transfer writes each to a temporary
        file beside it and renames it when complete."""
        per_object = len(objs) > 1
        with TransferManager(self.client, self.transfer_config) as manager:
            futures = []
            for obj in objs:
                path = dest / obj.path
                path.parent.mkdir(parents=True, exist_ok=True)
                sub = _Subscriber("download", S3Uri(uri.bucket, obj.key), obj.size, obj.etag,
                                  meter, per_object)
                futures.append((obj, manager.download(uri.bucket, obj.key, str(path),
                                                      subscribers=[sub])))
            for obj, future in futures:
                self._call("download", S3Uri(uri.bucket, obj.key), future.result)

    def upload(self, files: list[tuple[Path, int, S3Uri]], relative: list[str],
               meter: progress.Meter) -> list[FileDigest]:
        """Each (local path, size, target) stored at its target; their sha256 and size as the
        bytes were sent (HashingReader), with their relative paths."""
        per_object = len(files) > 1
        slots = threading.BoundedSemaphore(_OPEN_FILES)
        readers: list[tuple[HashingReader, Any, S3Uri, Path, int]] = []
        with TransferManager(self.client, self.transfer_config) as manager:
            for path, size, target in files:
                slots.acquire()
                reader = HashingReader(path.open("rb"))
                def done(r: HashingReader = reader) -> None:
                    r.close()
                    slots.release()

                sub = _Subscriber("upload", target, size, None, meter, per_object, done=done)
                future = manager.upload(reader, target.bucket, target.key, subscribers=[sub])
                readers.append((reader, future, target, path, size))
            for _, future, target, _, _ in readers:
                self._call("upload", target, future.result)
        digests = []
        for (reader, _, target, path, size), rel in zip(readers, relative, strict=True):
            if reader.size != size:
                raise TransferError(f"{path} changed while it was uploaded to {target} "
                                    f"({size} bytes before, {reader.size} sent)")
            digests.append(FileDigest(rel, reader.size, reader.sha256))
        return digests


class _Subscriber(BaseSubscriber):  # type: ignore[misc]
    """Feeds s3transfer's progress into the meter, gives it the size (and ETag) we already know
    (no HEAD per object), and prints a line when an object of a folder is done."""

    def __init__(self, verb: str, uri: S3Uri, size: int, etag: str | None,
                 meter: progress.Meter, per_object: bool, done: Any = None) -> None:
        self.verb, self.uri, self.size, self.etag = verb, uri, size, etag
        self.meter, self.per_object, self._done = meter, per_object, done
        self.started = time.monotonic()

    def on_queued(self, future: Any, **kwargs: Any) -> None:
        future.meta.provide_transfer_size(self.size)
        if self.etag and hasattr(future.meta, "provide_object_etag"):
            future.meta.provide_object_etag(self.etag)

    def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
        self.meter.add(bytes_transferred)

    def on_done(self, future: Any, **kwargs: Any) -> None:
        if self._done is not None:
            self._done()
        try:
            future.result()
        except BaseException:  # reported by the caller's result()
            return
        self.meter.file_done()
        if self.per_object:
            seconds = time.monotonic() - self.started
            progress.log(progress.progress_line(self.verb, str(self.uri), self.size, self.size,
                                                seconds))


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        return str(status)


class _RetryLog(logging.Handler):
    """A log line for each retry botocore and s3transfer make: both decide retries themselves and
    say so only at DEBUG level; a needs-retry hook notes the cause first, in the same thread."""

    _installed = False
    _cause = threading.local()

    @classmethod
    def install(cls, client: Any, attempts: int) -> None:
        client.meta.events.register_first("needs-retry.s3", cls._note)
        if cls._installed:
            return
        cls._installed = True
        handler = cls()
        handler.attempts = attempts
        for name in ("botocore.endpoint", "s3transfer.download"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)

    @classmethod
    def _note(cls, response: Any = None, caught_exception: Any = None, attempts: int = 0,
              operation: Any = None, request_dict: Any = None, **kwargs: Any) -> None:
        if caught_exception is not None:
            cause = " ".join(str(caught_exception).split()) or type(caught_exception).__name__
        elif response is not None:
            status = response[0].status_code
            code = response[1].get("Error", {}).get("Code") if response[1] else None
            cause = f"HTTP {status}" + (f" {code}" if code else "")
        else:
            cause = "no response"
        what = getattr(operation, "name", "request")
        url = urllib.parse.urlsplit(str((request_dict or {}).get("url", "")))
        part = urllib.parse.parse_qs(url.query).get("partNumber")
        what += f" {url.path}" + (f" part {part[0]}" if part else "")
        cls._cause.text = f"{what}: {cause}"
        cls._cause.attempt = attempts

    attempts = 0

    def emit(self, record: logging.LogRecord) -> None:
        msg = str(record.msg)
        if record.name == "botocore.endpoint" and msg.startswith("Response received to retry"):
            text = getattr(self._cause, "text", "request failed")
            attempt = getattr(self._cause, "attempt", 0)
            what, _, cause = text.partition(": ")
            delay = record.args[0] if isinstance(record.args, tuple) and record.args else None
            log_retry(what, cause, attempt, self.attempts,
                      float(str(delay)) if delay else None)
        elif record.name == "s3transfer.download" and msg.startswith("Retrying exception"):
            args = record.args if isinstance(record.args, tuple) else ()
            if len(args) == 3:
                cause = " ".join(str(args[0]).split())
                log_retry("GetObject body", f"interrupted ({cause})", int(str(args[1])) + 1,
                          int(str(args[2])), None)
