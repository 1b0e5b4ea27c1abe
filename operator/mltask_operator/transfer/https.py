"""https:// (and http://) downloads of one file with urllib3.

Streamed to a temporary file beside its place, retried with backoff (resumed with Range when the
server allows it), custom CAs from SSL_CERT_FILE or REQUESTS_CA_BUNDLE, proxies from HTTPS_PROXY
/ HTTP_PROXY / NO_PROXY.

http:// is accepted too: in-cluster file servers and mirrors often speak plain HTTP, and the
user chose the URI; no credentials are ever sent to either scheme.
"""

from __future__ import annotations

import email.utils
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

from mltask_operator.transfer import progress
from mltask_operator.transfer.errors import TransferError
from mltask_operator.transfer.retry import TRANSIENT_STATUSES, Policy, log_retry
from mltask_operator.transfer.uris import HttpUri

_CHUNK = 1024 * 1024
_MAX_RETRY_AFTER = 60.0


def ca_bundle(env: Mapping[str, str]) -> str | None:
    """The CA file to trust instead of the system's, if the environment names one."""
    return env.get("REQUESTS_CA_BUNDLE") or env.get("SSL_CERT_FILE") or None


def pool(url: str, env: Mapping[str, str], policy: Policy) -> urllib3.PoolManager:
    """A pool for `url`: the CA file if set, a proxy if the environment names one for it."""
    timeout = urllib3.Timeout(connect=policy.connect_timeout, read=policy.read_timeout)
    ca = ca_bundle(env)
    scheme = url.split("://", 1)[0]
    host = urllib3.util.parse_url(url).host or ""
    proxy = urllib.request.getproxies_environment().get(scheme)
    bypass = urllib.request.proxy_bypass_environment(host)  # type: ignore[attr-defined]
    if proxy and not bypass:
        return urllib3.ProxyManager(proxy, timeout=timeout, cert_reqs="CERT_REQUIRED",
                                    ca_certs=ca)
    return urllib3.PoolManager(timeout=timeout, cert_reqs="CERT_REQUIRED", ca_certs=ca)


def download(uri: HttpUri, dest: Path, env: Mapping[str, str], policy: Policy) -> int:
    """Stream the file into `dest/<uri.filename>`; its size."""
    http = pool(uri.url, env, policy)
    target = dest / uri.filename
    partial = dest / f".{uri.filename}.partial"
    done = 0
    validator: str | None = None
    meter: progress.Meter | None = None
    for attempt in range(1, policy.attempts + 1):
        headers = {"User-Agent": "mltask-transfer", "Accept-Encoding": "identity"}
        if done and validator:
            headers |= {"Range": f"bytes={done}-", "If-Range": validator}
        cause, delay = "", None
        try:
            response = http.request(
                "GET", uri.url, headers=headers, preload_content=False, redirect=True,
                retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                      redirect=10, raise_on_status=False),
            )
        except MaxRetryError as e:
            _refuse_tls(uri, e.reason, env)
            cause = _text(e.reason or e)
        except SSLError as e:
            _refuse_tls(uri, e, env)
            cause = _text(e)
        except HTTPError as e:
            cause = _text(e)
        else:
            try:
                status = response.status
                if status in TRANSIENT_STATUSES:
                    cause, delay = f"HTTP {status}", _retry_after(response.headers)
                elif status not in (200, 206):
                    raise TransferError(_refused(uri, status, response.reason))
                else:
                    resumed = status == 206 and bool(done and validator) and \
                        response.headers.get("Content-Range", "").startswith(f"bytes {done}-")
                    if not resumed:
                        done = 0  # the whole file (again)
                        partial.write_bytes(b"")
                    length = response.headers.get("Content-Length")
                    if meter is None:
                        total = int(length) + done if length and length.isdigit() else None
                        meter = progress.Meter("download", str(uri), total)
                    validator = _validator(response.headers)
                    meter.set(done)
                    with partial.open("r+b") as out:
                        out.seek(done)
                        out.truncate()
                        for chunk in response.stream(_CHUNK):
                            out.write(chunk)
                            done += len(chunk)
                            meter.add(len(chunk))
                    partial.replace(target)
                    meter.finish()
                    return done
            except (HTTPError, OSError) as e:
                if isinstance(e, OSError) and not isinstance(e, ConnectionError | TimeoutError):
                    raise TransferError(f"download {uri}: cannot write {partial}: {e}") from None
                cause = f"interrupted after {done} bytes ({_text(e)})"
            finally:
                response.release_conn()
        if attempt == policy.attempts:
            raise TransferError(f"download {uri} failed after {attempt} attempts: {cause}")
        wait = policy.backoff(attempt) if delay is None else delay
        log_retry(f"GET {uri}", cause, attempt, policy.attempts, wait)
        time.sleep(wait)
    raise AssertionError("unreachable")


def _refused(uri: HttpUri, status: int, reason: str | None) -> str:
    text = f"download {uri} failed: HTTP {status} {reason or ''}".rstrip()
    if status in (401, 403):
        return text + " (no credentials are sent to https:// URIs: use a presigned or public URL)"
    if status == 404:
        return text + " (no such file on the server)"
    return text


def _refuse_tls(uri: HttpUri, reason: object, env: Mapping[str, str]) -> None:
    """A certificate the client does not trust is no transient error: stop and say so."""
    text = _text(reason)
    if isinstance(reason, SSLError) and ("CERTIFICATE_VERIFY_FAILED" in text or
                                         "certificate verify failed" in text):
        ca = ca_bundle(env)
        raise TransferError(
            f"download {uri} failed: the server's TLS certificate is not trusted ({text}); "
            + (f"CA file: {ca}" if ca else "set SSL_CERT_FILE to a CA bundle that signs it")
        )


def _validator(headers: Mapping[str, str]) -> str | None:
    """A strong ETag or a Last-Modified date to resume with (If-Range), if the server can."""
    if headers.get("Accept-Ranges", "").lower() != "bytes":
        return None
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    if value.isdigit():
        return min(float(value), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when - time.time(), _MAX_RETRY_AFTER))


def _text(e: object) -> str:
    return " ".join(str(e).split()) or type(e).__name__
