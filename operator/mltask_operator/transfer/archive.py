"""Safe unpacking of .zip and .tar archives: members that would land outside are refused.

Kinds: .zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz (told by content). A refused member is named.

Our own checks, not tarfile's extraction filters (missing from Python before 3.11.4): refused are
absolute names, any '..' component, symlinks and hardlinks whose target leaves the destination,
devices and fifos, and encrypted zip members. Every write is checked against the folder as it is
on disk at that moment (so a symlink made by an earlier member cannot carry a later one outside),
files are created without following a symlink, and the result is checked once more at the end.
Modes keep their rwx bits only (no setuid, setgid or sticky); owners are not restored.

Bounded (transfer.limits): the bytes written (MLTASK_UNPACK_MAX_BYTES, counted as they are
written, whatever the archive's headers claim), the members (MLTASK_UNPACK_MAX_MEMBERS), the
length of a symlink's target (4 KiB; a zip's symlink member is read no further). A name in a
message is cut short, so an error stays one short line.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import IO

from mltask_operator.transfer.errors import TransferError, short
from mltask_operator.transfer.limits import Limits

KINDS = ".zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


class ArchiveError(TransferError):
    """The archive is not one, or a member of it is unsafe; the message names the member."""


def member_path(archive: str, name: str) -> str | None:
    """The '/'-separated path inside the destination of member `name`, or None for the root
    itself ('.', './'). Refuses absolute names and '..' components."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"{archive}: member {short(name)} has an absolute path")
    parts = []
    for part in name.replace("\\", "/").split("/"):
        if part == "..":
            raise ArchiveError(f"{archive}: member {short(name)} has a '..' component")
        if part not in ("", "."):
            parts.append(part)
    return "/".join(parts) or None


def inside(root: str, path: str) -> bool:
    """Whether `path` (real, absolute) is `root` (real, absolute) or under it."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def unpack(archive: Path, dest: Path, limits: Limits | None = None) -> int:
    """Unpack `archive` (any of KINDS, told by its content) into the folder `dest`; the number of
    files written."""
    dest.mkdir(parents=True, exist_ok=True)
    with archive.open("rb") as f:
        magic = f.read(4)
    writer = _Writer(archive.name, os.path.realpath(dest), limits or Limits())
    if magic in _ZIP_MAGIC:
        _unpack_zip(archive, writer)
    else:
        try:
            tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ArchiveError(
                f"{archive.name} is not a {KINDS} archive, so it cannot be unpacked ({e})"
            ) from None
        with tar:
            _unpack_tar(tar, writer)
    writer.check_links()
    return writer.files


def _unpack_zip(archive: Path, writer: _Writer) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"{archive.name} is not a readable zip archive ({e})") from None
    with zf:
        for info in zf.infolist():
            writer.member()
            rel = member_path(archive.name, info.filename)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0
            if rel is None:
                continue
            if info.flag_bits & 0x1:
                raise ArchiveError(f"{archive.name}: member {short(info.filename)} is encrypted")
            if info.is_dir() or stat.S_ISDIR(mode):
                writer.directory(info.filename, rel)
            elif stat.S_ISLNK(mode):
                writer.symlink(info.filename, rel, _zip_link(zf, info, writer))
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no type recorded
                raise ArchiveError(
                    f"{archive.name}: member {short(info.filename)} is a device, fifo or socket"
                )
            else:
                with zf.open(info) as src:
                    writer.file(info.filename, rel, src, mode or 0o644)


def _zip_link(zf: zipfile.ZipFile, info: zipfile.ZipInfo, writer: _Writer) -> str:
    """A zip symlink member's target, read no further than the bound."""
    bound = writer.limits.link_target
    data = b""
    if info.file_size <= bound:
        with zf.open(info) as src:
            data = src.read(bound + 1)
    if len(data) > bound or info.file_size > bound:
        raise ArchiveError(f"{writer.archive}: symlink {short(info.filename)} has a target "
                           f"longer than {bound} bytes")
    return data.decode("utf-8", "replace")


def _unpack_tar(tar: tarfile.TarFile, writer: _Writer) -> None:
    name = writer.archive
    for m in tar:
        writer.member()
        rel = member_path(name, m.name)
        if rel is None:
            continue
        if m.isdir():
            writer.directory(m.name, rel)
        elif m.isreg():
            src = tar.extractfile(m)
            assert src is not None
            with src:
                writer.file(m.name, rel, src, m.mode)
        elif m.issym():
            writer.symlink(m.name, rel, m.linkname)
        elif m.islnk():
            target = member_path(name, m.linkname)
            if target is None:
                raise ArchiveError(f"{name}: hardlink {short(m.name)} points to the archive's root")
            writer.hardlink(m.name, rel, m.linkname, target)
        elif m.ischr() or m.isblk():
            raise ArchiveError(f"{name}: member {short(m.name)} is a device")
        elif m.isfifo():
            raise ArchiveError(f"{name}: member {short(m.name)} is a fifo")
        else:
            raise ArchiveError(f"{name}: member {short(m.name)} has an unsupported type {m.type!r}")


