"""Container images for the real node, built here without a registry or a Docker engine.

    python -m harness.images build  [NAME...]   # build (or reuse) each image's OCI archive
    python -m harness.images import [NAME...]   # and import them into the node's containerd
    python -m harness.images list               # the archives, sizes and build times
    python -m harness.images push NAME --to DEST  # push one to a registry (buildah push)

Images (NAME):
- `pause`: tests/images/pause/pause.c built with `gcc -static`, tagged registry.k8s.io/pause:3.10
  (containerd's sandbox_image), one file in one layer;
- `argoexec`: the static argoexec from tests/tools/build.sh plus /etc/mime.types, nsswitch.conf,
  passwd, group (tests/images/argoexec/) and Debian's CA bundle, tagged
  quay.io/argoproj/argoexec:<ARGO_VERSION> (the workflow-controller's default executor image);
- `python-base`: Debian bookworm from Debian's packages (`debootstrap --variant=minbase
  --include=python3,python3-venv,ca-certificates`, from the mirror apt uses), docs, man pages,
  locales and apt lists stripped, tagged localhost/mltask-python-base:bookworm;
- `mltask-operator`: the repo's Dockerfile built by buildah FROM python-base, tagged
  localhost/mltask-operator:<project version>;
- `example-sklearn`: examples/images/sklearn-digits/Dockerfile (when it exists), the same way.

Each image becomes an OCI archive in ~/.cache/mltask-operator/images/, named by a hash of its
inputs (recipe files, Dockerfile and the build context its .dockerignore leaves, build
arguments, the base image's id), so it is rebuilt only when one of them changes. The archive's
index carries `io.containerd.image.name`, which `ctr images import` names the image by.
Single-file images (pause, argoexec, python-base) are packed here; Dockerfile images are built
by buildah (storage in ~/.cache/mltask-operator/buildah, chroot isolation, base images loaded
from their archives, never pulled). Needs root (debootstrap, buildah).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.controlplane import BIN_DIR, CACHE, REPO, versions

IMAGES_DIR = CACHE / "images"
BUILDAH_ROOT = CACHE / "buildah" / "storage"
BUILDAH_RUNROOT = Path("/run/mltask-buildah")
RECIPES = REPO / "tests" / "images"
#: Bump to rebuild every image (the way archives are packed changed).
RECIPE_VERSION = "1"

PROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
ARGO_VERSION = versions()["ARGO_VERSION"]
PAUSE_TAG = "registry.k8s.io/pause:3.10"
ARGOEXEC_TAG = f"quay.io/argoproj/argoexec:{ARGO_VERSION}"
PYTHON_BASE_TAG = "localhost/mltask-python-base:bookworm"
OPERATOR_TAG = f"localhost/mltask-operator:{PROJECT_VERSION}"
SKLEARN_TAG = f"localhost/mltask-example-sklearn:{PROJECT_VERSION}"
SKLEARN_CONTEXT = REPO / "examples" / "images" / "sklearn-digits"

DEBIAN_SUITE = "bookworm"
DEBIAN_INCLUDE = ("python3", "python3-venv", "ca-certificates")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Removed from the debootstrapped tree (globs relative to its root); copyright files stay.
BASE_STRIP = (
    "usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*", "usr/share/linda/*",
    "var/lib/apt/lists/*", "var/cache/apt/*", "var/cache/debconf/*-old", "var/lib/dpkg/*-old",
    "var/log/*", "dev/*",
)
#: Written into the base so packages a derived image installs skip docs and locales too.
BASE_DPKG_NODOC = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
"""
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageError(RuntimeError):
    """An image could not be built or imported; the message says which and why."""


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


@dataclass
class Built:
    """One image's OCI archive, as recorded beside it in `<archive>.json`."""

    name: str
    tag: str
    key: str  # hash of the inputs
    archive: str
    digest: str  # the manifest's digest: what containerd records as the image's target
    config_digest: str  # the image id (containers/storage and containerd's CRI use it)
    size: int
    seconds: float
    cached: bool = False

    def line(self) -> str:
        how = "cached" if self.cached else "built"
        return (f"{how} {self.name} {self.tag}: {self.archive} "
                f"({self.size / 1e6:.1f} MB, built in {self.seconds:.1f}s)")


