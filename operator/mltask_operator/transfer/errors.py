"""Errors of the transfer steps: the text of each is the one sentence of the last log line."""

from __future__ import annotations

#: The longest message: a name or a server's answer inside one cannot flood the log or the
#: task's status (the kubelet keeps 2 KiB of a failed step's log).
MAX_MESSAGE = 1000


def short(text: object, limit: int = 200) -> str:
    """`repr(text)` cut to about `limit` characters, for a name of someone else's choosing."""
    shown = repr(str(text)[:limit + 1])
    return shown if len(str(text)) <= limit else shown[:-1] + "...'"


class TransferError(Exception):
    """A transfer failed (exit 1); `str(error)` is one sentence naming what failed and why."""

    def __init__(self, message: str) -> None:
        text = " ".join(message[:20 * MAX_MESSAGE].split())  # one line, whatever it held
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 5] + " ..."
        super().__init__(text)


class ContractError(TransferError):
    """The step's environment (the step contract) is missing or holds a bad value (exit 2)."""
