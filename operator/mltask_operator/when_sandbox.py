"""A Pipeline task's `when`, evaluated in a child process with a bound on memory and time.

A `when` is written by whoever may create a Pipeline; CEL has no loops, but comprehensions
over string concatenations grow without bound (about 1,500 characters of them over a
1,024-character parameter took 955 MiB), and a costly regular expression in a comprehension
holds the CPU for seconds. In the operator's process that is an OOM kill (and the next replica
evaluates the same expression) or a stalled Lease. So the operator evaluates in a child,
`python -m mltask_operator.when_sandbox`, started at the first evaluation and reused:

- memory: the child's address space is limited to `MEMORY_BYTES` (setrlimit RLIMIT_AS, set
  once its imports are done); an expression that needs more fails with `MemoryError`, or the
  child dies, and the outcome is an error; the next evaluation starts a new child;
- time: each evaluation has `TIME_BUDGET` seconds of wall time; a child that does not answer
  in time is killed and the evaluation tried once more in a new one (the machine may have been
  busy), then the outcome is an error.

The parent only waits on a pipe (the GIL is free for health checks and the Lease). Outcomes are
remembered (`MEMO_SIZE`, by expression and bindings), so a level-based reconcile does not
evaluate the same thing again. The protocol is JSON lines over the child's stdin and stdout;
the child says `ready` first.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from mltask_operator import pipeline_when
from mltask_operator.pipeline_when import Outcome

MIB = 1024 * 1024
#: The child's address space (RLIMIT_AS): the interpreter and the CEL runtime take about 30 MiB.
MEMORY_BYTES = 128 * MIB
#: Wall time of one evaluation, in seconds.
TIME_BUDGET = 1.0
#: How long a new child may take to import and say it is ready, in seconds.
START_BUDGET = 30.0
#: Outcomes remembered, by (expression, bindings).
MEMO_SIZE = 2048

READY = "ready"


class SandboxUnavailable(RuntimeError):
    """The child could not be started: the operator's problem, not the expression's (the
    reconcile raises and is retried)."""


def memory_text(limit: int = MEMORY_BYTES) -> str:
    return f"evaluation exceeded its memory budget ({limit // MIB} MiB)"


def time_text(budget: float = TIME_BUDGET) -> str:
    return f"evaluation exceeded its time budget ({budget:g} s)"


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class Sandbox:
    """One child process, shared by the reconcile's worker threads (one evaluation at a time)."""

    def __init__(self, *, memory_bytes: int = MEMORY_BYTES, time_budget: float = TIME_BUDGET,
                 start_budget: float = START_BUDGET, memo_size: int = MEMO_SIZE) -> None:
        self.memory_bytes = memory_bytes
        self.time_budget = time_budget
        self.start_budget = start_budget
        self.memo_size = memo_size
        self._lock = threading.Lock()
        self._memo: OrderedDict[tuple[str, str], Outcome] = OrderedDict()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._next_id = 0
        #: Children started so far (for tests and logs).
        self.starts = 0

    def evaluate(self, expression: str, tasks: Mapping[str, Mapping[str, Any]],
                 params: Mapping[str, Any]) -> Outcome:
        """A `pipeline_when.Evaluator`: the expression's outcome, an error when it exceeds a
        budget. Raises SandboxUnavailable only if no child can be started."""
        try:
            bindings = json.dumps({"tasks": tasks, "params": params}, sort_keys=True)
        except (TypeError, ValueError) as e:
            return Outcome(None, f"its inputs cannot be evaluated: {e}")
        key = (expression, bindings)
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
            outcome = self._evaluate(expression, bindings)
            self._memo[key] = outcome
            while len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)
            return outcome

    def close(self) -> None:
        """Stop the child (a new one starts at the next evaluation)."""
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _evaluate(self, expression: str, bindings: str) -> Outcome:
        for attempt in (1, 2):
            try:
                reply = self._ask(expression, bindings)
            except _Timeout:
                self._stop()
                if attempt == 2:
                    return Outcome(None, time_text(self.time_budget))
            except _Died:
                self._stop()
                return Outcome(None, memory_text(self.memory_bytes))
            else:
                if reply.get("memory"):
                    self._stop()     # its heap may be in any state: start afresh next time
                    return Outcome(None, memory_text(self.memory_bytes))
                return Outcome(reply.get("value"), reply.get("error"))
        raise AssertionError("unreachable")

    def _ask(self, expression: str, bindings: str) -> dict[str, Any]:
        proc = self._child()
        self._next_id += 1
        line = (json.dumps({"id": self._next_id, "expression": expression,
                            "bindings": bindings}) + "\n").encode()
        assert proc.stdin is not None
        try:
            proc.stdin.write(line)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died from None
        while True:
            reply = json.loads(self._line(proc, self.time_budget, _Timeout))
            if reply.get("id") in (self._next_id, None):
                return dict(reply)

    def _child(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.memory_bytes)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        except OSError as e:
            raise SandboxUnavailable(f"cannot start the when evaluator: {e}") from None
        self._proc = proc
        self.starts += 1
        try:
            ready = self._line(proc, self.start_budget, SandboxUnavailable)
        except (_Died, SandboxUnavailable):
            self._stop()
            raise SandboxUnavailable("the when evaluator did not start (no ready line within "
                                     f"{self.start_budget:g} s)") from None
        if json.loads(ready) != READY:
            self._stop()
            raise SandboxUnavailable(f"the when evaluator said {ready[:200]!r}, not ready")
        return proc

    def _line(self, proc: subprocess.Popen[bytes], budget: float,
              late: type[Exception]) -> str:
        """The child's next line within `budget` seconds; `late` is raised after it, _Died if
        the child ends first."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + budget
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise late()
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _Died()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def _stop(self) -> None:
        proc, self._proc, self._buffer = self._proc, None, b""
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


_SHARED: Sandbox | None = None
_SHARED_LOCK = threading.Lock()


def shared() -> Sandbox:
    """The operator's one sandbox (its child starts at the first evaluation)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Sandbox()
        return _SHARED


def evaluate(expression: str, tasks: Mapping[str, Mapping[str, Any]],
             params: Mapping[str, Any]) -> Outcome:
    """The operator's `pipeline_when.Evaluator`: through the shared sandbox."""
    return shared().evaluate(expression, tasks, params)


def _serve(memory_bytes: int) -> None:
    """The child: limit its own memory, say ready, then answer one request per line."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    out.write(json.dumps(READY) + "\n")
    out.flush()
    for line in sys.stdin:
        rid = None
        try:
            request = json.loads(line)
            rid = request["id"]
            bindings = json.loads(request["bindings"])
            outcome = pipeline_when.evaluate(request["expression"], bindings["tasks"],
                                             bindings["params"])
            reply: dict[str, Any] = {"id": rid, "value": outcome.value, "error": outcome.error}
        except MemoryError:
            reply = {"id": rid, "memory": True}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            return       # exit: the parent starts a new child with a fresh heap
        except Exception as e:  # a request it cannot read: say so, keep serving
            reply = {"id": rid, "value": None, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else MEMORY_BYTES)
