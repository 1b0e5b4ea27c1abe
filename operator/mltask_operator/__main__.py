"""Entry point: `mltask-operator` / `python -m mltask_operator` runs the operator."""

from __future__ import annotations

import argparse
import logging
import sys

import kopf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mltask-operator")
    parser.add_argument("--standalone", action="store_true",
                        help="no peering with other replicas (single instance, tests, demo)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="Kopf health endpoint URL")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mltask_operator.settings import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as e:
        print(f"mltask-operator: invalid configuration: {e}", file=sys.stderr)
        return 2
    from mltask_operator import main as handlers  # noqa: F401  registers the Kopf handlers

    kopf.run(
        standalone=args.standalone,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