# --------------------------------------------------------------------------- hashing


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _key(*parts: object) -> str:
    h = hashlib.sha256(RECIPE_VERSION.encode())
    for part in parts:
        h.update(b"\0")
        h.update(part if isinstance(part, bytes) else str(part).encode())
    return h.hexdigest()


def _ignore_patterns(context: Path) -> list[tuple[bool, str, re.Pattern[str]]]:
    """.dockerignore as (negated, pattern, regex): `*` and `?` within a path segment, `**`
    across segments, a leading or trailing `/` ignored, `!` re-includes."""
    path = context / ".dockerignore"
    patterns: list[tuple[bool, str, re.Pattern[str]]] = []
    if not path.exists():
        return patterns
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().strip("/")
        out = ""
        i = 0
        while i < len(line):
            if line.startswith("**", i):
                out += ".*"
                i += 2
                if line.startswith("/", i):
                    out += "/?"
                    i += 1
            elif line[i] == "*":
                out += "[^/]*"
                i += 1
            elif line[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(line[i])
                i += 1
        patterns.append((negated, line, re.compile(out + "$")))
    return patterns


def _ignored(rel: str, patterns: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, _, pattern in patterns:
        if any(pattern.match(p) for p in prefixes):
            result = not negated
    return result


def context_files(context: Path) -> list[Path]:
    """Files of a build context that a build sees (.dockerignore applied), sorted."""
    patterns = _ignore_patterns(context)
    reincluded = [raw for negated, raw, _ in patterns if negated]

    def prunable(rel: str) -> bool:  # ignored, and no `!` pattern can reach inside
        return _ignored(rel, patterns) and not any(
            "*" in raw or "?" in raw or raw.startswith(rel + "/") for raw in reincluded)

    found: list[Path] = []
    for root, dirs, files in os.walk(context):
        rel_root = Path(root).relative_to(context)
        dirs[:] = [d for d in dirs if not prunable((rel_root / d).as_posix())]
        for name in files:
            rel = (rel_root / name).as_posix()
            if not _ignored(rel, patterns):
                found.append(context / rel)
    return sorted(found)


def context_digest(context: Path) -> str:
    h = hashlib.sha256()
    for path in context_files(context):
        rel = path.relative_to(context).as_posix()
        st = path.lstat()
        content = "link:" + os.readlink(path) if path.is_symlink() else _sha256_file(path)
        h.update(f"{rel}\0{st.st_mode & 0o777:o}\0{content}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------- OCI archives


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


@dataclass
class LayerEntry:
    """One entry of a layer packed here: a directory (data None), file or symlink."""

    path: str
    data: bytes | None = None
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    symlink: str | None = None


def _write_layer(entries: list[LayerEntry], out: Path) -> None:
    """A deterministic uncompressed layer tar (mtime 0, numeric owners, sorted)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(entry.path)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
            if entry.symlink is not None:
                info.type, info.linkname = tarfile.SYMTYPE, entry.symlink
                tar.addfile(info)
            elif entry.data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))


def write_oci_archive(out: Path, tag: str, config: dict[str, Any], layer: Path,
                      history: str) -> tuple[str, str]:
    """An OCI archive of one image with one uncompressed layer; returns (manifest digest,
    config digest). The index names the image for containerd (`io.containerd.image.name`) and,
    by its tag, for OCI tools (`org.opencontainers.image.ref.name`)."""
    layer_digest = "sha256:" + _sha256_file(layer)
    image_config = _json_bytes({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": history}],
    })
    config_digest = "sha256:" + hashlib.sha256(image_config).hexdigest()
    manifest = _json_bytes({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(image_config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.stat().st_size}],
    })
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = _json_bytes({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": tag,
                            "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[1]},
        }],
    })
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _tar_add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _tar_add_bytes(tar, "index.json", index)
        for digest, data in ((config_digest, image_config), (manifest_digest, manifest)):
            _tar_add_bytes(tar, f"blobs/sha256/{digest.split(':')[1]}", data)
        info = tar.gettarinfo(str(layer), f"blobs/sha256/{layer_digest.split(':')[1]}")
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        with open(layer, "rb") as f:
            tar.addfile(info, f)
    tmp.rename(out)
    return manifest_digest, config_digest


def _archive_layout(layout: Path, out: Path, tag: str) -> tuple[str, str]:
    """Tar an OCI layout directory (as `buildah push oci:` writes it) into an archive, with
    the image name annotation containerd imports by; returns (manifest, config) digests."""
    index = json.loads((layout / "index.json").read_text())
    if len(index["manifests"]) != 1:
        raise ImageError(f"{layout}: expected one manifest, found {len(index['manifests'])}")
    desc = index["manifests"][0]
    desc.setdefault("annotations", {})["io.containerd.image.name"] = tag
    (layout / "index.json").write_bytes(_json_bytes(index))
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"].split(":")[1]).read_text())
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in layout.rglob("*") if p.is_file()):
            info = tar.gettarinfo(str(path), path.relative_to(layout).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    tmp.rename(out)
    return desc["digest"], manifest["config"]["digest"]


# --------------------------------------------------------------------------- the cache


def _record_path(archive: Path) -> Path:
    return archive.with_name(archive.name + ".json")


def cached(name: str, key: str) -> Built | None:
    archive = IMAGES_DIR / f"{name}-{key[:16]}.oci.tar"
    record = _record_path(archive)
    if archive.exists() and record.exists():
        built = Built(**json.loads(record.read_text()))
        if built.key == key:
            built.cached = True
            return built
    return None


def _store(name: str, tag: str, key: str,
           make: Callable[[Path], tuple[str, str]]) -> Built:
    """Build an archive with `make(archive_path)` unless one with this key exists."""
    hit = cached(name, key)
    if hit:
        log(hit.line())
        return hit
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    archive = IMAGES_DIR / f"{name}-{key[:16]}.oci.tar"
    log(f"building {name} {tag}")
    t0 = time.monotonic()
    digest, config_digest = make(archive)
    built = Built(name=name, tag=tag, key=key, archive=str(archive), digest=digest,
                  config_digest=config_digest, size=archive.stat().st_size,
                  seconds=round(time.monotonic() - t0, 1))
    _record_path(archive).write_text(json.dumps(asdict(built), indent=2))
    for old in IMAGES_DIR.glob(f"{name}-*.oci.tar"):  # earlier inputs' archives
        if old != archive and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}\.oci\.tar",
                                           old.name):
            old.unlink()
            _record_path(old).unlink(missing_ok=True)
    log(built.line())
    return built


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """One build at a time per machine (make images and a test session may overlap)."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    with open(IMAGES_DIR / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], what: str, *, timeout: float = 3600) -> str:
    """Run a build step in its own process group, killed with it on timeout or interrupt."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        tail = "\n".join((out + err).strip().splitlines()[-30:])
        raise ImageError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return out


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise ImageError(f"{what} needs root (debootstrap, buildah and containerd do)")


def _require_tool(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise ImageError(f"`{tool}` not found: install Debian's {package} package "
                         f"(.ci/run installs it)")


# --------------------------------------------------------------------------- pause, argoexec


def build_pause() -> Built:
    source = RECIPES / "pause" / "pause.c"
    _require_tool("gcc", "gcc")
    gcc = _run(["gcc", "--version"], "gcc --version").splitlines()[0]
    key = _key("pause", source.read_bytes(), gcc)

    def make(archive: Path) -> tuple[str, str]:
        with tempfile.TemporaryDirectory(dir=IMAGES_DIR) as tmp:
            binary = Path(tmp) / "pause"
            _run(["gcc", "-static", "-Os", "-Wall", "-o", str(binary), str(source)],
                 "gcc -static pause.c (needs libc6-dev)")
            _run(["strip", str(binary)], "strip pause")
            layer = Path(tmp) / "layer.tar"
            _write_layer([LayerEntry("pause", binary.read_bytes(), 0o755)], layer)
            return write_oci_archive(
                archive, PAUSE_TAG, {"Entrypoint": ["/pause"], "User": "65535:65535"}, layer,
                "harness.images: tests/images/pause/pause.c, gcc -static")

    return _store("pause", PAUSE_TAG, key, make)


def _debian_ca_bundle() -> bytes:
    """Debian's CA bundle as the ca-certificates package ships it (not the host's additions)."""
    certs = sorted(Path("/usr/share/ca-certificates/mozilla").glob("*.crt"))
    if not certs:
        raise ImageError("Debian's ca-certificates package is not installed "
                         "(/usr/share/ca-certificates/mozilla is empty)")
    return b"".join(c.read_bytes().rstrip(b"\n") + b"\n" for c in certs)


def build_argoexec() -> Built:
    binary = BIN_DIR / "argoexec"
    if not binary.exists():
        raise ImageError(f"{binary} is missing: build it with `tests/tools/build.sh argoexec`")
    files = {name: (RECIPES / "argoexec" / name).read_bytes()
             for name in ("passwd", "group", "nsswitch.conf", "mime.types")}
    ca = _debian_ca_bundle()
    key = _key("argoexec", _sha256_file(binary.resolve()), ca,
               *(f"{n}:{hashlib.sha256(d).hexdigest()}" for n, d in sorted(files.items())))

    def make(archive: Path) -> tuple[str, str]:
        entries = [LayerEntry(d) for d in ("bin", "etc", "etc/ssl", "etc/ssl/certs")]
        entries += [LayerEntry("tmp", mode=0o1777),
                    LayerEntry("bin/argoexec", binary.read_bytes(), 0o755),
                    LayerEntry("etc/ssl/certs/ca-certificates.crt", ca, 0o644)]
        entries += [LayerEntry(f"etc/{n}", d, 0o644) for n, d in files.items()]
        with tempfile.TemporaryDirectory(dir=IMAGES_DIR) as tmp:
            layer = Path(tmp) / "layer.tar"
            _write_layer(entries, layer)
            # as Argo's own image: argoexec on PATH, user 8737
            return write_oci_archive(
                archive, ARGOEXEC_TAG,
                {"Entrypoint": ["argoexec"], "User": "8737", "Env": [PATH_ENV],
                 "WorkingDir": "/"},
                layer, f"harness.images: argoexec {ARGO_VERSION} from tests/tools/build.sh")

    return _store("argoexec", ARGOEXEC_TAG, key, make)


# --------------------------------------------------------------------------- python base


def debian_mirror() -> str:
    """The Debian mirror apt uses (deb822 .sources or one-line lists); $MLTASK_DEBIAN_MIRROR
    overrides it."""
    if os.environ.get("MLTASK_DEBIAN_MIRROR"):
        return os.environ["MLTASK_DEBIAN_MIRROR"]
    apt = Path("/etc/apt")
    for path in sorted(apt.glob("sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.M))
            if DEBIAN_SUITE in fields.get("Suites", "").split() and \
                    "main" in fields.get("Components", "").split():
                return fields["URIs"].split()[0]
    for path in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if path.exists():
            for m in re.finditer(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{DEBIAN_SUITE}\s+.*\bmain\b",
                                 path.read_text(), flags=re.M):
                return m.group(1)
    raise ImageError(f"no Debian {DEBIAN_SUITE} mirror found in {apt}; "
                     "set MLTASK_DEBIAN_MIRROR")


def _unmount_under(root: Path) -> None:
    """Unmount anything left mounted below `root` (a failed debootstrap leaves /proc, /sys)."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    prefix = str(root.resolve()) + "/"
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)


def _safe_rmtree(root: Path) -> None:
    if root.exists():
        _unmount_under(root)
        shutil.rmtree(root)


def _strip_rootfs(rootfs: Path) -> None:
    for pattern in BASE_STRIP:
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for path in (rootfs / "usr/share/doc").glob("*/*"):  # keep each package's copyright
        if path.name != "copyright":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (rootfs / "usr/share/locale").glob("*"):
        if path.name != "locale.alias":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (rootfs / "etc/dpkg/dpkg.cfg.d/01-mltask-nodoc").write_text(BASE_DPKG_NODOC)
    # as Debian's own container images: no policy-rc.d needed, apt lists re-fetched on use
    (rootfs / "etc/machine-id").unlink(missing_ok=True)


def base_rootfs() -> tuple[Path, str]:
    """The stripped debootstrap tree as a tar under IMAGES_DIR, keyed by its inputs."""
    _require_tool("debootstrap", "debootstrap")
    mirror = debian_mirror()
    version = _run(["dpkg-query", "-W", "-f=${Version}", "debootstrap"], "dpkg-query")
    strip = json.dumps([BASE_STRIP, BASE_DPKG_NODOC])
    key = _key("python-base-rootfs", DEBIAN_SUITE, ",".join(DEBIAN_INCLUDE), mirror, version,
               strip)
    tarball = IMAGES_DIR / f"python-base-rootfs-{key[:16]}.tar"
    if tarball.exists():
        log(f"cached Debian {DEBIAN_SUITE} root filesystem {tarball} "
            f"({tarball.stat().st_size / 1e6:.1f} MB)")
        return tarball, key
    _require_root("debootstrap")
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    rootfs = IMAGES_DIR / "python-base-rootfs.tmp"
    _safe_rmtree(rootfs)
    log(f"debootstrap {DEBIAN_SUITE} minbase + {','.join(DEBIAN_INCLUDE)} from {mirror} "
        "(a few minutes)")
    t0 = time.monotonic()
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_INCLUDE)}",
              DEBIAN_SUITE, str(rootfs), mirror], "debootstrap", timeout=1800)
        _unmount_under(rootfs)
        _strip_rootfs(rootfs)
        tmp = tarball.with_suffix(".tmp")
        _run(["tar", "--create", f"--file={tmp}", f"--directory={rootfs}", "--numeric-owner",
              "--sort=name", "--xattrs", "--xattrs-include=security.capability",
              "--exclude=./dev/*", "."], "tar of the root filesystem")
        tmp.rename(tarball)
    finally:
        _safe_rmtree(rootfs)
    for old in IMAGES_DIR.glob("python-base-rootfs-*.tar"):
        if old != tarball:
            old.unlink()
    log(f"made Debian {DEBIAN_SUITE} root filesystem {tarball} "
        f"({tarball.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.0f}s")
    return tarball, key


