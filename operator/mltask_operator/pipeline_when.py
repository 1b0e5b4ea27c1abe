"""Pure: a Pipeline task's `when`, a CEL expression over its upstream tasks and the pipeline's
parameters: checked, the tasks it names, and evaluated.

CEL is the language of the CRDs' own validation rules; the runtime is Google's (cel-cpp, the
`cel-expr-python` package), so an expression means here what it would mean to the API server.
An expression sees two variables:

- `tasks`: the upstream tasks by name, each `{status, metrics, outputs}`: `status` the task's
  state (completed, skipped or failed), `metrics` what its run step reported (name -> double),
  `outputs` its status.outputs (uri, sha256, size, name, kind, id). A task name with a `-` is
  written `tasks['clean-data']`.
- `params`: the pipeline's parameters by name, typed (string, int, double, bool).

`evaluate` runs the expression in this process, with no bound on its memory or time: for pure
tests and for the evaluator's own child process. The operator evaluates through
`mltask_operator.when_sandbox`, an `Evaluator` with limits.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cel_expr_python import cel

#: `VAR.name` or `VAR['name']` / `VAR["name"]`: the names an expression reads through VAR.
_REFERENCE = r"""\b{var}\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*(?:'([^']*)'|"([^"]*)")\s*\])"""
_TASKS = re.compile(_REFERENCE.format(var="tasks"))
_PARAMS = re.compile(_REFERENCE.format(var="params"))

_ENV = cel.NewEnv(variables={"tasks": cel.Type.Map(cel.Type.STRING, cel.Type.DYN),
                             "params": cel.Type.Map(cel.Type.STRING, cel.Type.DYN)})
# The bindings do not say they are thread-safe; the reconcile's workers are threads.
_LOCK = threading.Lock()


class WhenError(ValueError):
    """The expression does not compile, or does not give a bool."""


@dataclass(frozen=True)
class Outcome:
    """An evaluation: `value` is the bool, or None with `error` saying why there is none."""

    value: bool | None
    error: str | None = None


#: How the planner evaluates a `when`: (expression, tasks, params) -> its outcome. Never raises
#: for anything the expression does.
Evaluator = Callable[[str, Mapping[str, Mapping[str, Any]], Mapping[str, Any]], Outcome]


def references(expression: str) -> list[str]:
    """The task names the expression reads through `tasks`, in order, without repeats."""
    return _names(_TASKS, expression)


def parameter_references(expression: str) -> list[str]:
    """The parameter names the expression reads through `params`, in order, without
    repeats."""
    return _names(_PARAMS, expression)


def _names(pattern: re.Pattern[str], expression: str) -> list[str]:
    out: list[str] = []
    for m in pattern.finditer(expression):
        name = next(g for g in m.groups() if g is not None)
        if name not in out:
            out.append(name)
    return out


@lru_cache(maxsize=512)
def _compiled(expression: str) -> Any:
    with _LOCK:
        try:
            program = _ENV.compile(expression)
        except RuntimeError as e:
            raise WhenError(_tidy(str(e))) from None
        kind = program.return_type().name()
    if kind not in ("BOOL", "DYN"):
        raise WhenError(f"gives a {_TYPE_NAMES.get(kind, kind.lower())}, not a bool")
    return program


def check(expression: str) -> str | None:
    """Why the expression cannot be a condition (syntax, a known non-bool result), or None."""
    try:
        _compiled(expression)
    except WhenError as e:
        return str(e)
    return None


def evaluate(expression: str, tasks: Mapping[str, Mapping[str, Any]],
             params: Mapping[str, Any]) -> Outcome:
    """The expression's value over `tasks` and `params`, or why it has none (a metric or task
    it names that is not there, a type error, a result that is not a bool, a budget of the
    runtime exceeded). Raises only MemoryError."""
    try:
        program = _compiled(expression)
    except WhenError as e:
        return Outcome(None, str(e))
    with _LOCK:
        try:
            value = program.eval(data={"tasks": tasks, "params": params})
            kind = value.type().name()
            plain = value.plain_value() if kind != "ERROR" else None
            text = str(value.value()) if kind == "ERROR" else ""
        except MemoryError:
            raise
        except Exception as e:  # cel-cpp's own limits ("Iteration budget exceeded"), values
            return Outcome(None, _tidy(str(e)) or type(e).__name__)
    if kind == "ERROR":
        return Outcome(None, _tidy(text))
    if kind != "BOOL":
        return Outcome(None, f"gives {plain!r} ({_TYPE_NAMES.get(kind, kind.lower())}), "
                             "not a bool")
    return Outcome(bool(plain))


_TYPE_NAMES = {"DOUBLE": "double", "INT": "int", "UINT": "uint", "STRING": "string",
               "BYTES": "bytes", "LIST": "list", "MAP": "map", "NULL_TYPE": "null",
               "NULL": "null", "TIMESTAMP": "timestamp", "DURATION": "duration"}


def _tidy(message: str) -> str:
    """cel-cpp's messages without their status-code prefix and suffix, on one line."""
    text = re.sub(r"^(INVALID_ARGUMENT|NOT_FOUND|UNKNOWN|INTERNAL): ", "", message.strip())
    text = re.sub(r"\s*\[(INVALID_ARGUMENT|NOT_FOUND|UNKNOWN|INTERNAL)\]$", "", text)
    text = re.sub(r"^ERROR: <input>:", "at ", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else message
