"""The command line of mltask-transfer: argparse, dispatch to the steps, exit codes.

`mltask-transfer download` / `mltask-transfer upload` read the step contract's environment; see
steps.py. Exit codes: 0 done; 1 the transfer failed; 2 the environment or a URI is wrong. On
failure the last line of stderr is one sentence saying what failed (the operator shows it in the
task's message); secrets are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Mapping

from mltask_operator.transfer import steps, uris
from mltask_operator.transfer.errors import ContractError, TransferError

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

COMMANDS: dict[str, tuple[Callable[[Mapping[str, str]], None], str]] = {
    "download": (steps.download, "fetch MLTASK_INPUT_DATASET_URI (and MLTASK_INPUT_MODEL_URI) "
                                 "into MLTASK_INPUT_DIR"),
    "upload": (steps.upload, "store MLTASK_OUTPUT_DIR at MLTASK_OUTPUT_URI and write "
                             "MLTASK_RESULT_FILE"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mltask-transfer",
        description="The download and upload steps of an MLTask; configured by the step "
                    "contract's environment variables.",
        epilog=uris.ACCEPTED_FORMS, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{download,upload}")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    run, _ = COMMANDS[args.command]
    prefix = f"mltask-transfer {args.command}"
    try:
        run(os.environ)
    except (ContractError, uris.InvalidUri) as e:
        print(f"{prefix}: {e}", file=sys.stderr, flush=True)
        return EXIT_INVALID
    except TransferError as e:
        print(f"{prefix}: {e}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # a bug: the traceback, then the one-line reason last
        traceback.print_exc()
        text = " ".join(str(e).split())[:500]
        print(f"{prefix}: failed: {type(e).__name__}: {text}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