#: Images built by the current `build()` call (the base is needed by several others).
_BUILT: dict[str, Built] = {}


def build_python_base() -> Built:
    if "python-base" in _BUILT:
        return _BUILT["python-base"]
    tarball, rootfs_key = base_rootfs()
    key = _key("python-base", rootfs_key)

    def make(archive: Path) -> tuple[str, str]:
        return write_oci_archive(
            archive, PYTHON_BASE_TAG,
            {"Env": [PATH_ENV, "LANG=C.UTF-8"], "Cmd": ["python3"]}, tarball,
            f"harness.images: debootstrap --variant=minbase "
            f"--include={','.join(DEBIAN_INCLUDE)} {DEBIAN_SUITE}")

    built = _store("python-base", PYTHON_BASE_TAG, key, make)
    load_into_buildah(built)
    _BUILT["python-base"] = built
    return built


# --------------------------------------------------------------------------- buildah


def buildah(*args: str, what: str = "buildah", timeout: float = 3600) -> str:
    _require_tool("buildah", "buildah")
    policy = CACHE / "buildah" / "policy.json"  # only local archives are ever read
    if not policy.exists():
        policy.parent.mkdir(parents=True, exist_ok=True)
        policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    command, *rest = args
    if command in ("bud", "build", "pull", "push"):
        rest.insert(0, f"--signature-policy={policy}")
    return _run(["buildah", f"--root={BUILDAH_ROOT}", f"--runroot={BUILDAH_RUNROOT}",
                 "--storage-driver=overlay", command, *rest], what, timeout=timeout)


