"""Retries and timeouts of the transfer steps: settings, backoff and the log line of each retry."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mltask_operator.transfer import progress
from mltask_operator.transfer.errors import ContractError

#: HTTP statuses worth another attempt: timeouts, throttling (429, S3's 503 SlowDown), 5xx.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Policy:
    """How hard the steps try; each field has an environment variable of the step pods."""

    attempts: int = 8
    """MLTASK_TRANSFER_MAX_ATTEMPTS: attempts per request (botocore, s3transfer, https, hf)."""
    connect_timeout: float = 10.0
    """MLTASK_TRANSFER_CONNECT_TIMEOUT: seconds to open a connection."""
    read_timeout: float = 60.0
    """MLTASK_TRANSFER_READ_TIMEOUT: seconds without a byte from the server."""
    max_backoff: float = 20.0
    """Longest wait between two attempts (botocore's own cap)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Policy:
        return cls(
            attempts=int(_number(env, "MLTASK_TRANSFER_MAX_ATTEMPTS", cls.attempts, integer=True)),
            connect_timeout=_number(env, "MLTASK_TRANSFER_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=_number(env, "MLTASK_TRANSFER_READ_TIMEOUT", cls.read_timeout),
        )

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number `attempt` (1, 2, ...): exponential from
        0.5 s, capped, half of it random so that many pods do not retry in step."""
        base: float = min(self.max_backoff, 0.5 * 2.0 ** (attempt - 1))
        return base / 2 + rand() * base / 2


def _number(env: Mapping[str, str], name: str, default: float, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ContractError(f"{name}={raw!r} is not {kind}") from None
    if integer and value < 1:
        raise ContractError(f"{name}={raw!r} must be at least 1")
    if value <= 0:
        raise ContractError(f"{name}={raw!r} must be positive")
    return value


def log_retry(what: str, cause: str, attempt: int, attempts: int, delay: float | None) -> None:
    """`retry: GET https://h/f: HTTP 503; attempt 2 of 8 in 0.6 s`."""
    wait = f" in {delay:.1f} s" if delay is not None else ""
    progress.log(f"retry: {what}: {cause}; attempt {attempt + 1} of {attempts}{wait}")
