"""The download and upload steps, orchestrated from the step contract's environment.

Inputs are staged, checked against their sha256 when one is given (MLTASK_INPUT_<NAME>_SHA256:
the spec's, or the upstream task's output digest a Pipeline hands on) and renamed into place
(unpacked when asked); outputs are stored with a manifest (for a folder) and the result file
written.

Digests: a file's sha256 is that of its bytes; a folder's is the sha256 of its manifest
(hashing.py), the same value the upload step reports in its result.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltask_operator.transfer import archive, https, progress, uris
from mltask_operator.transfer.errors import ContractError, TransferError
from mltask_operator.transfer.hashing import (
    MANIFEST_NAME,
    FileDigest,
    folder_digests,
    manifest,
    manifest_sha256,
)
from mltask_operator.transfer.limits import Limits
from mltask_operator.transfer.retry import Policy

if TYPE_CHECKING:
    from mltask_operator.transfer import s3

DEFAULT_INPUT_DIR = "/mltask/input"
DEFAULT_OUTPUT_DIR = "/mltask/output"
DEFAULT_RESULT_FILE = "/mltask/meta/result.json"
#: The pods' shared group (the builder's WORK_GROUP, their fsGroup) may write the checkpoint
#: folder, and what is made in it keeps that group (setgid): a run step of any user can write.
CHECKPOINT_MODE = 0o2775


@dataclass(frozen=True)
class Input:
    """One input of the download step: the dataset, or the model of an optimization task."""

    name: str  # dataset, model
    uri: uris.DownloadUri
    unpack: bool
    dest: Path
    sha256: str | None = None

    @property
    def variable(self) -> str:
        return f"MLTASK_INPUT_{self.name.upper()}"


@dataclass(frozen=True)
class LocalFile:
    """A file of the output folder: path relative to it ('/'-separated), real path, size."""

    rel: str
    path: Path
    size: int


def inputs(env: Mapping[str, str]) -> list[Input]:
    """The inputs the contract names, their URIs parsed (all before any transfer starts)."""
    base = Path(env.get("MLTASK_INPUT_DIR") or DEFAULT_INPUT_DIR)
    found = []
    for name in ("dataset", "model"):
        variable = f"MLTASK_INPUT_{name.upper()}"
        raw = env.get(f"{variable}_URI", "")
        if not raw:
            if name == "dataset":
                raise ContractError(f"{variable}_URI is not set: the download step has no input")
            continue
        if raw.startswith(uris.IN_PLACE_SCHEME):
            # the run step mounts the claim and reads the input where it is: nothing to fetch
            progress.log(f"{name}: {raw} is read in place by the run step, not downloaded")
            continue
        dest = Path(env.get(f"{variable}_DIR") or base / name)
        digest = env.get(f"{variable}_SHA256", "").strip().lower() or None
        if digest is not None and (len(digest) != 64 or any(c not in "0123456789abcdef"
                                                            for c in digest)):
            raise ContractError(f"{variable}_SHA256={digest[:80]!r} is not a sha256 (64 hex "
                                "digits)")
        found.append(Input(name, uris.parse_download(raw), _flag(env, f"{variable}_UNPACK"), dest,
                           digest))
    return found


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise ContractError(f"{name}={env[name]!r} is not true or false")


def download(env: Mapping[str, str]) -> None:
    """The download step: each input into its folder, replacing an earlier attempt's."""
    policy = Policy.from_env(env)
    todo = inputs(env)
    store = None
    if any(isinstance(i.uri, uris.S3Uri) for i in todo):
        from mltask_operator.transfer import s3  # noqa: F811 - boto3 only when needed

        store = s3.Store(env, policy)
    limits = Limits.from_env(env)
    _checkpoint_dir(env)
    for item in todo:
        _fetch(item, env, policy, store, limits)


def _checkpoint_dir(env: Mapping[str, str]) -> None:
    """Create MLTASK_CHECKPOINT_DIR for the run step, or leave the one an earlier attempt or
    pod wrote to as it is (that is what a run step resumes from)."""
    folder = env.get("MLTASK_CHECKPOINT_DIR")
    if not folder:
        return
    path = Path(folder)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise TransferError(f"MLTASK_CHECKPOINT_DIR {folder} is not a folder: the working "
                            "volume holds a file or a link there")
    if path.is_dir():
        progress.log(f"checkpoints in {folder}: {progress.count(_tally(path)[0], 'file')} "
                     "kept from earlier runs")
        return
    path.mkdir(parents=True)
    path.chmod(CHECKPOINT_MODE)  # mkdir's mode is cut by the umask


def _fetch(item: Input, env: Mapping[str, str], policy: Policy, store: s3.Store | None,
           limits: Limits) -> None:
    started = time.monotonic()
    staging = item.dest.parent / f".{item.dest.name}.partial"
    extra = [staging, item.dest.parent / f".{item.dest.name}.hf",
             item.dest.parent / f".{item.dest.name}.unpacked"]
    for path in extra:
        _remove(path)
    staging.mkdir(parents=True)
    try:
        listed = _copy(item, staging, env, policy, store, limits)
        _check_size(item, staging, limits)
        _verify(item, staging, listed)
        if item.unpack:
            staging = _unpack(item, staging, limits)
        _replace(staging, item.dest)
    finally:
        for path in extra:
            _remove(path)
    count, size = _tally(item.dest)
    seconds = time.monotonic() - started
    progress.log(f"downloaded {item.uri} to {item.dest}: {progress.count(count, 'file')}, "
                 f"{progress.format_size(size)} in {seconds:.1f} s")


