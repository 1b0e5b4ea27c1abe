"""A TCP proxy in front of the API server that can stop forwarding: connections stay open but
nothing gets through, as when the network to the API server drops packets."""

from __future__ import annotations

import contextlib
import socket
import threading


class BlackholeProxy:
    """Forwards 127.0.0.1:`port` to (host, target_port) until `blackhole` is set."""

    def __init__(self, host: str, target_port: int) -> None:
        self.target = (host, target_port)
        self.blackhole = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
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
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

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
            if self.blackhole.is_set():
                continue  # dropped: the other side waits for bytes that never come
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self._closed.set()
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.close()