def buildah_image_id(tag: str) -> str | None:
    """The image id (config digest, hex) of `tag` in buildah's storage, or None."""
    try:
        out = buildah("inspect", "--type=image", "--format={{.FromImageID}}", tag,
                      what=f"buildah inspect {tag}")
    except ImageError:
        return None
    return out.strip() or None


def load_into_buildah(built: Built) -> None:
    """Make `built` a base buildah can build FROM, unless it holds that image already."""
    _require_root("buildah")
    if buildah_image_id(built.tag) == built.config_digest.split(":")[1]:
        return
    t0 = time.monotonic()
    out = buildah("pull", "--quiet", f"oci-archive:{built.archive}",
                  what=f"buildah pull of {built.archive}")
    buildah("tag", out.strip().splitlines()[-1], built.tag, what=f"buildah tag {built.tag}")
    log(f"loaded {built.tag} into buildah ({BUILDAH_ROOT}) in {time.monotonic() - t0:.1f}s")


def _dockerfile_bases(dockerfile: Path, build_args: dict[str, str]) -> list[str]:
    """The images a Dockerfile builds FROM, with ARG defaults and `build_args` applied."""
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text.split("\nFROM")[0], flags=re.M))
    args.update(build_args)
    stages: set[str] = set()
    bases = []
    for image, stage in re.findall(r"^FROM\s+(?:--\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", text,
                                   flags=re.M | re.I):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), image)
        if image not in stages and image != "scratch" and image not in bases:
            bases.append(image)
        if stage:
            stages.add(stage)
    return bases


