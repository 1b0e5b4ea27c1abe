"""Unit tests of a Pipeline that decides: `when` (CEL over upstream metrics and parameters),
skipped tasks and the per-task failure policy, in the pure planner."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from harness.pipelines import pipeline_example
from mltask_operator import pipeline_dag as dag
from mltask_operator import pipeline_when
from mltask_operator.api.v1alpha1.pipeline import Pipeline
from mltask_operator.builders.mltask import build_child
from mltask_operator.pipeline_planner import PipelinePlan, plan_pipeline

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
GATE = "tasks.train.metrics.accuracy >= 0.9"


def pipeline(name: str = "digits", *, tasks: dict[str, dict[str, Any]] | None = None,
             extra: list[dict[str, Any]] | None = None, **spec: Any) -> Pipeline:
    """The example pipeline with `tasks` fields merged into its tasks by name and `extra`
    tasks appended."""
    body = pipeline_example(name)
    body["metadata"].update(namespace="ml", uid="p-uid", generation=1)
    body["spec"].update(spec)
    for t in body["spec"]["tasks"]:
        t.update((tasks or {}).get(t["name"], {}))
    body["spec"]["tasks"] += extra or []
    return Pipeline.model_validate(body)


def child(p: Pipeline, task: str, status: str, *, metrics: dict[str, float] | None = None,
          uri: str | None = "s3://out") -> dict[str, Any]:
    t = next(x for x in p.spec.tasks if x.name == task)
    body = build_child(p, t, dict.fromkeys(dag.dependencies(t), "s3://up"))
    body["status"] = {"status": status, "attempt": 1, "observedRetryGeneration": 0}
    if status == "completed" and uri:
        body["status"]["outputs"] = {"kind": "x", "name": "x", "uri": uri,
                                     "sha256": "ab" * 32}
    if metrics is not None:
        body["status"]["metrics"] = metrics
    return body


def entry(plan: PipelinePlan, task: str) -> tuple[str, str | None, str | None]:
    e = next(e for e in plan.status.tasks or [] if e.name == task)
    return str(e.status), e.reason, e.message


def report(from_optimize: bool) -> dict[str, Any]:
    """A fourth task after optimize: it reads optimize's model, or only waits for it."""
    spec = pipeline_example("digits")["spec"]["tasks"][2]["spec"]
    dataset = {"uri": "s3://d/digits.npz"}
    spec = {**spec, "input": {"dataset": dataset, "model": {"fromTask": "optimize"}}} \
        if from_optimize else {**spec, "input": {"dataset": dataset, "model": {"uri": "s3://m"}}}
    out: dict[str, Any] = {"name": "report", "spec": spec}
    if not from_optimize:
        out["dependsOn"] = ["optimize"]
    return out


# ---------------------------------------------------------------------- the CEL expression


def test_references_are_the_tasks_an_expression_reads() -> None:
    assert pipeline_when.references(
        "tasks.train.metrics.acc > 0.9 && tasks['clean-data'].status == 'completed' "
        '|| tasks["x"].outputs.uri != "" || tasks.train.metrics.loss < 1') == [
            "train", "clean-data", "x"]
    assert pipeline_when.references("params.n > 1") == []


@pytest.mark.parametrize(("expression", "why"), [
    ("tasks.train.metrics.accuracy >=", "Syntax error"),
    ("'text'", "gives a string, not a bool"),
    ("1 + 2", "gives a int, not a bool"),
])
def test_check_refuses_what_cannot_be_a_condition(expression: str, why: str) -> None:
    got = pipeline_when.check(expression)
    assert got is not None and why in got


def test_evaluate_reads_metrics_outputs_and_params() -> None:
    tasks = {"train": {"status": "completed", "metrics": {"accuracy": 0.93},
                       "outputs": {"uri": "s3://m/model.joblib"}}}
    ev = pipeline_when.evaluate
    assert ev(GATE, tasks, {}).value is True
    assert ev("tasks.train.metrics.accuracy >= params.threshold", tasks,
              {"threshold": 0.95}).value is False
    assert ev("tasks.train.metrics.accuracy > 0", tasks, {}).value is True  # double vs int
    assert ev("tasks.train.outputs.uri.endsWith('.joblib') && params.mode in ['a', 'b']",
              tasks, {"mode": "b"}).value is True
    assert ev("has(tasks.train.metrics.loss) && tasks.train.metrics.loss < 1", tasks,
              {}).value is False


@pytest.mark.parametrize(("expression", "why"), [
    ("tasks.train.metrics.loss < 0.1", 'Key not found in map : "loss"'),
    ("tasks.train.metrics.accuracy > 'high'", "No matching overloads"),
    ("tasks.train.metrics.accuracy", "gives 0.93 (double), not a bool"),
])
def test_evaluate_says_why_it_has_no_value(expression: str, why: str) -> None:
    tasks = {"train": {"status": "completed", "metrics": {"accuracy": 0.93}, "outputs": {}}}
    out = pipeline_when.evaluate(expression, tasks, {})
    assert out.value is None and out.error is not None and why in out.error


