"""Unit tests of a Pipeline's typed parameters: values read as their type, the problems named,
the placeholders of a task replaced in its child MLTask."""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest
import yaml

from harness.pipelines import pipeline_example
from harness.tasks import REPO
from mltask_operator import pipeline_params as params
from mltask_operator.api.v1alpha1.pipeline import (
    VALUE_PATTERNS,
    Pipeline,
)
from mltask_operator.builders.mltask import build_child
from mltask_operator.pipeline_planner import plan_pipeline

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def pipeline(body: dict[str, Any] | None = None) -> Pipeline:
    body = body or pipeline_example("params")
    body["metadata"].update(namespace="ml", uid="p-uid", generation=1)
    return Pipeline.model_validate(body)


def _task(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in body["spec"]["tasks"] if t["name"] == name)


PARSED = [
    ("string", "adam", "adam"),
    ("string", "", ""),
    ("int", "40", 40),
    ("int", "-3", -3),
    ("int", "+7", 7),
    ("float", "0.01", 0.01),
    ("float", "1e-3", 0.001),
    ("float", ".5", 0.5),
    ("float", "2", 2.0),
    ("bool", "true", True),
    ("bool", "false", False),
]


@pytest.mark.parametrize(("kind", "text", "value"), PARSED,
                         ids=[f"{k}-{t or 'empty'}" for k, t, _ in PARSED])
def test_a_value_is_read_as_its_type(kind: str, text: str, value: Any) -> None:
    got = params.parse(kind, text)
    assert got == value and type(got) is type(value)


NOT_PARSED = [
    ("int", "4.5", "is not an int"),
    ("int", "forty", "is not an int"),
    ("int", "1" * 19, "is not an int"),      # past 64 bits
    ("int", "5\n", "is not an int"),
    ("float", "fast", "is not a float"),
    ("float", "1_000.0", "is not a float"),  # Python's float() would take it, CEL's pattern not
    ("float", "inf", "is not a float"),
    ("float", "9" * 400, "too large for a float"),
    ("bool", "True", "is not a bool"),
    ("bool", "yes", "is not a bool"),
    ("double", "1", "unknown type 'double'"),
]


@pytest.mark.parametrize(("kind", "text", "words"), NOT_PARSED,
                         ids=[f"{k}-{t[:8]!r}" for k, t, _ in NOT_PARSED])