def _copy(item: Input, staging: Path, env: Mapping[str, str], policy: Policy,
          store: s3.Store | None, limits: Limits) -> list[FileDigest] | None:
    """Download the input into `staging`; the files its folder's manifest lists, if it has one."""
    uri = item.uri
    listed: list[FileDigest] | None = None
    if isinstance(uri, uris.S3Uri):
        assert store is not None
        objs = store.objects(uri)
        if uri.is_folder:
            objs, listed = store.manifested(uri, objs)
        total = sum(o.size for o in objs)
        if limits.download_bytes is not None and total > limits.download_bytes:
            raise TransferError(f"download {uri}: {progress.format_size(total)} is more than "
                                f"MLTASK_DOWNLOAD_MAX_BYTES ({limits.download_bytes} bytes, the "
                                "working volume's size)")
        what = progress.count(len(objs), "object")
        progress.log(f"download {uri} ({what}, {progress.format_size(total)}) to {item.dest} "
                     f"from {store.where}, credentials: {store.credentials}")
        meter = progress.Meter("download", str(uri), total,
                               files=len(objs) if uri.is_folder else None)
        store.download(uri, objs, staging, meter)
        meter.finish()
    elif isinstance(uri, uris.HttpUri):
        progress.log(f"download {uri} to {item.dest}/{uri.filename} (no credentials sent)")
        https.download(uri, staging, env, policy, limits.download_bytes)
    else:
        from mltask_operator.transfer import hf

        work = item.dest.parent / f".{item.dest.name}.hf"
        hf.prepare_env(os.environ, work, policy)
        hf.download(uri, staging, work, env, policy)
    return listed


def _check_size(item: Input, staging: Path, limits: Limits) -> None:
    """What came down fits the bound (hf:// sizes are known only once there)."""
    if limits.download_bytes is None:
        return
    size = _tally(staging)[1]
    if size > limits.download_bytes:
        raise TransferError(f"download {item.uri}: {progress.format_size(size)} is more than "
                            f"MLTASK_DOWNLOAD_MAX_BYTES ({limits.download_bytes} bytes, the "
                            "working volume's size)")


def _single_file(item: Input, staging: Path) -> bool:
    """Whether the input is one file (its digest that of its bytes), not a folder."""
    uri = item.uri
    if isinstance(uri, uris.S3Uri):
        return not uri.is_folder
    if isinstance(uri, uris.HttpUri):
        return True
    entries = list(staging.iterdir())
    return bool(uri.path) and not uri.folder and len(entries) == 1 and entries[0].is_file()


def _verify(item: Input, staging: Path, listed: list[FileDigest] | None) -> None:
    """The files match their folder's manifest, and the input its given sha256: a mismatch is
    another upload's data (or a damaged one), never used."""
    if item.sha256 is None and listed is None:
        return
    got = folder_digests(str(staging))
    if listed is not None:
        expected = {f.path: f for f in listed}
        for f in got:
            want = expected.get(f.path)
            if want is not None and (want.sha256, want.size) != (f.sha256, f.size):
                raise TransferError(
                    f"download {item.uri}: {f.path} does not match the folder's {MANIFEST_NAME}: "
                    f"expected sha256 {want.sha256}, got {f.sha256} (the folder is being "
                    "written again, or was damaged)")
    if item.sha256 is None:
        return
    actual = got[0].sha256 if _single_file(item, staging) and len(got) == 1 else \
        manifest_sha256(got)
    if actual != item.sha256:
        raise TransferError(
            f"download {item.uri}: sha256 mismatch: expected {item.sha256} "
            f"({item.variable}_SHA256), got {actual}: the data changed since its digest was "
            "recorded (another run wrote the same URI?); not used")
    progress.log(f"verified {item.uri}: sha256 {actual}")


def _unpack(item: Input, staging: Path, limits: Limits) -> Path:
    entries = list(staging.iterdir())
    if len(entries) != 1 or not entries[0].is_file():
        raise TransferError(f"{item.variable}_UNPACK is true but {item.uri} is a folder of "
                            f"{progress.count(_tally(staging)[0], 'file')}: unpacking needs one "
                            "archive")
    unpacked = item.dest.parent / f".{item.dest.name}.unpacked"
    count = archive.unpack(entries[0], unpacked, limits)
    progress.log(f"unpacked {entries[0].name}: {progress.count(count, 'file')}")
    return unpacked


