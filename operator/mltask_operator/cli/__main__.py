"""`python -m mltask_operator.cli`: the kubectl-mltask plugin, as its console script runs it."""

from __future__ import annotations

import sys

from mltask_operator.cli import main

if __name__ == "__main__":
    sys.exit(main())