def build_dockerfile(context_dir: Path, tag: str, build_args: dict[str, str], *,
                     name: str | None = None, dockerfile: Path | None = None) -> Built:
    """Build a Dockerfile with buildah into an OCI archive, cached by its inputs.

    Bases must already be in buildah's storage (built here and loaded): nothing is pulled.
    During RUN steps the host's CA bundle is bind-mounted over the image's (read-only, not
    committed), so pip reaches PyPI through a TLS-intercepting proxy the host trusts.
    """
    _require_root("buildah")
    context_dir = context_dir.resolve()
    dockerfile = dockerfile or context_dir / "Dockerfile"
    name = name or tag.rsplit("/", 1)[-1].split(":")[0]
    bases = _dockerfile_bases(dockerfile, build_args)
    base_ids = []
    for base in bases:
        image_id = buildah_image_id(base)
        if image_id is None:
            raise ImageError(f"{dockerfile} builds FROM {base}, which buildah does not have "
                             "(nothing is pulled: build it here first)")
        base_ids.append(f"{base}@{image_id}")
    key = _key("dockerfile", tag, dockerfile.read_bytes(), context_digest(context_dir),
               json.dumps(build_args, sort_keys=True), *base_ids)

    def make(archive: Path) -> tuple[str, str]:
        argv = ["bud", "--isolation=chroot", "--pull=never", "--layers=false",
                "--network=host", "--format=oci", f"--file={dockerfile}", f"--tag={tag}"]
        argv += [f"--build-arg={k}={v}" for k, v in sorted(build_args.items())]
        if HOST_CA_BUNDLE.exists():
            argv.append(f"--volume={HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro")
        buildah(*argv, str(context_dir), what=f"buildah bud of {dockerfile}", timeout=3600)
        with tempfile.TemporaryDirectory(dir=IMAGES_DIR) as tmp:
            layout = Path(tmp) / "layout"
            buildah("push", "--disable-compression", "--quiet", tag, f"oci:{layout}:{tag}",
                    what=f"buildah push of {tag}")
            digests = _archive_layout(layout, archive, tag)
        with contextlib.suppress(ImageError):  # earlier builds of the tag, now untagged
            buildah("rmi", "--prune", what="buildah rmi --prune")
        return digests

    return _store(name, tag, key, make)


