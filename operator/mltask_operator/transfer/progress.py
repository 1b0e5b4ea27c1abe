"""Progress lines of the transfer steps on stdout: sizes, percent and rate, throttled.

What is copied where comes first, then bytes, percent and rate at most every 2 s and at the end
of each object, then a summary.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

INTERVAL_SECONDS = 2.0
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def log(line: str) -> None:
    """One line of the step's log (stdout, flushed: the pod log shows it at once)."""
    print(line, file=sys.stdout, flush=True)


def format_size(n: float) -> str:
    """`n` bytes for people: '512 B', '40.0 MiB'."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in _UNITS:
        n /= 1024
        if n < 1024 or unit == _UNITS[-1]:
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def count(n: int, noun: str) -> str:
    """'1 file', '3 files'."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def format_rate(done: int, seconds: float) -> str:
    """The mean rate of `done` bytes in `seconds`: '52.1 MiB/s'."""
    return f"{format_size(done / max(seconds, 1e-3))}/s"


def progress_line(verb: str, label: str, done: int, total: int | None, seconds: float,
                  files: tuple[int, int] | None = None) -> str:
    """`download s3://bkt/raw/digits.csv.gz: 40.0 MiB of 128.0 MiB (31%), 52.1 MiB/s`; with
    `files` (done, total) the line ends `, 3 of 40 files`."""
    line = f"{verb} {label}: {format_size(done)}"
    if total is not None:
        percent = 100 if total == 0 else min(100, done * 100 // total)
        line += f" of {format_size(total)} ({percent}%)"
    line += f", {format_rate(done, seconds)}"
    if files is not None:
        line += f", {files[0]} of {count(files[1], 'file')}"
    return line


class Meter:
    """Counts the bytes of one transfer (thread-safe: s3transfer reports from its threads) and
    prints a progress line at most every `interval` seconds, and one at `finish`."""

    def __init__(self, verb: str, label: str, total: int | None, *, files: int | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = INTERVAL_SECONDS,
                 emit: Callable[[str], None] = log) -> None:
        self.verb, self.label, self.total = verb, label, total
        self.files_total = files
        self.files_done = 0
        self.done = 0
        self._clock, self._interval, self._emit = clock, interval, emit
        self._start = self._last = clock()
        self._lock = threading.Lock()

    @property
    def seconds(self) -> float:
        return self._clock() - self._start

    def line(self) -> str:
        files = None if self.files_total is None else (self.files_done, self.files_total)
        return progress_line(self.verb, self.label, self.done, self.total, self.seconds, files)

    def add(self, n: int) -> None:
        """`n` more bytes done; prints a line if the last one is `interval` old."""
        with self._lock:
            self.done += n
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
            line = self.line()
        self._emit(line)

    def set(self, done: int) -> None:
        """The count is `done` (for transfers measured by polling): prints as `add` does."""
        with self._lock:
            delta = done - self.done
        self.add(delta)

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def finish(self) -> None:
        """The final line of this transfer."""
        with self._lock:
            line = self.line()
        self._emit(line)
