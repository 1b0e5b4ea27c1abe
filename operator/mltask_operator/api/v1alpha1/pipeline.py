"""The Pipeline kind: a DAG of ML tasks whose outputs feed later tasks, and its CEL rules."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema
from pydantic.config import JsonDict, JsonValue

from mltask_operator.api.v1alpha1.common import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_CONDITIONS,
    MAX_MESSAGE_LENGTH,
    MAX_STATUS_URI_LENGTH,
    Condition,
    LabelValue,
    LocalObjectReference,
    Model,
    Quantity,
    Resource,
    Time,
    Toleration,
    cel,
)
from mltask_operator.api.v1alpha1.mltask import (
    MAX_ANNOTATION_VALUE_LENGTH,
    MAX_DATA_VOLUMES,
    MAX_DURATION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_POD_LABELS,
    RUNTIME_RULES,
    CacheSpec,
    DataVolume,
    ExecuteStep,
    Phase,
    StorageSpec,
    TaskTemplate,
    archived_rule,
)

KIND = "Pipeline"
PLURAL = "pipelines"
SINGULAR = "pipeline"
SHORT_NAMES = ["mlp"]
MAX_TASKS = 32
#: Task names are short enough that `<pipeline>-<task>` stays a valid MLTask name.
MAX_TASK_NAME_LENGTH = 40
#: A task's message in the pipeline's status (its MLTask's message, cut).
MAX_TASK_MESSAGE_LENGTH = 4096


class PipelineDefaults(Model):
    """Settings every task inherits unless its own spec sets them."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": RUNTIME_RULES})

    storage: StorageSpec | None = Field(default=None, description="Object-store access for "
                                        "tasks without spec.storage.")
    node_selector: dict[str, LabelValue] | None = Field(
        default=None, description="Node labels for tasks without runtime.nodeSelector.",
        json_schema_extra={"maxProperties": 64})
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Tolerations for tasks without "
        "runtime.tolerations.")
    service_account_name: str | None = Field(
        default=None, max_length=253, description="ServiceAccount for tasks without "
        "runtime.serviceAccountName.")
    priority_class_name: str | None = Field(
        default=None, max_length=253, description="PriorityClass for tasks without "
        "runtime.priorityClassName.")
    cache: CacheSpec | None = Field(default=None, description="Reuse of identical finished "
                                    "work for tasks without spec.cache (off by default).")
    shared_memory_size: Quantity | None = Field(
        default=None, description="/dev/shm size for tasks without runtime.sharedMemorySize.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Image pull secrets ({name: ...}) for "
                         "tasks without runtime.imagePullSecrets.")
    volumes: list[DataVolume] | None = Field(
        default=None, max_length=MAX_DATA_VOLUMES, description="Read-only data volumes for "
        "tasks without runtime.volumes.",
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]})
    pod_labels: dict[str, LabelValue] | None = Field(
        default=None, description="Pod labels for tasks without runtime.podLabels (keys the "
        "task policy allows).", json_schema_extra={"maxProperties": MAX_POD_LABELS})
    pod_annotations: dict[str, Annotated[str, Field(
        max_length=MAX_ANNOTATION_VALUE_LENGTH)]] | None = Field(
        default=None, description="Pod annotations for tasks without runtime.podAnnotations "
        "(keys the task policy allows).", json_schema_extra={"maxProperties": MAX_POD_LABELS})
    scheduler_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="Scheduler for tasks without runtime.schedulerName.")
    runtime_class_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_SUBDOMAIN,
        description="RuntimeClass for tasks without runtime.runtimeClassName.")


class FailurePolicy(StrEnum):
    """What a task's failure does to the rest of its pipeline."""

    STOP = "Stop"            # no new task starts; the pipeline fails once the running ones end
    CONTINUE = "Continue"    # branches that do not depend on it go on; the pipeline fails
    IGNORE = "Ignore"        # its dependents are skipped; the pipeline may still complete


#: The longest `when` expression.
MAX_WHEN_LENGTH = 2048