# ------------------------------------------------------------------------------- the graph


def test_the_tasks_a_when_reads_become_dependencies() -> None:
    p = pipeline(extra=[{**report(False), "dependsOn": None,
                         "when": "tasks.optimize.metrics.accuracy > tasks.train.metrics.x"}])
    assert dag.graph(p.spec)["report"] == ["optimize", "train"], "report names no fromTask"
    assert [t.name for t in dag.order(p.spec)] == ["preprocess", "train", "optimize", "report"]


def test_validate_names_task_and_expression() -> None:
    p = pipeline(tasks={"train": {"when": "tasks.train.metrics.a > 1"},
                        "optimize": {"when": "tasks.nope.status == 'completed' &&"}})
    assert dag.validate(p.spec) == [
        "task train: when 'tasks.train.metrics.a > 1' reads the task itself",
        "task optimize: when \"tasks.nope.status == 'completed' &&\": at 1:36: Syntax error: "
        "mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', "
        "'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        "task optimize: when \"tasks.nope.status == 'completed' &&\" names unknown task nope",
    ]


def test_an_invalid_when_fails_the_pipeline_before_anything_starts() -> None:
    p = pipeline(tasks={"optimize": {"when": "tasks.train.metrics.accuracy"}})
    out = plan_pipeline(p, {}, NOW)
    assert not out.invalid, "a metric's type is known only once it is there: evaluation tells"
    p = pipeline(tasks={"optimize": {"when": "'yes'"}})
    out = plan_pipeline(p, {}, NOW)
    assert out.invalid and out.create == [] and out.status.status == "failed"
    assert out.status.message == ("Invalid pipeline: task optimize: when \"'yes'\": gives a "
                                  "string, not a bool")


# ---------------------------------------------------------------------------- the planner


def test_when_true_starts_the_task() -> None:
    p = pipeline(tasks={"optimize": {"when": GATE}})
    children = {"preprocess": child(p, "preprocess", "completed"),
                "train": child(p, "train", "completed", metrics={"accuracy": 0.95})}
    out = plan_pipeline(p, children, NOW)
    assert [t.name for t in out.create] == ["optimize"]


def test_when_false_skips_the_task_and_the_pipeline_completes() -> None:
    p = pipeline(tasks={"optimize": {"when": GATE}})
    children = {"preprocess": child(p, "preprocess", "completed"),
                "train": child(p, "train", "completed", metrics={"accuracy": 0.5})}
    out = plan_pipeline(p, children, NOW)
    assert out.create == []
    assert entry(out, "optimize") == ("skipped", "WhenFalse", f"skipped: when {GATE!r} is false")
    st = out.status
    assert (st.status, st.progress, st.completed_tasks, st.skipped_tasks) == (
        "completed", "2/3 (1 skipped)", 2, 1)
    assert st.message == "2 of 3 tasks completed; optimize skipped"
    assert st.completion_time == NOW
    assert plan_pipeline(p, children, NOW).status.tasks == st.tasks, "level-based: same answer"


def test_a_when_waits_for_what_it_reads() -> None:
    p = pipeline(tasks={"optimize": {"when": GATE}})
    out = plan_pipeline(p, {"preprocess": child(p, "preprocess", "completed"),
                            "train": child(p, "train", "running")}, NOW)
    assert out.create == [] and entry(out, "optimize") == ("pending", None, "waiting for train")


def test_parameters_reach_the_expression_typed() -> None:
    def run(minimum: str) -> list[str]:
        p = pipeline(tasks={"optimize": {"when": "tasks.train.metrics.accuracy >= params.min"}},
                     parameters=[{"name": "min", "type": "float", "default": "0.5",
                                  "value": minimum}])
        children = {"preprocess": child(p, "preprocess", "completed"),
                    "train": child(p, "train", "completed", metrics={"accuracy": 0.8})}
        return [t.name for t in plan_pipeline(p, children, NOW).create]
    assert run("0.75") == ["optimize"]
    assert run("0.85") == []


def test_a_when_with_no_value_fails_the_pipeline_naming_task_expression_and_why() -> None:
    p = pipeline(tasks={"optimize": {"when": "tasks.train.metrics.loss < 0.1"}})
    children = {"preprocess": child(p, "preprocess", "completed"),
                "train": child(p, "train", "completed", metrics={"accuracy": 0.5})}
    out = plan_pipeline(p, children, NOW)
    assert out.create == []
    why = "when 'tasks.train.metrics.loss < 0.1' could not be evaluated: Key not found in " \
          'map : "loss"'
    assert entry(out, "optimize") == ("failed", "WhenError", why)
    assert out.status.status == "failed"
    assert out.status.message == f"Task optimize failed: {why}"
    failed = next(c for c in out.status.conditions or [] if c.type == "Failed")
    assert failed.reason == "WhenError"


