"""An HTTP/1.1 proxy for the retry tests that injects faults into chosen requests.

It relays each request to the server unchanged (the Host header too, so sigv4 signatures stay
valid); a chosen one gets S3's `503 SlowDown` answer, or its response cut off mid-body with the
connection closed.

    proxy = FaultProxy("127.0.0.1", s3.port)
    proxy.inject("slowdown", method="GET", path="/bkt/data.csv", times=2)
    ... the client uses proxy.endpoint ...
    proxy.close()
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass
from typing import BinaryIO, Literal

from harness.tcpproxy import Proxy

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Fault:
    """A fault for the next `times` requests matching `method` and containing `path`."""

    kind: Literal["slowdown", "cut"]
    method: str | None = None
    path: str | None = None
    times: int = 1
    cut_after: int = 64 * 1024  # "cut": body bytes relayed before the connection is closed
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and (self.method in (None, method)) and (
            self.path is None or self.path in path)



class FailNext:
    """How many of the next requests a test server answers with a transient error (503), as
    `fail_next(n)` armed it; thread-safe."""

    def __init__(self) -> None:
        self._left = 0
        self._lock = threading.Lock()

    def arm(self, n: int) -> None:
        with self._lock:
            self._left = n

    def take(self) -> bool:
        """True (and one fewer left) when this request must fail."""
        with self._lock:
            if self._left > 0:
                self._left -= 1
                return True
        return False


class FaultProxy(Proxy):
    """Relays HTTP/1.1 to (host, port), request by request, injecting the faults asked for."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, "ok" or the fault)
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def inject(self, kind: Literal["slowdown", "cut"], *, method: str | None = None,
               path: str | None = None, times: int = 1, cut_after: int = 64 * 1024) -> Fault:
        fault = Fault(kind, method, path, times, cut_after)
        with self._lock:
            self.faults.append(fault)
        return fault

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.requests.append((method, path, fault.kind))
                    return fault
            self.requests.append((method, path, "ok"))
        return None

    def relay(self, client: socket.socket, upstream: socket.socket) -> None:
        c, u = client.makefile("rb"), upstream.makefile("rb")
        try:
            while self._exchange(client, c, upstream, u):
                pass
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()

    def _exchange(self, client: socket.socket, c: BinaryIO, upstream: socket.socket,
                  u: BinaryIO) -> bool:
        """Relay one request and its response; whether the connection goes on."""
        head = _read_head(c)
        if head is None:
            return False
        method, path, headers = _parse(head)
        fault = self._take(method, path)
        expect = headers.get("expect", "").lower() == "100-continue"
        if fault is not None and fault.kind == "slowdown":
            if not expect:
                _relay_body(c, None, headers)
            client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                           b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(SLOWDOWN_BODY)
                           + SLOWDOWN_BODY)
            return False
        upstream.sendall(head)
        if expect:  # the server says 100 Continue (then the body comes) or answers at once
            response = _read_head(u)
            if response is None:
                return False
            if _status(response) == 100:
                client.sendall(response)
                _relay_body(c, upstream, headers)
                response = _read_head(u)
        else:
            _relay_body(c, upstream, headers)
            response = _read_head(u)
        while response is not None and 100 <= _status(response) < 200:
            client.sendall(response)
            response = _read_head(u)
        if response is None:
            return False
        status, response_headers = _status(response), _parse(response)[2]
        if fault is not None and fault.kind == "cut":
            client.sendall(response)
            client.sendall(u.read(fault.cut_after))
            return False  # closed mid-body
        client.sendall(response)
        if method != "HEAD" and status not in (204, 304):
            _relay_body(u, client, response_headers, until_close=True)
        return "close" not in response_headers.get("connection", "").lower()


def _read_head(f: BinaryIO) -> bytes | None:
    lines = []
    while True:
        line = f.readline(65536)
        if not line:
            return None
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _parse(head: bytes) -> tuple[str, str, dict[str, str]]:
    first, *rest = head.decode("latin-1").split("\r\n")
    parts = first.split(" ")
    headers = {}
    for line in rest:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1] if len(parts) > 1 else "", headers


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


def _relay_body(src: BinaryIO, dst: socket.socket | None, headers: dict[str, str],
                until_close: bool = False) -> None:
    """Copy a message body (Content-Length, chunked, or for a response without either, all
    until the server closes) from `src` to `dst` (None: read and drop)."""
    def send(data: bytes) -> None:
        if dst is not None and data:
            dst.sendall(data)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = src.readline(65536)
            send(line)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = src.readline(65536)
                    send(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return
            send(src.read(size + 2))
    length = headers.get("content-length")
    if length is not None:
        left = int(length)
        while left > 0:
            data = src.read(min(left, 1024 * 1024))
            if not data:
                raise OSError("connection closed mid-body")
            send(data)
            left -= len(data)
    elif until_close:
        while data := src.read1(65536):  # type: ignore[attr-defined]
            send(data)