class ParameterType(StrEnum):
    """How a parameter's value is written and checked, and what a condition sees."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"


MAX_PARAMETERS = 64
#: A parameter name is a CEL identifier, so a condition can say `params.learningRate`.
PARAMETER_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: How a value of each type is written (RE2, also Python's `re`). An int fits in 64 bits.
VALUE_PATTERNS = {
    ParameterType.INT: r"^[-+]?[0-9]{1,18}$",
    ParameterType.FLOAT: r"^[-+]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][-+]?[0-9]{1,2})?$",
    ParameterType.BOOL: r"^(true|false)$",
}
MAX_VALUE_LENGTH = 1024


def _fits(value: str) -> str:
    """CEL: the string `value` is written as a value of the parameter's type."""
    checks = " : ".join(f"self.type == '{t}' ? {value}.matches(r'{pattern}')"
                        for t, pattern in VALUE_PATTERNS.items())
    return f"({checks} : true)"


def _param_rule(rule: str, says: str, field: str) -> JsonDict:
    """A rule on one parameter whose message names it (`says` follows the name)."""
    return cel(rule, f"a parameter {says}", field_path=f".{field}", reason="FieldValueInvalid",
               message_expression=f"'parameter ' + self.name + ' {says}'")


_PARAMETER_RULES: list[JsonValue] = [
    # A CEL rule rather than a schema enum: the API server checks no rule of an object whose
    # schema it refused, and this one names the parameter.
    _param_rule(f"self.type in {[t.value for t in ParameterType]}",
                "has an unknown type: use string, int, float or bool", "type"),
    cel("has(self.value) || has(self.default)", "a parameter has no value and no default",
        reason="FieldValueRequired",
        message_expression="'parameter ' + self.name + ' has no value and no default'"),
    _param_rule(f"!has(self.default) || {_fits('self.default')}",
                "default is not written as a value of its type (int: 5, float: 0.01 or 1e-3, "
                "bool: true or false)", "default"),
    _param_rule(f"!has(self.value) || {_fits('self.value')}",
                "value is not written as a value of its type (int: 5, float: 0.01 or 1e-3, "
                "bool: true or false)", "value"),
    _param_rule(f"!has(self.enum) || self.enum.all(e, {_fits('e')})",
                "enum has an item not written as a value of its type", "enum"),
    _param_rule("!has(self.enum) || !has(self.default) || self.default in self.enum",
                "default is not one of its enum", "default"),
    _param_rule("!has(self.enum) || !has(self.value) || self.value in self.enum",
                "value is not one of its enum", "value"),
]


#: In the schema a string, not an enum: the CEL rule naming the parameter says what is wrong.
_TypeName = Annotated[ParameterType, WithJsonSchema({"type": "string", "maxLength": 16})]