def build_operator() -> Built:
    base = build_python_base()
    return build_dockerfile(REPO, OPERATOR_TAG,
                            {"PYTHON_IMAGE": base.tag, "VERSION": PROJECT_VERSION},
                            name="mltask-operator")


def build_example_sklearn() -> Built | None:
    dockerfile = SKLEARN_CONTEXT / "Dockerfile"
    if not dockerfile.exists():
        log(f"skipped example-sklearn: {dockerfile} does not exist")
        return None
    base = build_python_base()
    # every FROM argument gets the Debian Python base (the example builds FROM one ARG)
    args = dict.fromkeys(re.findall(r"^FROM\s+\$\{?(\w+)\}?", dockerfile.read_text(),
                                    flags=re.M), base.tag)
    return build_dockerfile(SKLEARN_CONTEXT, SKLEARN_TAG, args, name="example-sklearn")


BUILDERS: dict[str, Callable[[], Built | None]] = {
    "pause": build_pause,
    "argoexec": build_argoexec,
    "python-base": build_python_base,
    "mltask-operator": build_operator,
    "example-sklearn": build_example_sklearn,
}
#: What a real node needs: the sandbox, Argo's executor and the project's image; and the
#: Debian base, an image whose user is root (what a run step may not be by default).
NODE_IMAGES = ("pause", "argoexec", "mltask-operator", "python-base")
#: Imported into the node too when they build (their Dockerfiles are the examples' own).
EXAMPLE_IMAGES = ("example-sklearn",)


def build(names: list[str] | tuple[str, ...] = tuple(BUILDERS), *,
          required: bool = True) -> list[Built]:
    """Build (or reuse) the named images. With required=False an image that fails to build is
    logged and left out instead of failing the rest."""
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise ImageError(f"unknown images {unknown}; known: {', '.join(BUILDERS)}")
    out = []
    _BUILT.clear()
    with _lock():
        for name in names:
            try:
                built = BUILDERS[name]()
            except ImageError as e:
                if required:
                    raise
                log(f"error: left out {name}: {e}")
                continue
            if built is not None:
                out.append(built)
    return out


