"""https:// (and http://) downloads of one file with urllib3.

Streamed to a temporary file beside its place, retried with backoff (resumed with Range when the
server allows it), custom CAs from SSL_CERT_FILE or REQUESTS_CA_BUNDLE, proxies from HTTPS_PROXY
/ HTTP_PROXY / NO_PROXY.

http:// is accepted too: in-cluster file servers and mirrors often speak plain HTTP, and the
user chose the URI; no credentials are ever sent to either scheme.

Redirects (at most MAX_REDIRECTS) lead only to https:// URLs the URI rules accept (no user:password,
a file name), and to another host only if none of its addresses is loopback, link-local (a
cloud's metadata service), private or otherwise special: the server does not choose what inside
the cluster the step reaches. A response is the whole file (200 without Content-Range) unless the
step asked to resume, and then only the exact range asked for (206 with a matching
Content-Range); anything else is an error, never saved as complete.
"""

from __future__ import annotations

import email.utils
import ipaddress
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, SSLError

from mltask_operator.transfer import progress
from mltask_operator.transfer.errors import TransferError
from mltask_operator.transfer.retry import TRANSIENT_STATUSES, Policy, log_retry
from mltask_operator.transfer.uris import HttpUri, InvalidUri, parse_download, redact

_CHUNK = 1024 * 1024
_MAX_RETRY_AFTER = 60.0
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


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


def redirect_target(uri: HttpUri, current: str, location: str | None,
                    resolve: Callable[[str], list[str]] | None = None) -> str:
    """The URL a redirect from `current` to `location` leads to, or a TransferError saying why
    it is not followed."""
    if not location:
        raise TransferError(f"download {uri}: a redirect without a Location")
    url = urllib.parse.urljoin(current, location.strip())
    shown = redact(url)[:300]
    if not url.startswith("https://"):
        raise TransferError(f"download {uri}: redirected to {shown}: only https:// redirects are "
                            "followed")
    try:
        target = parse_download(url)
    except InvalidUri as e:
        raise TransferError(f"download {uri}: redirected to {shown}: {e.problem}") from None
    assert isinstance(target, HttpUri)
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == (urllib.parse.urlsplit(uri.url).hostname or ""):
        return url
    for address in (resolve or _addresses)(host):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            raise TransferError(f"download {uri}: redirected to {shown}, whose host {host} is "
                                f"{address}, not a public address: not followed")
    return url


def _addresses(host: str) -> list[str]:
    try:
        return sorted({str(a[4][0]) for a in socket.getaddrinfo(host, None)})
    except (OSError, UnicodeError):
        return []  # unknown: the request fails to connect, saying so


def _get(uri: HttpUri, env: Mapping[str, str], policy: Policy,
         headers: dict[str, str]) -> urllib3.BaseHTTPResponse:
    """GET the URI, following redirects by the rules above."""
    url = uri.url
    for _ in range(MAX_REDIRECTS + 1):
        response = pool(url, env, policy).request(
            "GET", url, headers=headers, preload_content=False, redirect=False,
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                  redirect=0, raise_on_status=False),
        )
        if response.status not in _REDIRECTS:
            return response
        location = response.headers.get("Location")
        response.release_conn()
        url = redirect_target(uri, url, location)
    raise TransferError(f"download {uri}: more than {MAX_REDIRECTS} redirects")


def _whole_or_resumed(uri: HttpUri, response: urllib3.BaseHTTPResponse, asked: int) -> bool:
    """Whether the response resumes at byte `asked` (True) or is the whole file (False); any
    other partial answer is an error."""
    ranged = response.headers.get("Content-Range")
    if response.status == 200 and not ranged:
        return False
    if asked and response.status == 206 and ranged and ranged.startswith(f"bytes {asked}-"):
        return True
    what = f"HTTP {response.status}" + (f" with Content-Range {ranged[:100]!r}" if ranged else "")
    asked_for = f"bytes from {asked} on" if asked else "the whole file"
    raise TransferError(f"download {uri} failed: the server answered {what} when asked for "
                        f"{asked_for}: a part of the file is never saved as the file")


def download(uri: HttpUri, dest: Path, env: Mapping[str, str], policy: Policy,
             max_bytes: int | None = None) -> int:
    """Stream the file into `dest/<uri.filename>`; its size."""
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
            response = _get(uri, env, policy, headers)
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
                    resumed = _whole_or_resumed(uri, response, done if "Range" in headers else 0)
                    if not resumed:
                        done = 0  # the whole file (again)
                        partial.write_bytes(b"")
                    length = response.headers.get("Content-Length")
                    if max_bytes is not None and length and length.isdigit() and \
                            int(length) + done > max_bytes:
                        raise TransferError(_too_big(uri, max_bytes))
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
                            if max_bytes is not None and done > max_bytes:
                                raise TransferError(_too_big(uri, max_bytes))
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


def _too_big(uri: HttpUri, max_bytes: int) -> str:
    return (f"download {uri}: the file is larger than MLTASK_DOWNLOAD_MAX_BYTES ({max_bytes} "
            "bytes, the working volume's size)")


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