class PipelineParameter(Model):
    """A typed input of the pipeline, referenced from its tasks' specs as $(params.NAME)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _PARAMETER_RULES})

    name: str = Field(min_length=1, max_length=63, pattern=PARAMETER_NAME,
                      description="Name, unique in the pipeline: letters, digits and _, not "
                      "starting with a digit. Tasks reference it as $(params.NAME).")
    type: _TypeName = Field(default=ParameterType.STRING,
                            description="string (default), int, float or bool: how the value "
                            "is written (int 5, float 0.01 or 1e-3, bool true or false) and "
                            "checked.")
    description: str | None = Field(default=None, max_length=1024,
                                    description="What the parameter sets.")
    default: str | None = Field(default=None, max_length=MAX_VALUE_LENGTH,
                                description="The value when value is not set, written as a "
                                "string (quoted in YAML: \"0.01\").")
    value: str | None = Field(default=None, max_length=MAX_VALUE_LENGTH,
                              description="This run's value (kubectl mltask run --param "
                              "NAME=VALUE sets it); the default if unset.")
    enum: list[str] | None = Field(
        default=None, min_length=1, max_length=64,
        description="The allowed values, as written; value and default must be one of them.",
        json_schema_extra={"x-kubernetes-list-type": "set",
                           "items": {"type": "string", "maxLength": 256}})


class PipelineTask(Model):
    """One node of the DAG: an MLTask spec, run once the tasks it depends on completed."""

    name: str = Field(min_length=1, max_length=MAX_TASK_NAME_LENGTH, pattern=DNS_LABEL,
                      description="Task name, unique in the pipeline; the child MLTask is "
                      "named <pipeline>-<task>.")
    depends_on: list[str] | None = Field(
        default=None, max_length=MAX_TASKS,
        description="Tasks that must complete first. A task whose input names another task "
        "(input.dataset.fromTask, input.model.fromTask) depends on it implicitly.",
        json_schema_extra={"x-kubernetes-list-type": "set",
                           "items": {"type": "string", "maxLength": MAX_TASK_NAME_LENGTH}})
    spec: TaskTemplate = Field(description="The MLTask spec. input.dataset.fromTask names the "
                               "preprocessing task whose dataset to use; input.model.fromTask "
                               "the training or optimization task whose model to use.")
    when: str | None = Field(
        default=None, min_length=1, max_length=MAX_WHEN_LENGTH,
        description="Run the task only if this CEL expression is true, evaluated once the "
        "tasks it depends on have finished, e.g. tasks.train.metrics.accuracy >= 0.9. It "
        "reads tasks.<name>.status, .metrics and .outputs of the tasks it names (they "
        "become dependencies) and params.<name>. False: the task is skipped, and so is every "
        "task that needs its output or depends on nothing else. An expression that cannot be "
        "evaluated (an unknown metric, a type error) fails the pipeline.")
    on_failure: FailurePolicy | None = Field(
        default=None, description="What the task's failure does: Stop (no new task starts, "
        "the pipeline fails), Continue (branches that do not depend on it go on, the "
        "pipeline fails) or Ignore (its dependents are skipped, the pipeline may still "
        "complete). Unset: Stop if spec.failFast (the default), Continue otherwise.")


_UNKNOWN_DEP = ("has(t.dependsOn) && t.dependsOn.exists(d, !self.tasks.exists(u, u.name == d))")
_SELF_DEP = "has(t.dependsOn) && t.dependsOn.exists(d, d == t.name)"
_SELF_INPUT = ("(has(t.spec.input.dataset.fromTask) && t.spec.input.dataset.fromTask == t.name) "
               "|| (has(t.spec.input.model) && has(t.spec.input.model.fromTask) && "
               "t.spec.input.model.fromTask == t.name)")
_BAD_DATASET_REF = ("has(t.spec.input.dataset.fromTask) && !self.tasks.exists(u, "
                    "u.name == t.spec.input.dataset.fromTask && u.spec.type == 'preprocessing')")
_BAD_MODEL_REF = ("has(t.spec.input.model) && has(t.spec.input.model.fromTask) && "
                  "!self.tasks.exists(u, u.name == t.spec.input.model.fromTask && "
                  "u.spec.type != 'preprocessing')")


def _each_task(bad: str, message: str, reason: str = "FieldValueInvalid") -> JsonDict:
    # A messageExpression naming the task would exceed the API server's CEL cost budget; the
    # operator's own check (dag.validate) names it if such a spec ever gets through.
    return cel(f"!self.tasks.exists(t, {bad})", message, field_path=".tasks", reason=reason)


_SPEC_RULES: list[JsonValue] = [
    _each_task(_UNKNOWN_DEP, "dependsOn names a task that is not in the pipeline"),
    _each_task(_SELF_DEP, "a task cannot depend on itself"),
    _each_task(_SELF_INPUT, "a task cannot take its input from itself (fromTask names the task)"),
    _each_task(_BAD_DATASET_REF, "input.dataset.fromTask must name a preprocessing task of "
               "the pipeline (the one that produces the dataset)"),
    _each_task(_BAD_MODEL_REF, "input.model.fromTask must name a training or optimization task "
               "of the pipeline (the one that produces the model)"),
    cel("self.tasks == oldSelf.tasks",
        "spec.tasks cannot change once the pipeline exists; create a new Pipeline instead",
        field_path=".tasks", reason="FieldValueForbidden"),
    cel("has(self.parameters) == has(oldSelf.parameters) && "
        "(!has(self.parameters) || self.parameters == oldSelf.parameters)",
        "spec.parameters cannot change once the pipeline exists; create a new Pipeline "
        "instead (kubectl mltask run -f FILE --param NAME=VALUE)", field_path=".parameters",
        reason="FieldValueForbidden"),
    cel("has(self.defaults) == has(oldSelf.defaults) && "
        "(!has(self.defaults) || self.defaults == oldSelf.defaults)",
        "spec.defaults cannot change once the pipeline exists", field_path=".defaults",
        reason="FieldValueForbidden"),
    cel("!has(oldSelf.retryGeneration) || "
        "(has(self.retryGeneration) && self.retryGeneration >= oldSelf.retryGeneration)",
        "spec.retryGeneration may only increase", field_path=".retryGeneration",
        reason="FieldValueInvalid"),
    archived_rule("pipeline"),
]


class PipelineSpec(Model):
    """Desired state of a Pipeline."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_RULES})

    description: str | None = Field(default=None, max_length=4096,
                                    description="Free-text description of the pipeline.")
    defaults: PipelineDefaults | None = Field(
        default=None, description="Settings every task inherits unless it sets its own.")
    parameters: list[PipelineParameter] | None = Field(
        default=None, max_length=MAX_PARAMETERS,
        description="Typed inputs of the pipeline. A task's config.parameters values, "
        "steps.*.args items and steps.*.env[].value may reference one as $(params.NAME), "
        "replaced by its value when the task's MLTask is created; $$(params.NAME) stands for "
        "a literal $(params.NAME).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    tasks: list[PipelineTask] = Field(
        min_length=1, max_length=MAX_TASKS, description="The tasks, in any order; dependsOn "
        "and fromTask define the DAG.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    fail_fast: bool = Field(default=True,
                            description="true (default): once a task fails no new task starts, "
                            "and the pipeline fails when the running ones end. false: branches "
                            "that do not depend on the failed task go on. A task's onFailure "
                            "overrides it.")
    concurrency: int | None = Field(default=None, ge=1, le=MAX_TASKS,
                                    description="At most this many tasks run at once; "
                                    "unlimited if unset.")
    suspend: bool = Field(default=False,
                          description="Stop the pipeline's running tasks and start no new ones "
                          "(true); continue them (back to false).")
    retry_generation: int = Field(default=0, ge=0,
                                  description="Increase by one to retry a failed or stopped "
                                  "pipeline: its failed and stopped tasks get a new attempt, "
                                  "completed tasks and their outputs are kept.")
    archived: bool = Field(default=False,
                           description="Archive the pipeline and its tasks (true): they keep "
                           "their status, outputs and metrics, release their Workflows, pods "
                           "and working volumes (running tasks are stopped first), are "
                           "labelled mltask.dev/archived and refuse retry and continue. false "
                           "unarchives them.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the pipeline and its tasks this many seconds "
        "after it completed or failed. Unset: the operator's default (chart value "
        "ttlSecondsAfterFinished), none unless set.")