def read_file(built: Built, path: str) -> bytes:
    """A file of an image, read from its OCI archive (the last layer holding it wins): how the
    harness takes the data an image's packages ship, e.g. scikit-learn's digits."""
    want = path.lstrip("/")
    with tarfile.open(built.archive) as archive:
        def blob(digest: str) -> tarfile.ExFileObject:
            member = archive.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            if member is None:
                raise ImageError(f"{built.archive}: blob {digest} missing")
            return member

        index = json.load(blob_or_file(archive, "index.json"))
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        for layer in reversed(manifest["layers"]):
            mode = "r|gz" if layer["mediaType"].endswith("gzip") else "r|"
            with tarfile.open(fileobj=blob(layer["digest"]), mode=mode) as tar:
                for member in tar:
                    if member.name.removeprefix("./") == want and member.isfile():
                        data = tar.extractfile(member)
                        assert data is not None
                        return data.read()
    raise ImageError(f"{path} is not in {built.tag} ({built.archive})")


def blob_or_file(archive: tarfile.TarFile, name: str) -> tarfile.ExFileObject:
    member = archive.extractfile(name)
    if member is None:
        raise ImageError(f"{archive.name}: {name} missing")
    return member


def push(built: Built, destination: str) -> str:
    """Push an image built here to `destination`, buildah's transport syntax (a bare
    `registry/repo[:tag]` means `docker://`, the tag defaulting to the built one's): how an
    image reaches one's own registry. Credentials are buildah's (`buildah login`)."""
    if "://" not in destination and not destination.startswith(("oci:", "oci-archive:",
                                                                  "dir:")):
        last = destination.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            destination += ":" + built.tag.rsplit(":", 1)[1]
        destination = "docker://" + destination
    load_into_buildah(built)  # the archive is the truth: storage may have been pruned
    buildah("push", "--quiet", built.tag, destination, what=f"buildah push to {destination}")
    log(f"pushed {built.tag} to {destination}")
    return destination


# --------------------------------------------------------------------------- containerd


def ctr(address: Path, *args: str, what: str = "ctr", timeout: float = 600) -> str:
    return _run(["ctr", f"--address={address}", "--namespace=k8s.io", *args], what,
                timeout=timeout)


def containerd_images(address: Path) -> dict[str, str]:
    """{name: target digest} of the images in containerd's k8s.io namespace."""
    out = ctr(address, "images", "ls", what="ctr images ls")
    images = {}
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 3:
            images[fields[0]] = fields[2]
    return images


def import_images(built: list[Built], address: Path) -> None:
    """Import each archive into containerd (namespace k8s.io, where the kubelet's CRI looks)
    unless an image of that name with the same digest is there already."""
    present = containerd_images(address)
    for image in built:
        if present.get(image.tag) == image.digest:
            log(f"present in containerd: {image.tag} ({image.digest[:19]})")
            continue
        t0 = time.monotonic()
        ctr(address, "images", "import", image.archive, what=f"ctr import of {image.archive}")
        now = containerd_images(address).get(image.tag)
        if now != image.digest:
            raise ImageError(f"ctr imported {image.archive} but {image.tag} is {now}, "
                             f"not {image.digest}")
        log(f"imported {image.tag} into containerd in {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "import", "list", "push"])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"images ({', '.join(BUILDERS)}); default all")
    parser.add_argument("--to", metavar="DEST",
                        help="push: where to (registry.example.com/ml/mltask-operator[:tag], "
                        "or any buildah transport: docker://, oci:, oci-archive:)")
    parser.add_argument("--address", type=Path, default=None,
                        help="containerd socket for import (default: the node's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for record in sorted(IMAGES_DIR.glob("*.oci.tar.json")):
                print(Built(**json.loads(record.read_text())).line().replace("built ", "", 1))
            return 0
        if args.command == "push":
            if len(args.names) != 1 or not args.to:
                parser.error("push takes one image NAME and --to DEST")
            (image,) = build(args.names)
            print(push(image, args.to))
            return 0
        t0 = time.monotonic()
        built = build(args.names or (list(BUILDERS) if args.command == "build"
                                     else [*NODE_IMAGES, *EXAMPLE_IMAGES]))
        if args.command == "import":
            from harness import node

            import_images(built, args.address or node.CONTAINERD_SOCKET)
        log(f"{len(built)} images ready in {time.monotonic() - t0:.1f}s")
        return 0
    except ImageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