def test_a_when_error_starts_nothing_more_but_lets_running_tasks_end() -> None:
    p = pipeline("parallel-training",
                 tasks={"train-mlp": {"when": "params.epochs > 'x'"}},
                 parameters=[{"name": "epochs", "type": "int", "default": "3"}])
    pre = child(p, "preprocess", "completed")
    out = plan_pipeline(p, {"preprocess": pre}, NOW)
    assert entry(out, "train-mlp")[:2] == ("failed", "WhenError")
    assert out.create == [], "a failed condition stops the pipeline like failFast"
    assert entry(out, "train-logreg")[2] == ("not started: the when of train-mlp could not be "
                                              "evaluated")
    assert out.status.status == "failed"


@pytest.mark.parametrize("from_optimize", [True, False], ids=["needs-its-output",
                                                              "depends-only-on-it"])
def test_what_depends_on_a_skipped_task_is_skipped(from_optimize: bool) -> None:
    p = pipeline(tasks={"optimize": {"when": GATE}}, extra=[report(from_optimize)])
    children = {"preprocess": child(p, "preprocess", "completed"),
                "train": child(p, "train", "completed", metrics={"accuracy": 0.5})}
    out = plan_pipeline(p, children, NOW)
    assert out.create == []
    state, reason, message = entry(out, "report")
    assert (state, reason) == ("skipped", "UpstreamSkipped")
    assert message == ("skipped: optimize was skipped and made no output" if from_optimize
                       else "skipped: optimize skipped")
    assert (out.status.status, out.status.progress) == ("completed", "2/4 (2 skipped)")


def test_a_task_that_also_depends_on_a_completed_task_still_runs() -> None:
    extra = {**report(False), "dependsOn": ["optimize", "train"]}
    p = pipeline(tasks={"optimize": {"when": GATE}}, extra=[extra])
    children = {"preprocess": child(p, "preprocess", "completed"),
                "train": child(p, "train", "completed", metrics={"accuracy": 0.5})}
    out = plan_pipeline(p, children, NOW)
    assert [t.name for t in out.create] == ["report"]
    assert entry(out, "optimize")[0] == "skipped"


# ---------------------------------------------------------------------- the failure policy


def test_ignore_skips_the_dependents_and_the_pipeline_completes() -> None:
    p = pipeline(tasks={"train": {"onFailure": "Ignore"}})
    children = {"preprocess": child(p, "preprocess", "completed"),
                "train": child(p, "train", "failed")}
    out = plan_pipeline(p, children, NOW)
    assert out.create == []
    assert entry(out, "train")[:2] == ("failed", "FailureIgnored")
    assert entry(out, "optimize") == ("skipped", "UpstreamFailed",
                                      "skipped: train failed (onFailure Ignore)")
    st = out.status
    assert (st.status, st.progress) == ("completed", "1/3 (1 skipped)")
    assert st.message == "1 of 3 tasks completed; optimize skipped; train failed (onFailure " \
                         "Ignore)"


def test_ignore_lets_the_other_branches_start() -> None:
    p = pipeline("parallel-training", tasks={"train-mlp": {"onFailure": "Ignore"}})
    pre = child(p, "preprocess", "completed")
    out = plan_pipeline(p, {"preprocess": pre, "train-mlp": child(p, "train-mlp", "failed")},
                        NOW)
    assert [t.name for t in out.create] == ["train-logreg"]
    assert out.status.status == "running"


def test_continue_lets_independent_branches_go_on_though_failfast_is_set() -> None:
    p = pipeline("parallel-training", failFast=True,
                 tasks={"train-mlp": {"onFailure": "Continue"}})
    pre = child(p, "preprocess", "completed")
    out = plan_pipeline(p, {"preprocess": pre, "train-mlp": child(p, "train-mlp", "failed")},
                        NOW)
    assert [t.name for t in out.create] == ["train-logreg"]
    assert "train-mlp failed, independent branches go on" in (out.status.message or "")
    done = plan_pipeline(p, {"preprocess": pre, "train-mlp": child(p, "train-mlp", "failed"),
                             "train-logreg": child(p, "train-logreg", "completed")}, NOW)
    assert done.status.status == "failed", "Continue: the pipeline still fails at the end"


def test_stop_on_one_task_overrides_failfast_false() -> None:
    p = pipeline("parallel-training", failFast=False,
                 tasks={"train-mlp": {"onFailure": "Stop"}})
    pre = child(p, "preprocess", "completed")
    out = plan_pipeline(p, {"preprocess": pre, "train-mlp": child(p, "train-mlp", "failed")},
                        NOW)
    assert out.create == []
    assert entry(out, "train-logreg")[2] == "not started: train-mlp failed (onFailure Stop)"
    assert out.status.status == "failed"


def test_unset_policy_follows_failfast() -> None:
    for fail_fast, created in ((True, []), (False, ["train-logreg"])):
        p = pipeline("parallel-training", failFast=fail_fast)
        pre = child(p, "preprocess", "completed")
        out = plan_pipeline(p, {"preprocess": pre,
                                "train-mlp": child(p, "train-mlp", "failed")}, NOW)
        assert [t.name for t in out.create] == created
