"""Typed pipeline parameters on the real API server: $(params.NAME) replaced in each child
MLTask, bad parameters refused at apply time by the CRD's CEL rules (naming the parameter),
spec.parameters immutable, a placeholder naming no parameter failing the pipeline, and a
`when` reading a parameter. The Argo stand-in advances each child's Workflow."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from kubernetes import client

from harness.argo_standin import ArgoStandIn
from harness.pipelines import (
    DATASET,
    PIPELINES,
    Pipelines,
    model_result,
    pipeline_example,
    succeed,
    task_state,
    through_training,
)
from harness.tasks import G, V, cond

pytestmark = pytest.mark.integration

NAME = "digits-tuned"
GATE = "tasks.train.metrics.accuracy >= params.minAccuracy"


@pytest.fixture
def pipes(api: client.ApiClient, namespace: str, operator: object) -> Pipelines:
    return Pipelines(api, namespace)


def _param(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in body["spec"]["parameters"] if p["name"] == name)


def _task(body: dict[str, Any], name: str) -> dict[str, Any]:
    return cast(dict[str, Any],
                next(t for t in body["spec"]["tasks"] if t["name"] == name)["spec"])


def _with(**values: str) -> dict[str, Any]:
    """The params example with these parameters' `value` set."""
    body = pipeline_example("params")
    for name, value in values.items():
        _param(body, name)["value"] = value
    return body


def _pipelines(pipes: Pipelines) -> list[str]:
    items = cast(dict[str, Any], pipes.objects.list_namespaced_custom_object(
        G, V, pipes.ns, PIPELINES))["items"]
    return [p["metadata"]["name"] for p in items]


def test_each_child_gets_the_parameters_values(pipes: Pipelines, argo: ArgoStandIn) -> None:
    body = _with(seed="7", learningRate="1e-2")
    _task(body, "train")["steps"]["run"]["args"] = ["--note=$$(params.seed)", "$(params.seed)"]
    pipes.create(body)
    pre = pipes.wait_child(f"{NAME}-preprocess")["spec"]
    assert pre["config"]["parameters"] == {"scaling": "minmax", "testSize": "0.2", "seed": "7"}
    succeed(argo, pipes.ns, f"{NAME}-preprocess-1", DATASET)
    train = pipes.wait_child(f"{NAME}-train")["spec"]
    assert train["config"]["parameters"] == {
        "model": "mlp", "hiddenUnits": "128", "epochs": "40",  # defaults: no value set
        "learningRate": "0.01", "batchSize": "32", "seed": "7"}
    run = train["steps"]["run"]
    assert run["env"] == [{"name": "PYTHONHASHSEED", "value": "7"}]
    assert run["args"] == ["--note=$(params.seed)", "7"], "$$(params.x) stays literal"
    # The Pipeline keeps its placeholders: only the children have the values.
    stored = _task(pipes.get(NAME), "train")
    assert stored["config"]["parameters"]["seed"] == "$(params.seed)"


def _bool(b: dict[str, Any]) -> None:
    b["spec"]["parameters"].append({"name": "shuffle", "type": "bool", "value": "yes"})


def _setter(name: str, field: str, value: str | None) -> Callable[[dict[str, Any]], None]:
    def change(b: dict[str, Any]) -> None:
        if value is None:
            del _param(b, name)[field]
        else:
            _param(b, name)[field] = value
    return change


REFUSED = [
    ("int-value", _setter("epochs", "value", "ten"), "spec.parameters[1].value",
     "parameter epochs value is not written as a value of its type"),
    ("float-value", _setter("learningRate", "value", "fast"), "spec.parameters[0].value",
     "parameter learningRate value is not written as a value of its type"),
    ("bool-value", _bool, "spec.parameters[6].value",
     "parameter shuffle value is not written as a value of its type"),
    ("value-outside-enum", _setter("pruneFraction", "value", "0.3"),
     "spec.parameters[3].value", "parameter pruneFraction value is not one of its enum"),
    ("default-outside-enum", _setter("pruneFraction", "default", "0.3"),
     "spec.parameters[3].default", "parameter pruneFraction default is not one of its enum"),
    ("no-value-no-default", _setter("epochs", "default", None), "spec.parameters[1]",
     "parameter epochs has no value and no default"),
    ("unknown-type", _setter("seed", "type", "list"), "spec.parameters[4].type",
     "parameter seed has an unknown type: use string, int, float or bool"),
]


