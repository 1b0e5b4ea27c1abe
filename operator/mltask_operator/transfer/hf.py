"""hf:// downloads from the Hugging Face Hub (or an HF_ENDPOINT mirror) with huggingface_hub.

The revision is pinned to its commit first, the URI's file or folder selected, private repos read
with HF_TOKEN; huggingface_hub does its own retries and LFS/xet handling; progress is measured on
disk, as the library reports it only to its own progress bars.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from mltask_operator.transfer import progress
from mltask_operator.transfer.errors import TransferError
from mltask_operator.transfer.retry import TRANSIENT_STATUSES, Policy, log_retry
from mltask_operator.transfer.uris import HfUri

_DEFAULT_REVISION = "main"


def prepare_env(env: MutableMapping[str, str], work: Path, policy: Policy) -> None:
    """huggingface_hub reads its settings at import: no progress bars (our lines instead), no
    telemetry, the step's timeouts, and its home (cache, xet cache) on the working volume unless
    set, as the pod's home may be read-only."""
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("HF_HUB_ETAG_TIMEOUT", str(max(1, round(policy.connect_timeout))))
    env.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(max(1, round(policy.read_timeout))))
    env.setdefault("HF_HOME", str(work / "home"))


def escape(path: str) -> str:
    """`path` as an fnmatch pattern matching exactly itself (allow_patterns are fnmatch)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def select(uri: HfUri, files: list[str], revision: str) -> tuple[list[str], list[str] | None]:
    """(files the URI names, allow_patterns for snapshot_download: None for the whole repo)."""
    where = f"{uri.repo_type} repo {uri.repo_id} at revision {revision}"
    if not uri.path:
        if not files:
            raise TransferError(f"download {uri}: the {where} has no files")
        return sorted(files), None
    if uri.path in files:
        if uri.folder:
            raise TransferError(f"download {uri}: {uri.path} is a file of the {where}, not a "
                                "folder: drop the final /")
        return [uri.path], [escape(uri.path)]
    prefix = uri.path + "/"
    chosen = sorted(f for f in files if f.startswith(prefix))
    if not chosen:
        raise TransferError(f"download {uri}: the {where} has no file or folder {uri.path}")
    return chosen, [escape(prefix) + "*"]


def download(uri: HfUri, dest: Path, work: Path, env: Mapping[str, str], policy: Policy) -> int:
    """The files `uri` names into `dest` (paths relative to the URI's folder; a file under its
    own name), through `work` (huggingface_hub's folder and cache, removed after); file count."""
    import huggingface_hub
    from huggingface_hub import errors as hf_errors

    token: str | bool = env.get("HF_TOKEN") or False  # False: never a token file of the pod
    api = huggingface_hub.HfApi()
    revision = uri.revision or _DEFAULT_REVISION
    info = _attempts(uri, env, policy, revision, hf_errors, lambda: api.repo_info(
        uri.repo_id, repo_type=uri.repo_type, revision=revision, files_metadata=True,
        token=token))
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    chosen, patterns = select(uri, list(sizes), revision)
    total = None if any(sizes[f] is None for f in chosen) else sum(sizes[f] or 0 for f in chosen)
    progress.log(
        f"download {uri}: {progress.count(len(chosen), 'file')} of the {uri.repo_type} repo "
        f"{uri.repo_id} at revision {revision} (commit {info.sha}) from {api.endpoint}, "
        + ("with the token of HF_TOKEN" + _from_secret(env) if token else "without a token")
    )
    snapshot = work / "snapshot"
    meter = progress.Meter("download", str(uri), total, files=len(chosen))
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(snapshot, meter, stop), daemon=True)
    poller.start()
    try:
        _attempts(uri, env, policy, revision, hf_errors, lambda: huggingface_hub.snapshot_download(
            uri.repo_id, repo_type=uri.repo_type, revision=info.sha, local_dir=snapshot,
            cache_dir=work / "cache", allow_patterns=patterns, token=token, max_workers=4))
    finally:
        stop.set()
        poller.join()
    prefix = "" if not uri.path or chosen == [uri.path] else uri.path + "/"
    for name in chosen:
        rel = name.rsplit("/", 1)[-1] if chosen == [uri.path] else name[len(prefix):]
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).replace(target)
    meter.files_done = len(chosen)
    meter.set(sum(os.path.getsize(dest / p) for p in _relative(dest)))
    meter.finish()
    shutil.rmtree(work, ignore_errors=True)  # the snapshot's .cache metadata, the Hub's cache
    return len(chosen)


