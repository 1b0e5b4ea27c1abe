"""TCP proxies of the tests: a relay, and one that can stop forwarding.

`Proxy` accepts connections and relays each to the target; the `BlackholeProxy` in front of the
API server can stop forwarding (connections stay open but nothing gets through, as when the
network drops packets). harness.faultproxy builds on `Proxy`.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class Proxy:
    """Listens on `listen_host`:`port` (0: a free port) and hands each accepted connection,
    with a new connection to (host, target_port), to `relay` in a thread of its own."""

    def __init__(self, host: str, target_port: int, listen_host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.target = (host, target_port)
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # accepted sockets inherit it: one still closing does not stop a listener re-binding
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, port))
        self._listener.listen(16)
        self.host = listen_host
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self._sockets += [conn, upstream]
            threading.Thread(target=self.relay, args=(conn, upstream), daemon=True).start()

    def relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Carry one connection; the default pumps bytes both ways until either side closes."""
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)
                return
            if not self.forward(data):
                continue
            try:
                dst.sendall(data)
            except OSError:
                return

    def forward(self, data: bytes) -> bool:
        """Whether `data` read from one side goes to the other (the default: always)."""
        return True

    def close(self) -> None:
        self._closed.set()
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()


class BlackholeProxy(Proxy):
    """Forwards 127.0.0.1:`port` to (host, target_port) until `blackhole` is set."""

    def __init__(self, host: str, target_port: int) -> None:
        self.blackhole = threading.Event()
        super().__init__(host, target_port)

    def forward(self, data: bytes) -> bool:
        return not self.blackhole.is_set()  # dropped: the other side waits for bytes never sent