def _replace(staging: Path, dest: Path) -> None:
    """`staging` becomes `dest`; an earlier attempt's `dest` goes away whole (no mixed files)."""
    old = dest.parent / f".{dest.name}.old"
    _remove(old)
    if dest.exists() or dest.is_symlink():
        os.replace(dest, old)
    os.replace(staging, dest)
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _tally(folder: Path) -> tuple[int, int]:
    """(files, bytes) under `folder`."""
    count = size = 0
    for d, _, files in os.walk(folder):
        for f in files:
            count += 1
            size += os.lstat(os.path.join(d, f)).st_size
    return count, size


def scan(out: Path) -> tuple[list[LocalFile], bool]:
    """(the files of the output folder sorted by relative path, whether it has subfolders).
    Symlinks are followed only to files inside the folder: the run step must not get the upload
    pod to store what it cannot read itself (the pod's credentials, say)."""
    root = os.path.realpath(out)
    files: list[LocalFile] = []
    subfolders = False
    for d, dirs, names in os.walk(out):
        for name in dirs:
            if os.path.islink(os.path.join(d, name)):
                raise TransferError(f"{os.path.join(d, name)} is a symlink to a folder: the upload "
                                    "step stores files and folders, not links to folders")
        subfolders = subfolders or bool(dirs)
        for name in names:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, out).replace(os.sep, "/")
            if "\n" in rel or "\r" in rel:
                raise TransferError(f"{path!r} has a line break in its name, which the result's "
                                    "manifest cannot hold")
            real = os.path.realpath(path)
            if not archive.inside(root, real):
                raise TransferError(f"{path} is a symlink to {real}, outside {out}: not uploaded")
            st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                raise TransferError(f"{path} is not a regular file (a fifo, socket or device)")
            files.append(LocalFile(rel, Path(real), st.st_size))
    return sorted(files, key=lambda f: f.rel), subfolders


def upload(env: Mapping[str, str]) -> None:
    """The upload step: MLTASK_OUTPUT_DIR stored at MLTASK_OUTPUT_URI, then the result file."""
    policy = Policy.from_env(env)
    out = Path(env.get("MLTASK_OUTPUT_DIR") or DEFAULT_OUTPUT_DIR)
    raw = env.get("MLTASK_OUTPUT_URI", "")
    if not raw:
        raise ContractError("MLTASK_OUTPUT_URI is not set: the upload step has nowhere to store")
    uri = uris.parse_upload(raw)
    result_file = Path(env.get("MLTASK_RESULT_FILE") or DEFAULT_RESULT_FILE)
    if out.is_symlink():
        raise TransferError(f"{out} (MLTASK_OUTPUT_DIR) is a symlink to {os.readlink(out)}: the "
                            "run step writes its outputs into the folder itself, not a link")
    if not out.is_dir():
        raise TransferError(f"the run step wrote nothing to {out} (MLTASK_OUTPUT_DIR): "
                            "the folder does not exist")
    files, subfolders = scan(out)
    if not files:
        raise TransferError(f"the run step wrote nothing to {out} (MLTASK_OUTPUT_DIR)")
    if uri.is_folder and any(f.rel == MANIFEST_NAME for f in files):
        raise TransferError(f"{out}/{MANIFEST_NAME}: the name is the upload's own (the folder's "
                            "manifest); rename the file")
    if not uri.is_folder and len(files) != 1:
        sample = ", ".join(f.rel for f in files[:3]) + (", ..." if len(files) > 3 else "")
        raise TransferError(
            f"MLTASK_OUTPUT_URI {uri} names one object but {out} holds {len(files)} files "
            f"({sample}): end the URI with / to store a folder")
    from mltask_operator.transfer import s3  # noqa: F811 - boto3 only when needed

    started = time.monotonic()
    store = s3.Store(env, policy)
    total = sum(f.size for f in files)
    targets = [uri.child(f.rel) if uri.is_folder else uri for f in files]
    progress.log(f"upload {out} ({progress.count(len(files), 'file')}, "
                 f"{progress.format_size(total)}) to {uri} "
                 f"at {store.where}, credentials: {store.credentials}")
    meter = progress.Meter("upload", str(uri), total, files=len(files) if len(files) > 1 else None)
    digests = store.upload([(f.path, f.size, t) for f, t in zip(files, targets, strict=True)],
                           [f.rel for f in files], meter)
    meter.finish()
    if uri.is_folder:  # last: a download of the prefix takes only what this upload wrote
        store.put(uri.child(MANIFEST_NAME), manifest(digests).encode())
    one = len(files) == 1 and (not uri.is_folder or (not subfolders and "/" not in files[0].rel))
    result: dict[str, Any] = {
        "uri": str(targets[0]) if one else str(uri),
        "size": digests[0].size if one else sum(d.size for d in digests),
        "sha256": digests[0].sha256 if one else manifest_sha256(digests),
        "files": len(files),
    }
    write_json(result_file, result)
    progress.log(f"uploaded {out} to {result['uri']}: {progress.count(len(files), 'file')}, "
                 f"{progress.format_size(result['size'])} in {time.monotonic() - started:.1f} s, "
                 f"sha256 {result['sha256']}")


def write_json(path: Path, value: object) -> None:
    """Write `value` as JSON atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    with tmp.open("w") as f:
        json.dump(value, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