class _Writer:
    """Writes members under `root`, checking each place against the folder as it is on disk."""

    def __init__(self, archive: str, root: str, limits: Limits) -> None:
        self.archive, self.root, self.limits = archive, root, limits
        self.files = self.members = self.written = 0
        self._links: list[tuple[str, str]] = []

    def member(self) -> None:
        """Count one more member, refused past the bound."""
        self.members += 1
        if self.members > self.limits.members:
            raise ArchiveError(f"{self.archive} has more than {self.limits.members} members "
                               "(MLTASK_UNPACK_MAX_MEMBERS)")

    def _too_big(self) -> ArchiveError:
        return ArchiveError(f"{self.archive} unpacks to more than {self.limits.unpack_bytes} "
                            "bytes (MLTASK_UNPACK_MAX_BYTES, the working volume's size)")

    def _place(self, name: str, rel: str) -> tuple[str, str]:
        """(real parent folder, base name) of member `rel`, the parent created; refused when the
        parent, as on disk now (symlinks resolved), is not under root."""
        parent_rel, _, base = rel.rpartition("/")
        parent = os.path.join(self.root, parent_rel) if parent_rel else self.root
        self._check(name, os.path.realpath(parent))
        os.makedirs(parent, exist_ok=True)
        real = os.path.realpath(parent)
        self._check(name, real)
        return real, base

    def _check(self, name: str, real: str) -> None:
        if not inside(self.root, real):
            raise ArchiveError(f"{self.archive}: member {short(name)} would be written outside the "
                               "destination (through a symlink)")

    def _clear(self, name: str, path: str) -> None:
        """Remove what an earlier member of the same name left (never a folder's content)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise ArchiveError(f"{self.archive}: member {short(name)} is both a folder and a file")
        os.unlink(path)

    def directory(self, name: str, rel: str) -> None:
        parent, base = self._place(name, rel)
        path = os.path.join(parent, base)
        if os.path.islink(path):
            raise ArchiveError(f"{self.archive}: folder {short(name)} is also a symlink")
        os.makedirs(path, exist_ok=True)
        self._check(name, os.path.realpath(path))

    def file(self, name: str, rel: str, src: IO[bytes], mode: int) -> None:
        parent, base = self._place(name, rel)
        path = os.path.join(parent, base)
        self._clear(name, path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     (mode & 0o777) | 0o600)
        bound = self.limits.unpack_bytes
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(1024 * 1024):
                self.written += len(chunk)
                if bound is not None and self.written > bound:
                    raise self._too_big()
                out.write(chunk)
        self.files += 1

    def symlink(self, name: str, rel: str, target: str) -> None:
        if len(target.encode("utf-8", "replace")) > self.limits.link_target:
            raise ArchiveError(f"{self.archive}: symlink {short(name)} has a target longer than "
                               f"{self.limits.link_target} bytes")
        if not target or target.startswith("/") or "\x00" in target:
            raise ArchiveError(
                f"{self.archive}: symlink {short(name)} -> {short(target)} points outside the "
                "destination"
            )
        parent, base = self._place(name, rel)
        if not inside(self.root, os.path.realpath(os.path.join(parent, target))):
            raise ArchiveError(
                f"{self.archive}: symlink {short(name)} -> {short(target)} points outside the "
                "destination"
            )
        path = os.path.join(parent, base)
        self._clear(name, path)
        os.symlink(target, path)
        self._links.append((name, path))

    def hardlink(self, name: str, rel: str, linkname: str, target: str) -> None:
        source = os.path.realpath(os.path.join(self.root, target))
        if not inside(self.root, source):
            raise ArchiveError(
                f"{self.archive}: hardlink {short(name)} -> {short(linkname)} points outside the "
                "destination"
            )
        if not os.path.isfile(source):
            raise ArchiveError(f"{self.archive}: hardlink {short(name)} -> {short(linkname)} "
                               "points to no earlier file of the archive")
        with open(source, "rb") as src:
            self.file(name, rel, src, os.stat(source).st_mode)

    def check_links(self) -> None:
        """Every symlink, with the whole folder in place, still resolves inside it."""
        for name, path in self._links:
            if os.path.islink(path) and not inside(self.root, os.path.realpath(path)):
                raise ArchiveError(
                    f"{self.archive}: symlink {short(name)} points outside the destination"
                )