def _from_secret(env: Mapping[str, str]) -> str:
    secret = env.get("MLTASK_STORAGE_SECRET")
    return f" from Secret {secret}" if secret else ""


def _relative(root: Path) -> list[str]:
    return [os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs]


def _poll(folder: Path, meter: progress.Meter, stop: threading.Event) -> None:
    """Bytes on disk under `folder` (finished and .incomplete files) into the meter, every
    second: huggingface_hub reports progress only to its own bars."""
    while not stop.wait(1.0):
        total = 0
        for d, _, files in os.walk(folder):
            for f in files:
                if not f.endswith((".lock", ".metadata")):
                    with contextlib.suppress(OSError):  # renamed or removed meanwhile
                        total += os.path.getsize(os.path.join(d, f))
        meter.set(total)


def _attempts(uri: HfUri, env: Mapping[str, str], policy: Policy, revision: str,
              hf_errors: Any, call: Any) -> Any:
    """`call()` with retries of transient errors (huggingface_hub retries some itself; a new
    snapshot_download skips the files an earlier one finished)."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as e:  # classified below
            status = _status(e)
            if isinstance(e, hf_errors.RevisionNotFoundError):
                raise TransferError(f"download {uri}: the {uri.repo_type} repo {uri.repo_id} has "
                                    f"no revision {revision} (HTTP {status})") from None
            if status in (401, 403, 404) or isinstance(
                    e, hf_errors.RepositoryNotFoundError | hf_errors.GatedRepoError):
                raise TransferError(_refused(uri, env, revision, status, e, hf_errors)) from None
            transient = status in TRANSIENT_STATUSES or isinstance(
                e, hf_errors.LocalEntryNotFoundError) or _network_error(e) or (
                isinstance(e, OSError) and "Consistency check failed" in str(e))
            text = " ".join(str(e).split())[:300] or type(e).__name__
            if not transient:
                raise TransferError(f"download {uri} failed: {text}") from None
            if attempt == policy.attempts:
                raise TransferError(f"download {uri} failed after {attempt} attempts: "
                                    f"{text}") from None
            delay = policy.backoff(attempt)
            log_retry(f"download {uri}", f"HTTP {status}" if status else text, attempt,
                      policy.attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _network_error(e: BaseException) -> bool:
    """Connection errors and timeouts of the HTTP client huggingface_hub uses (httpx or
    requests, depending on its version), without importing it."""
    root = type(e).__module__.split(".")[0]
    return root in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3") or \
        isinstance(e, ConnectionError | TimeoutError)


def _refused(uri: HfUri, env: Mapping[str, str], revision: str, status: int | None,
             e: BaseException, hf_errors: Any) -> str:
    what = f"the {uri.repo_type} repo {uri.repo_id} (revision {revision})"
    token = (f"the token of HF_TOKEN{_from_secret(env)} was sent" if env.get("HF_TOKEN")
             else "no token was sent (HF_TOKEN is not set: put it in the task's storage Secret)")
    if isinstance(e, hf_errors.GatedRepoError):
        return f"download {uri}: {what} is gated (HTTP {status}): accept its terms; {token}"
    return f"download {uri}: the Hub answered HTTP {status} for {what}: " + (
        "it does not exist or is private" if status != 403 else "access is forbidden"
    ) + f"; {token}"
