"""A TCP proxy between the operator and the API server that cuts the connection three ways.

- `blackhole`: harness.tcpproxy's BlackholeProxy: connections stay open, every byte is
  dropped (as when the network drops packets); what was dropped is lost, so a TLS stream that
  lost bytes breaks when the cut ends.
- `hang`: connections stay open, nothing gets through, nothing is lost: the bytes wait and flow
  when the cut ends (a partition TCP survives by retransmitting).
- `refuse`: every open connection is reset and the port refuses new ones (nothing listens), as
  when the API server or its load balancer is down.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from harness.tcpproxy import Proxy

MODES = ("blackhole", "hang", "refuse")


class CutProxy(Proxy):
    """Relays 127.0.0.1:`port` to (host, target_port) until `cut(mode)`, again after
    `restore()`."""

    def __init__(self, host: str, target_port: int) -> None:
        self.mode: str | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        super().__init__(host, target_port, port=_port_below_ephemeral())

    def cut(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"cut mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode
        if mode == "hang":
            self._flowing.clear()
        elif mode == "refuse":
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # stops listening, wakes accept()
            with contextlib.suppress(OSError):
                self._listener.close()  # connect() now fails with ECONNREFUSED
            for s in list(self._sockets):
                _reset(s)
            self._sockets.clear()

    def restore(self) -> None:
        if self.mode == "refuse":
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for attempt in range(50):  # a reset connection may hold the port a moment
                try:
                    listener.bind((self.host, self.port))
                    break
                except OSError:
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
            listener.listen(16)
            self._listener = listener
            threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()
        self.mode = None
        self._flowing.set()

    def forward(self, data: bytes) -> bool:
        if self.mode == "hang":
            self._flowing.wait()  # held, then sent: nothing lost
        return self.mode != "blackhole"


def _port_below_ephemeral() -> int:
    """A free port below the kernel's ephemeral range. A client retrying a refused port in that
    range can be given the same port as its own source and connect to itself (TCP
    self-connect), holding the port so the proxy cannot listen there again."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    for port in range(low - 1, max(low - 5000, 1024), -1):
        with contextlib.suppress(OSError), socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, waking a thread blocked reading it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes the reader; sends nothing
    with contextlib.suppress(OSError):
        sock.close()
