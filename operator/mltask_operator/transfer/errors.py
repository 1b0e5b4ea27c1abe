"""Errors of the transfer steps: the text of each is the one sentence of the last log line."""

from __future__ import annotations


class TransferError(Exception):
    """A transfer failed (exit 1); `str(error)` is one sentence naming what failed and why."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the parts held


class ContractError(TransferError):
    """The step's environment (the step contract) is missing or holds a bad value (exit 2)."""
