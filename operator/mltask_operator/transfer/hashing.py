"""sha256 and size of uploaded files, computed as they stream, and the manifest of a folder.

A folder's sha256 is the sha256 of its manifest: one line per file,
`"<sha256 hex>  <size in bytes>  <relative path>\\n"`, sorted by relative path ('/'-separated,
ordered by code point), so `sha256sum`-like tools can recompute it from the stored objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO


class HashingReader:
    """A read-only, non-seekable view of a binary file that hashes and counts the bytes read.

    Non-seekable on purpose: s3transfer then takes its path for streams, reading the file once,
    in order, part after part, so the digest is that of the bytes sent; a seekable file would be
    read by several threads at once, out of order. Memory stays bounded by s3transfer's
    in-memory part limit."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._sha256.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        self._raw.close()

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


@dataclass(frozen=True)
class FileDigest:
    """A stored file: its path relative to the folder ('/'-separated), size and sha256."""

    path: str
    size: int
    sha256: str


def manifest(files: Iterable[FileDigest]) -> str:
    """The manifest text of a folder (see the module docstring)."""
    return "".join(f"{f.sha256}  {f.size}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))


def manifest_sha256(files: Iterable[FileDigest]) -> str:
    """The sha256 of a folder: of its manifest."""
    return hashlib.sha256(manifest(files).encode()).hexdigest()


#: The object an upload of a folder writes last under its prefix: the folder's manifest (the
#: text above), so a download of the prefix takes exactly the files of the upload that wrote
#: it, whatever else an earlier attempt or another run left there.
MANIFEST_NAME = ".mltask-manifest"
#: The longest manifest read back (about 500,000 files).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def parse_manifest(text: str) -> list[FileDigest]:
    """The files a manifest lists; ValueError on a line that is not `<sha256>  <size>  <path>`."""
    files = []
    for n, line in enumerate(text.splitlines(), 1):
        digest, sep1, rest = line.partition("  ")
        size, sep2, path = rest.partition("  ")
        if not (sep1 and sep2 and path and size.isdigit() and len(digest) == 64
                and all(c in "0123456789abcdef" for c in digest)):
            raise ValueError(f"line {n} is not '<sha256>  <size>  <path>'")
        files.append(FileDigest(path, int(size), digest))
    return files


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def folder_digests(folder: str) -> list[FileDigest]:
    """Every file under `folder` (symlinks not followed) with its relative path, size, sha256."""
    import os

    found = []
    for d, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(d, name)
            if os.path.islink(path):
                continue
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            found.append(FileDigest(rel, os.lstat(path).st_size, file_sha256(path)))
    return sorted(found, key=lambda f: f.path)
