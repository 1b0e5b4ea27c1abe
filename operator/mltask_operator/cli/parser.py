"""The command line: global flags kubectl also takes, a subcommand per registered command."""

from __future__ import annotations

import argparse

from mltask_operator.cli.commands import COMMANDS
from mltask_operator.cli.targets import PROG
from mltask_operator.kinds import PIPELINE

EXAMPLES = f"""examples:
  {PROG} list --type training --status failed
  {PROG} list pipelines -A
  {PROG} list --sort-by duration --limit 20
  {PROG} list --only-archived
  {PROG} list --status running -w
  {PROG} describe train-digits
  {PROG} stop train-digits
  {PROG} continue train-digits
  {PROG} retry pipeline/digits
  {PROG} archive train-digits
  {PROG} unarchive pipeline/digits
  {PROG} logs train-digits --step run -f
  {PROG} outputs train-digits -o json
  {PROG} run -f examples/pipeline-params.yaml --param learningRate=0.01 --param epochs=20
  {PROG} run -f pipeline.yaml --name digits-lr01 --param learningRate=0.01 --dry-run
"""


def build_parser() -> argparse.ArgumentParser:
    # Global flags are accepted before or after the command, as kubectl's are; SUPPRESS keeps a
    # command's parser from overwriting a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    common.add_argument("--context", default=argparse.SUPPRESS,
                        help="kubeconfig context to use (default: the current context)")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                        help="namespace (default: the context's namespace, else default)")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Act on MLTasks and Pipelines: list, describe, stop, continue, retry, "
        "archive, unarchive, logs, outputs, metrics; run a Pipeline from a file with parameter "
        "values. TARGET is an MLTask NAME, or pipeline/NAME (also mlp/NAME).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        p = sub.add_parser(c.name, parents=[common], help=c.help, description=c.description)
        c.arguments(p)
        p.set_defaults(func=c.run, prepare=c.prepare)
    return parser


def list_usage_error(args: argparse.Namespace) -> str | None:
    """Flags of `list` that do not go together (exit 2, before any API call)."""
    if args.resource == PIPELINE and (args.type or args.pipeline):
        return "--type and --pipeline filter MLTasks, not pipelines"
    if args.continue_token and not args.limit:
        return "--continue needs --limit (the page size of the listing it continues)"
    if args.watch and args.limit:
        return "--watch lists every object, then its changes: not with --limit"
    return None
