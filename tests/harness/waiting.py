"""Test helpers that wait: for a condition to hold, for an object to be gone (404)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client


def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Until `check()` holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def gone(read: Callable[[], Any]) -> bool:
    """Whether `read()` answers 404."""
    try:
        read()
    except client.ApiException as e:
        if e.status == 404:
            return True
        raise
    return False


def wait_gone(read: Callable[[], Any], what: str, timeout: float = 20) -> None:
    until(lambda: gone(read), f"{what} to be gone", timeout)