def test_a_value_not_of_its_type_is_refused(kind: str, text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        params.parse(kind, text)


def test_the_patterns_are_the_ones_the_crds_cel_rules_check() -> None:
    """The API server and the operator read values through the same patterns."""
    crd = yaml.safe_load((REPO / "crds" / "mltask.dev_pipelines.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    item = spec["properties"]["parameters"]["items"]
    rules = " ".join(r["rule"] for r in item["x-kubernetes-validations"])
    for kind, pattern in VALUE_PATTERNS.items():
        assert f"self.type == '{kind}' ? self.value.matches(r'{pattern}')" in rules


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (0.01, "0.01"), (1e-3, "0.001"), (0.1 + 0.2,
     "0.30000000000000004"), (5.0, "5.0"), (40, "40"), ("a b", "a b")])
def test_a_value_renders_as_text_that_reads_back(value: Any, text: str) -> None:
    assert params.render(value) == text


def test_resolve_gives_the_value_else_the_default_typed() -> None:
    body = pipeline_example("params")
    body["spec"]["parameters"][0]["value"] = "0.01"       # learningRate
    assert params.resolve(pipeline(body).spec) == {
        "learningRate": 0.01, "epochs": 40, "hiddenUnits": "128", "pruneFraction": 0.5,
        "seed": 0, "minAccuracy": 0.9}
    assert params.resolve(pipeline(pipeline_example("digits")).spec) == {}


PROBLEMS = [
    ("wrong-type", {"name": "lr", "type": "float", "default": "fast"},
     "parameter lr: default 'fast' is not a float"),
    ("value-wrong-type", {"name": "epochs", "type": "int", "default": "4", "value": "4.5"},
     "parameter epochs: value '4.5' is not an int"),
    ("outside-enum", {"name": "opt", "enum": ["adam", "sgd"], "default": "adam",
                      "value": "rmsprop"},
     "parameter opt: value 'rmsprop' is not one of its enum (adam, sgd)"),
    ("default-outside-enum", {"name": "opt", "enum": ["adam"], "default": "sgd"},
     "parameter opt: default 'sgd' is not one of its enum (adam)"),
    ("enum-item-wrong-type", {"name": "on", "type": "bool", "enum": ["true", "yes"],
                              "default": "true"},
     "parameter on: enum item 'yes' is not a bool"),
    ("no-value", {"name": "seed", "type": "int"}, "parameter seed has no value and no default"),
]


@pytest.mark.parametrize(("case", "param", "problem"), PROBLEMS, ids=[c[0] for c in PROBLEMS])
def test_a_bad_parameter_is_named(case: str, param: dict[str, Any], problem: str) -> None:
    body = pipeline_example("params")
    body["spec"]["parameters"] = [q for q in body["spec"]["parameters"]
                                  if q["name"] != param["name"]] + [param]
    p = pipeline(body)
    problems = params.validate(p.spec)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    with pytest.raises(ValueError, match=re.escape(problem)):
        params.resolve(p.spec)


def test_the_example_has_no_problem() -> None:
    assert params.validate(pipeline().spec) == []


def test_an_unknown_or_malformed_reference_is_named_with_its_task_and_field() -> None:
    body = pipeline_example("params")
    train = _task(body, "train")["spec"]
    train["config"]["parameters"]["alpha"] = "$(params.alpha)"
    train["steps"]["run"]["args"] = ["--x", "$(params.learning-rate)", "$$(params.nope)"]
    train["steps"]["run"]["env"].append({"name": "LR", "value": "lr=$(params.lr"})
    assert params.validate(pipeline(body).spec) == [
        "task train: config.parameters.alpha references unknown parameter alpha",
        "task train: steps.run.args[1]: malformed parameter reference $(params.learning-rate) "
        "(write $(params.NAME), NAME a parameter of spec.parameters)",
        "task train: steps.run.env[1].value: malformed parameter reference $(params.lr "
        "(write $(params.NAME), NAME a parameter of spec.parameters)",
    ]


SUBSTITUTED = [
    ("$(params.lr)", "0.01"),
    ("--lr=$(params.lr) --n=$(params.n)", "--lr=0.01 --n=3"),
    ("$$(params.lr)", "$(params.lr)"),
    ("$$$(params.lr)", "$$(params.lr)"),
    ("$(params.lr)$(params.lr)", "0.010.01"),
    ("$(params.other)", "$(params.other)"),
    ("$(params.lr", "$(params.lr"),
    ("${params.lr} $(lr) {{params.lr}}", "${params.lr} $(lr) {{params.lr}}"),
    ("no placeholder", "no placeholder"),
]


@pytest.mark.parametrize(("text", "expected"), SUBSTITUTED, ids=[t for t, _ in SUBSTITUTED])
def test_substitute(text: str, expected: str) -> None:
    assert params.substitute(text, {"lr": "0.01", "n": "3"}) == expected


def test_the_child_mltask_gets_the_values_in_config_args_and_env() -> None:
    body = pipeline_example("params")
    body["spec"]["parameters"][1]["value"] = "5"                 # epochs
    body["spec"]["parameters"].append({"name": "verbose", "type": "bool", "default": "false"})
    train = _task(body, "train")["spec"]
    train["steps"]["run"]["args"] = ["--epochs", "$(params.epochs)", "--verbose=$(params.verbose)",
                                     "literal $$(params.epochs)"]
    train["steps"]["run"]["command"] = ["echo", "$(params.epochs)"]   # not substituted
    p = pipeline(body)
    spec = build_child(p, p.spec.tasks[1], {"preprocess": "s3://d/x.npz"})["spec"]
    assert spec["config"]["parameters"] == {
        "model": "mlp", "hiddenUnits": "128", "epochs": "5", "learningRate": "0.001",
        "batchSize": "32", "seed": "0"}
    run = spec["steps"]["run"]
    assert run["args"] == ["--epochs", "5", "--verbose=false", "literal $(params.epochs)"]
    assert run["env"] == [{"name": "PYTHONHASHSEED", "value": "0"}]
    assert run["command"] == ["echo", "$(params.epochs)"]
    assert p.spec.tasks[1].spec.steps.run.args == [
        "--epochs", "$(params.epochs)", "--verbose=$(params.verbose)",
        "literal $$(params.epochs)"], "the pipeline's own spec is untouched"
    opt = build_child(p, p.spec.tasks[2], {"preprocess": "s3://d", "train": "s3://m"})["spec"]
    assert opt["config"]["parameters"]["pruneFraction"] == "0.5"


def test_the_planner_fails_a_pipeline_with_a_bad_reference_and_starts_nothing() -> None:
    body = pipeline_example("params")
    _task(body, "preprocess")["spec"]["config"]["parameters"]["seed"] = "$(params.sed)"
    plan = plan_pipeline(pipeline(body), {}, NOW)
    assert plan.invalid and plan.create == []
    st = plan.status
    assert st.status == "failed"
    assert "task preprocess: config.parameters.seed references unknown parameter sed" \
        in (st.message or "")
    failed = next(c for c in st.conditions or [] if c.type == "Failed")
    assert failed.reason == "InvalidSpec"


def test_the_planner_starts_a_valid_pipeline_with_parameters() -> None:
    plan = plan_pipeline(pipeline(), {}, NOW)
    assert not plan.invalid and [t.name for t in plan.create] == ["preprocess"]


def test_a_when_reading_an_unknown_parameter_is_named_with_its_task() -> None:
    body = pipeline_example("params")
    _task(body, "optimize")["when"] = "params.minAccuracy > 0.5 && params['maxLoss'] < 1.0"
    assert params.validate(pipeline(body).spec) == [
        "task optimize: when \"params.minAccuracy > 0.5 && params['maxLoss'] < 1.0\" reads "
        "unknown parameter maxLoss"]


def test_the_example_optimizes_only_above_its_min_accuracy() -> None:
    def optimizes(accuracy: float, minimum: str | None = None) -> bool:
        body = pipeline_example("params")
        if minimum is not None:
            next(p for p in body["spec"]["parameters"]
                 if p["name"] == "minAccuracy")["value"] = minimum
        p = pipeline(body)
        children = {}
        for name in ("preprocess", "train"):
            t = next(x for x in p.spec.tasks if x.name == name)
            c = build_child(p, t, {"preprocess": "s3://up/"})
            c["status"] = {"status": "completed", "attempt": 1, "observedRetryGeneration": 0,
                           "outputs": {"kind": "x", "name": "x", "uri": f"s3://{name}/",
                                       "sha256": "ab" * 32}}
            if name == "train":
                c["status"]["metrics"] = {"accuracy": accuracy}
            children[name] = c
        return [t.name for t in plan_pipeline(p, children, NOW).create] == ["optimize"]
    assert optimizes(0.95) and not optimizes(0.85)
    assert optimizes(0.85, minimum="0.8")