# ------------------------------------------------------------------------------------ status


class TaskState(StrEnum):
    """A pipeline task's state: the MLTask's status, or pending before the MLTask exists."""

    PENDING = "pending"
    INIT = "init"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RETRY = "retry"
    SKIPPED = "skipped"


#: The states of a pipeline task at work: its MLTask's ACTIVE_PHASES.
ACTIVE_STATES = frozenset({TaskState.INIT, TaskState.RUNNING, TaskState.RETRY,
                           TaskState.STOPPING})


class PipelineTaskStatus(Model):
    """Summary of one task of the pipeline."""

    name: str = Field(description="Task name from spec.tasks.", max_length=MAX_TASK_NAME_LENGTH)
    mltask: str | None = Field(default=None, max_length=MAX_NAME_LENGTH,
                               description="Name of the child MLTask, once "
                               "created.")
    status: TaskState = Field(default=TaskState.PENDING,
                              description="pending (not created yet: waiting for its "
                              "dependencies), skipped (never created: its when was false, or "
                              "what it needs was skipped or failed with onFailure Ignore), or "
                              "the MLTask's status.")
    execute_step: ExecuteStep | None = Field(default=None, description="The MLTask's "
                                             "executeStep.")
    attempt: int | None = Field(default=None, ge=0, description="The MLTask's attempt.")
    message: str | None = Field(default=None, max_length=MAX_TASK_MESSAGE_LENGTH,
                                description="The MLTask's message (cut to "
                                f"{MAX_TASK_MESSAGE_LENGTH} characters), or why the "
                                "task waits.")
    output_uri: str | None = Field(default=None, max_length=MAX_STATUS_URI_LENGTH,
                                   description="URI of the dataset or model the "
                                   "task produced.")
    start_time: Time | None = Field(default=None, description="When the task started.")
    completion_time: Time | None = Field(default=None, description="When the task ended.")
    reason: str | None = Field(default=None, max_length=64, description="Why the task failed "
                               "without an MLTask: TaskNameTaken (an MLTask the pipeline does "
                               "not own has its name), TaskRejected (the API server refused "
                               "the MLTask; it stays failed until the pipeline is retried) or "
                               "WhenError (its when could not be evaluated). Why it was "
                               "skipped: WhenFalse, UpstreamSkipped or UpstreamFailed. Why its "
                               "failure did not fail the pipeline: FailureIgnored.")


