"""`kubectl mltask` (the kubectl-mltask plugin): list, describe, stop, continue, retry,
archive, unarchive, logs, outputs and metrics of MLTasks and Pipelines, and run (a new
Pipeline from a file, with parameter values).

The package: `targets` (what a command acts on, list's selectors), `render` (tables,
describe), `changes` (the patches actions send, which pod a step's logs come from), `runs`
(the Pipeline `run` creates), `errors`, `session` (the API calls, through the operator's
clients.kube), `commands` (one function per command, registered with `commands.command`) and
`parser`. `main` wires them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from mltask_operator.cli.errors import CliError, UsageError
from mltask_operator.cli.parser import build_parser, list_usage_error
from mltask_operator.cli.session import connect
from mltask_operator.cli.targets import PROG


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a user or API error (one line on stderr), 2 bad usage."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, argparse printed it)
        return e.code if isinstance(e.code, int) else 2
    usage = list_usage_error(args) if args.command == "list" else None
    if usage:
        print(f"{PROG} list: {usage}", file=sys.stderr)
        return 2
    try:
        if args.prepare is not None:  # reads and checks what it needs: exit 2 if it is wrong
            args.prepare(args)
        session = connect(getattr(args, "kubeconfig", None), getattr(args, "context", None),
                          getattr(args, "namespace", None))
        return int(args.func(session, args))
    except UsageError as e:
        print(f"{PROG} {args.command}: {e}", file=sys.stderr)
        return 2
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
