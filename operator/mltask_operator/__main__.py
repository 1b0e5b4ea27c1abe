"""Entry point: `mltask-operator` / `python -m mltask_operator` runs the operator."""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import socket
import sys
import threading
from urllib.parse import urlparse

import kopf


class _Standby(http.server.BaseHTTPRequestHandler):
    """/healthz while a standby replica waits for the Lease (Kopf serves it once leading)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200 if self.path.startswith("/healthz") else 404)
        self.end_headers()
        self.wfile.write(b"standby\n")

    def log_message(self, *args: object) -> None:
        pass


def _serve_standby(liveness: str) -> http.server.HTTPServer | None:
    url = urlparse(liveness)
    if not url.port:
        return None
    server = http.server.HTTPServer((url.hostname or "0.0.0.0", url.port), _Standby)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    from mltask_operator.settings import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"mltask-operator: invalid configuration: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="mltask-operator")
    parser.add_argument("--standalone", action="store_true",
                        help="accepted for compatibility; the operator never uses Kopf peering "
                        "(see MLTASK_LEADER_ELECTION)")
    parser.add_argument("--liveness", default=f"http://0.0.0.0:{settings.health_port}/healthz",
                        help="health endpoint URL (Kopf's)")
    parser.add_argument("--verbose", action="store_true", help="same as MLTASK_LOG_LEVEL=DEBUG")
    args = parser.parse_args(argv)
    logging.basicConfig(level="DEBUG" if args.verbose else settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mltask_operator import main as handlers  # noqa: F401  registers the Kopf handlers

    elector = None
    stop = threading.Event()
    if settings.leader_election.enabled:
        from mltask_operator.clients.kube import load_config
        from mltask_operator.leader import LeaseElector

        le = settings.leader_election
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        elector = LeaseElector(load_config(), le.namespace, le.lease_name, identity,
                               le.lease_seconds)
        standby = _serve_standby(args.liveness)
        elector.wait_until_leader(stop)
        if standby:
            standby.shutdown()
            standby.server_close()
        # Exit at once if leadership is lost: another replica may already be working.
        elector.keep_renewing(lambda: os._exit(1), stop)
    try:
        kopf.run(
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            liveness_endpoint=args.liveness or None,
        )
    finally:
        stop.set()
        if elector is not None:
            elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
