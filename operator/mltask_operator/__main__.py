"""Entry point: `mltask-operator` / `python -m mltask_operator` runs the operator."""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from urllib.parse import urlparse

import kopf


def _standby_handler(status: Callable[[], str | None]) -> type[http.server.BaseHTTPRequestHandler]:
    """/healthz while a standby replica waits for the Lease (Kopf serves it once leading):
    200, or 500 with the reason once `status` returns one (Lease calls keep failing)."""

    class Standby(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self.path.startswith("/healthz"):
                self.send_response(404)
                self.end_headers()
                return
            problem = status()
            self.send_response(500 if problem else 200)
            self.end_headers()
            self.wfile.write(f"standby: {problem}\n".encode() if problem else b"standby\n")

        def log_message(self, *args: object) -> None:
            pass

    return Standby


def _serve_standby(liveness: str,
                   status: Callable[[], str | None]) -> http.server.HTTPServer | None:
    url = urlparse(liveness)
    if not url.port:
        return None
    server = http.server.HTTPServer((url.hostname or "0.0.0.0", url.port),
                                    _standby_handler(status))
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
                        help="health endpoint URL (Kopf's); default: port MLTASK_HEALTH_PORT")
    parser.add_argument("--verbose", action="store_true", help="same as MLTASK_LOG_LEVEL=DEBUG")
    args = parser.parse_args(argv)
    if settings.metrics_port and urlparse(args.liveness).port == settings.metrics_port:
        print(f"mltask-operator: invalid configuration: --liveness {args.liveness} uses "
              f"MLTASK_METRICS_PORT={settings.metrics_port}", file=sys.stderr)
        return 2
    logging.basicConfig(level="DEBUG" if args.verbose else settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose and settings.log_level != "DEBUG":
        # Kopf says "Handler 'mltask_event' succeeded" at INFO for every watch event (our
        # handlers only queue keys; the reconcilers log what they do): warnings and errors only.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # each /healthz probe
    from prometheus_client import start_http_server

    from mltask_operator import main as handlers  # noqa: F401  registers the Kopf handlers
    from mltask_operator import metrics

    # Every replica serves metrics, a standby too: the metrics Service selects them all.
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
        logging.getLogger(__name__).info("Serving Prometheus metrics on port %d",
                                         settings.metrics_port)
    elector = None
    stop = threading.Event()
    if settings.leader_election.enabled:
        from mltask_operator.clients.kube import load_config
        from mltask_operator.leader import LeaseElector

        metrics.LEADER.set(0)
        le = settings.leader_election
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        elector = LeaseElector(load_config(), le.namespace, le.lease_name, identity,
                               le.lease_seconds)
        candidate = elector
        standby = _serve_standby(args.liveness, lambda: None if candidate.healthy else (
            f"{candidate.errors} Lease calls to {le.namespace}/{le.lease_name} failed in a "
            f"row, last with {candidate.last_error}"))
        elector.wait_until_leader(stop)
        if standby:
            standby.shutdown()
            standby.server_close()
        # Exit at once if leadership is lost: another replica may take over soon.
        elector.keep_renewing(lambda: os._exit(1), stop)
    metrics.LEADER.set(1)
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
