"""Pure: a Pipeline's typed parameters: their values, the problems with them, and the
$(params.NAME) placeholders of its tasks' specs replaced by those values.

A parameter's value is written as a string (spec.parameters[].value, else its default) and
read as its type: `resolve` gives the typed values (what a condition sees as `params`),
`render` the text a placeholder becomes. Placeholders are replaced in a task's
config.parameters values, steps.*.args items and steps.*.env[].value; `$$(params.NAME)` is
written as the literal `$(params.NAME)`. The API server's CEL rules refuse a bad parameter at
apply time; `validate` says the same of one that got through, and what CEL cannot see: a
placeholder, or a task's `when`, naming no parameter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping

from mltask_operator import pipeline_when
from mltask_operator.api.v1alpha1.mltask import StepSpec, TaskTemplate
from mltask_operator.api.v1alpha1.pipeline import (
    PARAMETER_NAME,
    VALUE_PATTERNS,
    ParameterType,
    PipelineParameter,
    PipelineSpec,
)

#: What a parameter's value is read as.
Value = str | int | float | bool

#: `$(params.X)`, and before it the `$` that escapes it. X is whatever comes up to `)` or a
#: space, so that a malformed name is found too; a reference without `)` is malformed.
_PLACEHOLDER = re.compile(r"(\$?)\$\(params\.([^)\s]*)(\)?)")

_WRITTEN = {
    ParameterType.INT: "an int, e.g. 5",
    ParameterType.FLOAT: "a float, e.g. 0.01 or 1e-3",
    ParameterType.BOOL: "a bool, true or false",
}


def parse(kind: ParameterType | str, text: str) -> Value:
    """The value `text` is as a value of type `kind`; ValueError saying why it is none."""
    try:
        t = ParameterType(kind)
    except ValueError:
        raise ValueError(f"unknown type {kind!r}: use string, int, float or bool") from None
    if t == ParameterType.STRING:
        return text
    if not re.fullmatch(VALUE_PATTERNS[t], text):
        raise ValueError(f"{text!r} is not {_WRITTEN[t]}")
    if t == ParameterType.INT:
        return int(text)
    if t == ParameterType.BOOL:
        return text == "true"
    number = float(text)
    if not math.isfinite(number):  # digits past a double's range: CEL's pattern lets them by
        raise ValueError(f"{text!r} is too large for a float")
    return number


def render(value: Value) -> str:
    """The text a placeholder becomes: true/false, a float that reads back the same (0.01),
    an int's digits, a string as it is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def effective(param: PipelineParameter) -> str | None:
    """The value as written: value if set, else the default (None: neither)."""
    return param.value if param.value is not None else param.default


def parameter_problems(param: PipelineParameter) -> list[str]:
    """What is wrong with one parameter, each naming it: the CEL rules of the CRD, again."""
    where = f"parameter {param.name}"
    try:
        ParameterType(param.type)
    except ValueError:
        return [f"{where} has an unknown type {param.type!r}: use string, int, float or bool"]
    problems: list[str] = []
    for field, text in (("default", param.default), ("value", param.value)):
        if text is None:
            continue
        try:
            parse(param.type, text)
        except ValueError as e:
            problems.append(f"{where}: {field} {e}")
            continue
        if param.enum is not None and text not in param.enum:
            problems.append(f"{where}: {field} {text!r} is not one of its enum "
                            f"({', '.join(param.enum)})")
    for item in param.enum or []:
        try:
            parse(param.type, item)
        except ValueError as e:
            problems.append(f"{where}: enum item {e}")
    if effective(param) is None:
        problems.append(f"{where} has no value and no default")
    return problems


def resolve(spec: PipelineSpec) -> dict[str, Value]:
    """Each parameter's effective value, typed (name -> value); ValueError if a parameter
    has a problem (`validate` lists them)."""
    values: dict[str, Value] = {}
    for p in spec.parameters or []:
        problems = parameter_problems(p)
        text = effective(p)
        if problems or text is None:
            raise ValueError("; ".join(problems))
        values[p.name] = parse(p.type, text)
    return values


def substitute(text: str, values: Mapping[str, str]) -> str:
    """`text` with each $(params.NAME) of `values` replaced by its text and each
    $$(params.NAME) by the literal $(params.NAME); any other placeholder is left as it is."""
    def replace(m: re.Match[str]) -> str:
        escaped, name, closed = m.groups()
        if escaped:
            return m.group(0)[1:]
        if closed and name in values:
            return values[name]
        return m.group(0)
    return _PLACEHOLDER.sub(replace, text) if "$(params." in text else text


def references(text: str) -> Iterator[tuple[str, str | None]]:
    """The placeholders of `text` that are not escaped: (the placeholder as written, the
    parameter it names, or None when it is malformed)."""
    for m in _PLACEHOLDER.finditer(text):
        escaped, name, closed = m.groups()
        if not escaped:
            ok = bool(closed) and re.fullmatch(PARAMETER_NAME, name) is not None
            yield m.group(0), name if ok else None


def _steps(tpl: TaskTemplate) -> Iterator[tuple[str, StepSpec]]:
    for name in ("download", "run", "upload"):
        step = getattr(tpl.steps, name)
        if step is not None:
            yield name, step


def texts(tpl: TaskTemplate) -> Iterator[tuple[str, str]]:
    """(field, text) of every field of a task's spec where placeholders are replaced."""
    if tpl.config is not None:
        for key, text in (tpl.config.parameters or {}).items():
            yield f"config.parameters.{key}", text
    for name, step in _steps(tpl):
        for i, arg in enumerate(step.args or []):
            yield f"steps.{name}.args[{i}]", arg
        for i, env in enumerate(step.env or []):
            if env.value is not None:
                yield f"steps.{name}.env[{i}].value", env.value


def apply(tpl: TaskTemplate, values: Mapping[str, Value]) -> TaskTemplate:
    """A copy of a task's spec with its placeholders replaced by the parameters' `values`."""
    out = tpl.model_copy(deep=True)
    text = {name: render(v) for name, v in values.items()}
    if out.config is not None and out.config.parameters:
        out.config.parameters = {k: substitute(v, text) for k, v in out.config.parameters.items()}
    for _, step in _steps(out):
        if step.args:
            step.args = [substitute(a, text) for a in step.args]
        for env in step.env or []:
            if env.value is not None:
                env.value = substitute(env.value, text)
    return out


def validate(spec: PipelineSpec) -> list[str]:
    """Problems with the parameters and the placeholders of the tasks, each naming the
    parameter, or the task, field and placeholder."""
    problems: list[str] = []
    seen: set[str] = set()
    for p in spec.parameters or []:
        if p.name in seen:
            problems.append(f"parameter {p.name}: duplicate parameter name")
        seen.add(p.name)
        problems += parameter_problems(p)
    for t in spec.tasks:
        for field, text in texts(t.spec):
            for written, name in references(text):
                if name is None:
                    problems.append(f"task {t.name}: {field}: malformed parameter reference "
                                    f"{written} (write $(params.NAME), NAME a parameter of "
                                    "spec.parameters)")
                elif name not in seen:
                    problems.append(f"task {t.name}: {field} references unknown parameter "
                                    f"{name}")
        for name in pipeline_when.parameter_references(t.when or ""):
            if name not in seen:
                problems.append(f"task {t.name}: when {t.when!r} reads unknown parameter "
                                f"{name}")
    return problems
