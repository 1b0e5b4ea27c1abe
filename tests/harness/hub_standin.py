"""A stand-in for the Hugging Face Hub's HTTP API, in the tests only (no Hub reachable here).

It is a stand-in because the real Hub cannot be reached from here (no internet). It serves
exactly what huggingface_hub's `repo_info` and `snapshot_download` call, as read in its source
(huggingface_hub 2.x, `hf_api.py`, `_snapshot_download.py`, `file_download.py`):

- GET  /api/{models|datasets}/ORG/NAME/revision/REV[?blobs=True]  repo info: `sha` (the commit),
  `siblings` (rfilename, size, blobId, lfs)
- GET  /api/{models|datasets}/ORG/NAME/tree/REV[/PATH]?recursive=...  the file list
- HEAD|GET /ORG/NAME/resolve/REV/PATH, /datasets/ORG/NAME/resolve/REV/PATH  a file, with the
  headers the client requires: X-Repo-Commit, ETag, Content-Length. Files added with lfs=True
  answer 302 to /cdn/SHA256 with X-Linked-Etag and X-Linked-Size, as the Hub does for LFS.
- GET  /cdn/SHA256  an LFS file's bytes (Range supported), on a second port: another origin,
  as the Hub's CDN is

No X-Xet-* headers and no xetHash: the client then downloads over plain HTTP (xet is used only
when the Hub announces it). A private repo answers 401 (X-Error-Code RepoNotFound) without the
right bearer token; unknown repos, revisions and files answer 404 with the Hub's X-Error-Code.
`fail_next(n)` makes the next n API or file requests answer 503.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.faultproxy import FailNext


@dataclass
class Repo:
    repo_type: str  # model, dataset
    repo_id: str
    token: str | None  # private: the bearer token it needs
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    lfs: set[str] = field(default_factory=set)


class HubStandin:
    """The stand-in on 127.0.0.1:<free port>; `endpoint` is what HF_ENDPOINT gets."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.failures = FailNext()
        hub = self

        class Handler(_Handler):
            standin = hub

        # the Hub, and the "CDN" its LFS files redirect to: another origin, as on the real Hub
        self._servers = [ThreadingHTTPServer((host, 0), Handler) for _ in range(2)]
        self.endpoint, self.cdn_endpoint = (
            f"http://{host}:{s.server_address[1]}" for s in self._servers)
        for server in self._servers:
            server.daemon_threads = True

    def start(self) -> HubStandin:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def add(self, repo_type: str, repo_id: str, files: dict[str, bytes], *, ref: str = "main",
            tags: tuple[str, ...] = (), token: str | None = None, lfs: tuple[str, ...] = ()
            ) -> str:
        """A commit of `files` at branch `ref` (and `tags`) of the repo (created if new); the
        commit's sha."""
        repo = self.repos.setdefault((repo_type, repo_id), Repo(repo_type, repo_id, token))
        digest = hashlib.sha1(repo_id.encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        for name in (ref, *tags):
            repo.refs[name] = sha
        repo.lfs |= set(lfs)
        return sha

    def fail_next(self, n: int) -> None:
        self.failures.arm(n)


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: HubStandin

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    # -- answers -----------------------------------------------------------------------------

    def _send(self, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str | None, message: str, body: bool) -> None:
        headers = {"Content-Type": "application/json", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode(), body)

    def _serve(self, body: bool) -> None:
        hub = self.standin
        url = urllib.parse.urlsplit(self.path)
        hub.requests.append((self.command, url.path, self.headers.get("Authorization")))
        if hub.failures.take():
            return self._error(503, None, "Service Unavailable", body)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
        if parts[:1] == ["cdn"] and len(parts) == 2:
            return self._cdn(parts[1], body)
        if parts[:1] == ["api"] and len(parts) >= 6 and parts[1] in ("models", "datasets"):
            repo_type = parts[1][:-1]
            repo, rest = self._repo(repo_type, f"{parts[2]}/{parts[3]}", body)
            if repo is None:
                return None
            if parts[4] == "revision":
                return self._info(repo, "/".join(parts[5:]), body)
            if parts[4] == "tree":
                return self._tree(repo, parts[5], "/".join(parts[6:]), body)
        elif "resolve" in parts:
            i = parts.index("resolve")
            repo_type = "dataset" if parts[0] == "datasets" else "model"
            repo_parts = parts[1:i] if repo_type == "dataset" else parts[:i]
            if len(repo_parts) == 2 and len(parts) > i + 2:
                repo, _ = self._repo(repo_type, "/".join(repo_parts), body)
                if repo is None:
                    return None
                return self._resolve(repo, parts[i + 1], "/".join(parts[i + 2:]), body)
        return self._error(404, None, "Not Found", body)

    def _repo(self, repo_type: str, repo_id: str, body: bool) -> tuple[Repo | None, None]:
        repo = self.standin.repos.get((repo_type, repo_id))
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", body)
            return None, None
        if repo.token is not None:
            auth = self.headers.get("Authorization")
            if auth is None:
                self._error(401, "RepoNotFound", "Repository not found", body)
                return None, None
            if auth != f"Bearer {repo.token}":
                self._error(401, None, "Invalid credentials in Authorization header", body)
                return None, None
        return repo, None

    def _commit(self, repo: Repo, revision: str, body: bool) -> str | None:
        sha = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if sha is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        return sha

    def _info(self, repo: Repo, revision: str, body: bool) -> None:
        sha = self._commit(repo, revision, body)
        if sha is None:
            return
        siblings = []
        for name, data in sorted(repo.commits[sha].items()):
            sibling: dict[str, Any] = {"rfilename": name, "size": len(data),
                                       "blobId": _blob_id(data)}
            if name in repo.lfs:
                sibling["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                                  "pointerSize": 134}
            siblings.append(sibling)
        info = {"_id": sha[:24], "id": repo.repo_id, "sha": sha,
                "private": repo.token is not None, "siblings": siblings, "tags": []}
        self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)

    def _tree(self, repo: Repo, revision: str, path: str, body: bool) -> None:
        sha = self._commit(repo, revision, body)
        if sha is None:
            return
        prefix = f"{path}/" if path else ""
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for name, data in sorted(repo.commits[sha].items()):
            if not name.startswith(prefix):
                continue
            entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data),
                                     "oid": _blob_id(data)}
            if name in repo.lfs:
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
            parts = name[len(prefix):].split("/")[:-1]
            folders |= {prefix + "/".join(parts[:i]) for i in range(1, len(parts) + 1)}
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        self._send(200, {"Content-Type": "application/json"}, json.dumps(entries).encode(), body)

    def _resolve(self, repo: Repo, revision: str, path: str, body: bool) -> None:
        sha = self._commit(repo, revision, body)
        if sha is None:
            return
        data = repo.commits[sha].get(path)
        if data is None:
            self._error(404, "EntryNotFound", f"{path} does not exist", body)
            return
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes"}
        if path in repo.lfs:
            sha256 = hashlib.sha256(data).hexdigest()
            cdn = self.standin.cdn_endpoint + f"/cdn/{sha256}"
            headers |= {"Location": cdn, "X-Linked-Etag": f'"{sha256}"',
                        "X-Linked-Size": str(len(data)), "ETag": f'"{_blob_id(data)}"'}
            return self._send(302, headers, b"", body)
        headers |= {"ETag": f'"{_blob_id(data)}"', "Content-Type": "application/octet-stream"}
        self._send(200, headers, data, body)

    def _cdn(self, sha256: str, body: bool) -> None:
        for repo in self.standin.repos.values():
            for files in repo.commits.values():
                for data in files.values():
                    if hashlib.sha256(data).hexdigest() == sha256:
                        start = 0
                        ranged = self.headers.get("Range", "")
                        if ranged.startswith("bytes=") and ranged[6:].endswith("-"):
                            start = int(ranged[6:-1])
                        headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes"}
                        if start:
                            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                            return self._send(206, headers, data[start:], body)
                        return self._send(200, headers, data, body)
        self._error(404, None, "Not Found", body)