class PipelineStatus(Model):
    """Observed state of a Pipeline. Written only by the operator."""

    status: Phase = Field(default=Phase.INIT, description="init, running, completed, failed, "
                          "stopping, stopped or retry.")
    message: str | None = Field(default=None, max_length=MAX_MESSAGE_LENGTH,
                                description="Human-readable summary.")
    progress: str | None = Field(default=None, max_length=64,
                                 description="Completed tasks / all tasks, "
                                 "e.g. 2/3, and the skipped ones: 1/3 (1 skipped).")
    completed_tasks: int = Field(default=0, ge=0, description="Number of completed tasks.")
    skipped_tasks: int | None = Field(default=None, ge=0, description="Number of skipped "
                                      "tasks, once one was skipped.")
    total_tasks: int = Field(default=0, ge=0, description="Number of tasks.")
    start_time: Time | None = Field(default=None, description="When the first task was "
                                    "created.")
    completion_time: Time | None = Field(default=None, description="When the pipeline "
                                         "completed, failed or stopped.")
    duration: str | None = Field(default=None, max_length=MAX_DURATION_LENGTH,
                                 description="Time from start to completion, or "
                                 "to the last status update while running.")
    tasks: list[PipelineTaskStatus] | None = Field(
        default=None, max_length=MAX_TASKS, description="One entry per task, in spec order.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    conditions: list[Condition] | None = Field(
        default=None, max_length=MAX_CONDITIONS,
        description="Succeeded, Running, Stopped, Failed and Ready conditions, "
        "and Archived once the pipeline was archived.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
    observed_generation: int | None = Field(default=None, description="The "
                                            ".metadata.generation the status reflects.")
    observed_retry_generation: int | None = Field(default=None, description="The "
                                                  "spec.retryGeneration last acted on.")
    retry_pending: list[str] | None = Field(
        default=None, max_length=MAX_TASKS, description="Failed or stopped tasks the last retry "
        "has yet to restart, in spec order: each gets its new attempt once spec.concurrency "
        "leaves room.",
        json_schema_extra={"items": {"type": "string", "maxLength": MAX_TASK_NAME_LENGTH}})


class Pipeline(Resource):
    """A DAG of MLTasks: preprocessing makes a dataset, training a model, optimization improves
    it; each task starts once the tasks it depends on completed."""

    kind: str = Field(default=KIND, description="Kind.")
    spec: PipelineSpec = Field(description="Desired state.")
    status: PipelineStatus | None = Field(default=None, description="Observed state.")


_LONG = f"size(self.metadata.name) + 1 + size(t.name) > {MAX_NAME_LENGTH}"
ROOT_RULES: list[JsonValue] = [
    cel(f"size(self.metadata.name) <= {MAX_NAME_LENGTH - 2}",
        f"metadata.name must be at most {MAX_NAME_LENGTH - 2} characters",
        reason="FieldValueInvalid"),
    cel(f"self.metadata.name.matches('{DNS_LABEL}')",
        "metadata.name must be a DNS label (lowercase letters, digits and '-')",
        reason="FieldValueInvalid"),
    cel(f"!self.spec.tasks.exists(t, {_LONG})",
        f"<pipeline>-<task> names the child MLTask and must be at most {MAX_NAME_LENGTH} "
        "characters: shorten the pipeline or task name", field_path=".spec.tasks",
        reason="FieldValueInvalid"),
]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Status", "type": "string", "jsonPath": ".status.status"},
    {"name": "Progress", "type": "string", "jsonPath": ".status.progress"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
]

SELECTABLE_FIELDS = [".status.status"]
