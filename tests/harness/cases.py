"""A table-driven test's row: what is given, and the result or the error expected of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Case:
    name: str
    given: Any
    expected: Any = None
    error: str | None = None