@pytest.mark.parametrize(("change", "field", "words"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_a_bad_parameter_is_refused_at_apply_naming_it(
        pipes: Pipelines, change: Callable[[dict[str, Any]], None], field: str,
        words: str) -> None:
    body = pipeline_example("params")
    change(body)
    with pytest.raises(client.ApiException) as err:
        pipes.create(body)
    text = json.loads(err.value.body or "{}")["message"]
    assert err.value.status == 422, text
    assert f"{field}: " in text and words in text, text
    assert _pipelines(pipes) == [], "nothing half-created"
    assert pipes.children() == {}


@pytest.mark.parametrize("parameters", [
    [{"name": "epochs", "type": "int", "value": "20"}],
    None,
], ids=["changed", "removed"])
def test_parameters_cannot_change_after_create(pipes: Pipelines,
                                               parameters: list[Any] | None) -> None:
    pipes.create(pipeline_example("params"))
    with pytest.raises(client.ApiException) as err:
        pipes.patch(NAME, {"parameters": parameters})
    text = json.loads(err.value.body or "{}")["message"]
    assert err.value.status == 422, text
    assert ("spec.parameters: Forbidden: spec.parameters cannot change once the pipeline "
            "exists; create a new Pipeline instead (kubectl mltask run -f FILE --param "
            "NAME=VALUE)") in text, text
    assert pipes.get(NAME)["spec"]["parameters"] == _defaulted(pipeline_example("params"))


def _defaulted(body: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.parameters as the API server stores them: type defaulted to string."""
    return [{"type": "string", **p} for p in body["spec"]["parameters"]]


def test_a_placeholder_naming_no_parameter_fails_the_pipeline(pipes: Pipelines) -> None:
    body = pipeline_example("params")
    _task(body, "train")["steps"]["run"]["env"] = [
        {"name": "PYTHONHASHSEED", "value": "$(params.hashSeed)"}]
    pipes.create(body)  # the API server cannot see a placeholder
    st = pipes.wait_state(NAME, "failed")
    assert st["message"] == ("Invalid pipeline: task train: steps.run.env[0].value references "
                             "unknown parameter hashSeed")
    failed = cond(st, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "InvalidSpec")
    time.sleep(1)
    assert pipes.children() == {}, "no task ever starts"


@pytest.mark.parametrize(("min_accuracy", "runs"), [("0.8", True), ("0.9", False)])
def test_a_when_reads_a_parameter(pipes: Pipelines, argo: ArgoStandIn, min_accuracy: str,
                                  runs: bool) -> None:
    pipes.create(_with(minAccuracy=min_accuracy))
    through_training(pipes, argo, 0.85, pipeline=NAME)
    if runs:
        opt = pipes.wait_child(f"{NAME}-optimize")["spec"]
        assert opt["config"]["parameters"]["pruneFraction"] == "0.5"
        succeed(argo, pipes.ns, f"{NAME}-optimize-1", model_result("digits-mlp-int8"))
        st = pipes.wait_state(NAME, "completed")
        assert (st["progress"], st.get("skippedTasks")) == ("3/3", None)
        return
    st = pipes.wait_state(NAME, "completed")
    opt = task_state(st, "optimize")
    assert (opt["status"], opt["reason"], opt["message"]) == (
        "skipped", "WhenFalse", f"skipped: when {GATE!r} is false")
    assert st["progress"] == "2/3 (1 skipped)"
    time.sleep(1)
    assert sorted(pipes.children()) == [f"{NAME}-preprocess", f"{NAME}-train"]
