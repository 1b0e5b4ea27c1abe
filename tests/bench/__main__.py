"""Entry point of `python -m bench` (PYTHONPATH: tests and operator, as `make bench` sets)."""

import sys

from bench.run import main

sys.exit(main())
