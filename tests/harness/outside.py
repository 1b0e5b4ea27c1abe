"""A stand-in for "the outside network" that a test makes itself: a network namespace joined to
the host by a veth pair, an address of the benchmarking range (198.18.0.0/30, RFC 2544: never
routed on the internet) in it, a default route back through the host, and a TCP listener on
that address that records who connected. The host reaches it (the test checks that first, so a
failure to reach it from a pod means something); a pod that could route beyond the node's
bridge would reach it too. No public address is contacted.

    with Outside() as outside:
        assert outside.reachable_from_host()
        ... a pod connects to (outside.address, outside.port) ...
        assert outside.accepted() == []

Needs root (ip netns, ip link). Leftovers of a killed run (the namespace, the host's veth end)
are removed before it starts.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType

NETNS = "mltask-outside"
HOST_IF = "mltask-out0"
PEER_IF = "mltask-out1"
HOST_IP = "198.18.0.1"
ADDRESS = "198.18.0.2"
PREFIX = 30
PORT = 443
PATH_ENV = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: The listener, run in the namespace: says it listens, then each peer that connects.
LISTENER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print('listening', flush=True)
while True:
    conn, peer = s.accept()
    print('accepted', peer[0], flush=True)
    conn.close()
"""


class OutsideError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PATH": PATH_ENV})
    if check and res.returncode != 0:
        raise OutsideError(f"ip {' '.join(args)} failed: {(res.stderr or res.stdout).strip()}")
    return res


def remove() -> None:
    """Remove the namespace and the host's veth end (deleting either end removes both)."""
    _ip("netns", "del", NETNS, check=False)
    if os.path.exists(f"/sys/class/net/{HOST_IF}"):
        _ip("link", "del", HOST_IF, check=False)


class Outside:
    def __init__(self, port: int = PORT) -> None:
        self.address, self.port = ADDRESS, port
        self.proc: subprocess.Popen[str] | None = None
        self._peers: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Outside:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 10) -> None:
        if os.geteuid() != 0:
            raise OutsideError("making a network namespace needs root")
        remove()
        used = _ip("-o", "addr", "show").stdout
        if f" {HOST_IP}/" in used or f" {ADDRESS}/" in used:
            raise OutsideError(f"{HOST_IP} or {ADDRESS} is in use on this host:\n{used}")
        _ip("netns", "add", NETNS)
        _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF)
        _ip("link", "set", PEER_IF, "netns", NETNS)
        _ip("addr", "add", f"{HOST_IP}/{PREFIX}", "dev", HOST_IF)
        _ip("link", "set", HOST_IF, "up")
        _ip("-n", NETNS, "addr", "add", f"{ADDRESS}/{PREFIX}", "dev", PEER_IF)
        _ip("-n", NETNS, "link", "set", PEER_IF, "up")
        _ip("-n", NETNS, "link", "set", "lo", "up")
        # replies to anyone (a pod's address too) go back through the host
        _ip("-n", NETNS, "route", "add", "default", "via", HOST_IP)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NETNS, sys.executable, "-c", LISTENER, ADDRESS,
             str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PATH": PATH_ENV})
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() != "listening":
            self.stop()
            raise OutsideError(f"the listener in {NETNS} did not start: {line!r}")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("accepted "):
                with self._lock:
                    self._peers.append(line.split()[1])

    def accepted(self) -> list[str]:
        """The addresses that connected to the listener so far."""
        with self._lock:
            return list(self._peers)

    def reachable_from_host(self, timeout: float = 5) -> bool:
        """Connect from the host: the listener answers (and records the host's address)."""
        try:
            with socket.create_connection((self.address, self.port), timeout=timeout):
                pass
        except OSError:
            return False
        deadline = time.monotonic() + timeout
        while HOST_IP not in self.accepted() and time.monotonic() < deadline:
            time.sleep(0.05)
        return HOST_IP in self.accepted()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        remove()
