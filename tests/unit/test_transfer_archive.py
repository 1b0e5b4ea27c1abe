"""Safe unpacking: archives built in tmp_path; malicious ones refused, naming the member."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mltask_operator.transfer import archive
from mltask_operator.transfer.archive import ArchiveError


def tar_of(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w"
           ) -> Path:
    with tarfile.open(path, mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, linkname, 0o644
    return info


def zip_of(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def tree(root: Path) -> dict[str, str]:
    found = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = Path(d, f)
            rel = p.relative_to(root).as_posix()
            found[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else p.read_text()
    return found


@pytest.mark.parametrize("mode", ["w", "w:gz", "w:bz2", "w:xz"], ids=["tar", "tgz", "tbz2", "txz"])
def test_tar_unpacks_files_folders_and_inside_links(tmp_path: Path, mode: str) -> None:
    src = tar_of(tmp_path / "a.tar", [
        (member("./data/", tarfile.DIRTYPE), None),
        (member("./data/train.csv"), b"1,2\n"),
        (member("data/empty.txt"), b""),
        (member("data/.hidden"), b"h"),
        (member("data/latest.csv", tarfile.SYMTYPE, "train.csv"), None),
        (member("copy.csv", tarfile.LNKTYPE, "data/train.csv"), None),
    ], mode)
    dest = tmp_path / "out"
    assert archive.unpack(src, dest) == 4
    assert tree(dest) == {"data/train.csv": "1,2\n", "data/empty.txt": "", "data/.hidden": "h",
                          "data/latest.csv": "-> train.csv", "copy.csv": "1,2\n"}


def test_zip_unpacks_and_keeps_modes_without_setuid(tmp_path: Path) -> None:
    src = tmp_path / "a.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("dir/", b"")
        info = zipfile.ZipInfo("dir/run.sh")
        info.create_system, info.external_attr = 3, (stat.S_IFREG | 0o4755) << 16
        zf.writestr(info, b"#!/bin/sh\n")
        zf.writestr("empty", b"")
    dest = tmp_path / "out"
    assert archive.unpack(src, dest) == 2
    mode = (dest / "dir/run.sh").stat().st_mode
    assert mode & 0o777 == 0o755 and not mode & stat.S_ISUID
    assert (dest / "empty").read_bytes() == b""


def test_not_an_archive_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "data.csv"
    src.write_text("a,b\n")
    with pytest.raises(ArchiveError, match=r"data.csv is not a \.zip, \.tar"):
        archive.unpack(src, tmp_path / "out")


MALICIOUS_TARS = [
    ("dotdot", [(member("../evil.txt"), b"x")], "'../evil.txt' has a '..' component"),
    ("dotdot-inside", [(member("a/../../evil.txt"), b"x")], "has a '..' component"),
    ("absolute", [(member("/tmp/evil.txt"), b"x")], "'/tmp/evil.txt' has an absolute path"),
    ("symlink-absolute", [(member("etc", tarfile.SYMTYPE, "/etc"), None)],
     "symlink 'etc' -> '/etc' points outside"),
    ("symlink-up", [(member("up", tarfile.SYMTYPE, "../.."), None)],
     "symlink 'up' -> '../..' points outside"),
    ("hardlink-out", [(member("passwd", tarfile.LNKTYPE, "../../etc/passwd"), None)],
     "has a '..' component"),
    ("hardlink-absolute", [(member("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
     "has an absolute path"),
    ("hardlink-missing", [(member("x", tarfile.LNKTYPE, "nothing"), None)],
     "points to no earlier file"),
    ("char-device", [(member("null", tarfile.CHRTYPE), None)], "'null' is a device"),
    ("block-device", [(member("sda", tarfile.BLKTYPE), None)], "'sda' is a device"),
    ("fifo", [(member("pipe", tarfile.FIFOTYPE), None)], "'pipe' is a fifo"),
    # a safe-looking link, then a file written through it
    ("write-through-link", [(member("d", tarfile.SYMTYPE, "."), None),
                            (member("up", tarfile.SYMTYPE, "d/.."), None)],
     "symlink 'up' -> 'd/..' points outside"),
    # the link is checked when made (b missing: looks inside), b then turns it outward
    ("link-turned-outward", [(member("a", tarfile.SYMTYPE, "b/.."), None),
                             (member("b", tarfile.SYMTYPE, "."), None),
                             (member("a/evil.txt"), b"x")],
     "'a/evil.txt' would be written outside"),
]


@pytest.mark.parametrize(("members", "message"), [c[1:] for c in MALICIOUS_TARS],
                         ids=[c[0] for c in MALICIOUS_TARS])
def test_malicious_tar_is_refused_naming_the_member(tmp_path: Path, members: list, message: str
                                                    ) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    src = tar_of(work / "evil.tar", members)
    dest = work / "out"
    with pytest.raises(ArchiveError) as caught:
        archive.unpack(src, dest)
    assert message in str(caught.value)
    assert str(caught.value).startswith("evil.tar")
    assert not (tmp_path / "evil.txt").exists() and not (work / "evil.txt").exists()


def test_link_made_outward_later_is_caught_at_the_end(tmp_path: Path) -> None:
    src = tar_of(tmp_path / "late.tar", [(member("a", tarfile.SYMTYPE, "b/.."), None),
                                         (member("b", tarfile.SYMTYPE, "."), None)])
    with pytest.raises(ArchiveError, match="symlink 'a' points outside"):
        archive.unpack(src, tmp_path / "out")


MALICIOUS_ZIPS = [
    ("dotdot", {"../evil.txt": b"x"}, None, "has a '..' component"),
    ("absolute", {"/evil.txt": b"x"}, None, "has an absolute path"),
    ("backslash-dotdot", {"..\\evil.txt": b"x"}, None, "has a '..' component"),
    ("symlink-out", {}, {"link": "../../etc"}, "symlink 'link' -> '../../etc' points outside"),
]


@pytest.mark.parametrize(("members", "links", "message"), [c[1:] for c in MALICIOUS_ZIPS],
                         ids=[c[0] for c in MALICIOUS_ZIPS])
def test_malicious_zip_is_refused_naming_the_member(tmp_path: Path, members: dict, links: dict,
                                                    message: str) -> None:
    src = zip_of(tmp_path / "evil.zip", members, links)
    with pytest.raises(ArchiveError, match=message.replace("(", r"\(")):
        archive.unpack(src, tmp_path / "x" / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_inside_is_made(tmp_path: Path) -> None:
    src = zip_of(tmp_path / "ok.zip", {"a.txt": b"a"}, {"b.txt": "a.txt"})
    dest = tmp_path / "out"
    archive.unpack(src, dest)
    assert os.readlink(dest / "b.txt") == "a.txt" and (dest / "b.txt").read_text() == "a"


@pytest.mark.parametrize(("name", "expected"), [
    ("a/b.txt", "a/b.txt"), ("./a/./b", "a/b"), ("a//b", "a/b"), (".", None), ("./", None),
], ids=["plain", "dots", "double-slash", "root", "root-slash"])
def test_member_path(name: str, expected: str | None) -> None:
    assert archive.member_path("x.tar", name) == expected
