"""Prometheus metrics of the operator (served on the metrics port, see settings).

Named by Prometheus conventions (base units, `_total` counters, `_seconds`, `_bytes`) with
bounded labels: namespace, type, status, step, kind, cause, verb, resource, code, reason;
never a task's name. Events are counted where they happen; the gauges of what exists
(tasks, pipelines, volume bytes) are computed at each scrape from the operator's memory
(`mltask_operator.cache`), never from API calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

# `_created` series double every counter and histogram and say nothing a graph needs
disable_created_metrics()  # type: ignore[no-untyped-call]

TRANSITIONS = Counter("mltask_status_transitions_total",
                      "MLTask status transitions, by the status entered", ["status"])
WORKFLOWS_CREATED = Counter("mltask_workflows_created_total",
                            "Argo Workflows created, by the action that created them",
                            ["action"])
WORKFLOWS_REFUSED = Counter("mltask_workflows_refused_total",
                            "Task attempts that could not start: the Workflow or its working "
                            "volume refused by the API server, the name taken, or the spec "
                            "refused by the task policy, by reason (WorkflowRejected, "
                            "VolumeRejected, NameTaken, PolicyViolation)", ["reason"])
RECONCILE_ERRORS = Counter("mltask_reconcile_errors_total",
                           "Reconciles that raised, by kind", ["kind"])
RECONCILE_DURATION = Histogram("mltask_reconcile_duration_seconds",
                               "Time one reconcile took, API calls included, by kind",
                               ["kind"],
                               buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                        10))
PIPELINE_TRANSITIONS = Counter("mltask_pipeline_status_transitions_total",
                               "Pipeline status transitions, by the status entered", ["status"])
PIPELINE_TASKS_CREATED = Counter("mltask_pipeline_tasks_created_total",
                                 "Child MLTasks created by Pipelines")
LEADER = Gauge("mltask_operator_leader",
               "1 while this replica works (holds the Lease, or runs without leader election); "
               "0 while it stands by")

_LONG = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
TASK_DURATION = Histogram("mltask_task_duration_seconds",
                          "Time from an MLTask's start to its end, observed as it ends, by "
                          "type and the status it ended in (completed, failed, stopped)",
                          ["type", "status"], buckets=_LONG)
STEP_DURATION = Histogram("mltask_step_duration_seconds",
                          "Time a step's pod ran, from start to finish, by task type and "
                          "step (download, run, upload)", ["type", "step"], buckets=_LONG)
WORKFLOW_WAIT = Histogram("mltask_workflow_wait_seconds",
                          "Time from an MLTask's creation, or from when the upstream tasks it "
                          "reads (fromTask) completed if later, to its first Workflow, by type",
                          ["type"],
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600))
STEP_RETRIES = Counter("mltask_step_retries_total",
                       "Automatic retries of a step's pod, by task type, step and cause: "
                       "infrastructure (the pod was lost, evicted, preempted or errored) or "
                       "exit_code (the user's container exited non-zero)",
                       ["type", "step", "cause"])
TTL_DELETED = Counter("mltask_ttl_deleted_total",
                      "MLTasks and Pipelines deleted once their ttlSecondsAfterFinished passed, "
                      "by kind", ["kind"])
API_REQUESTS = Counter("mltask_api_requests_total",
                       "The operator's own API requests (not its watches), by verb, resource "
                       "and HTTP code", ["verb", "resource", "code"])
CACHE_LOOKUPS = Counter("mltask_cache_lookups_total",
                        "MLTasks with caching on (spec.cache) that would start, by result: hit "
                        "(a completed task's outputs reused, nothing run) or miss (it runs)",
                        ["result"])
QUEUE_DEPTH = Gauge("mltask_workqueue_depth", "Objects waiting for a reconcile worker")


def _known_series() -> None:
    """Every series of a closed label set starts at 0, so that rate() and increase() see its
    first event (a series that appears with its first event hides that event)."""
    from mltask_operator.api.v1alpha1.mltask import Phase, StepName, TaskType
    from mltask_operator.mltask_status import EXIT_CODE, INFRASTRUCTURE, REFUSED_REASONS

    types, steps = [str(t) for t in TaskType], [str(s) for s in StepName]
    for kind in ("MLTask", "Pipeline"):
        RECONCILE_ERRORS.labels(kind)
        RECONCILE_DURATION.labels(kind)
        TTL_DELETED.labels(kind)
    for reason in sorted(REFUSED_REASONS):
        WORKFLOWS_REFUSED.labels(reason)
    for result in ("hit", "miss"):
        CACHE_LOOKUPS.labels(result)
    for phase in Phase:
        TRANSITIONS.labels(str(phase))
        PIPELINE_TRANSITIONS.labels(str(phase))
    for type_ in types:
        WORKFLOW_WAIT.labels(type_)
        for ended in ("completed", "failed", "stopped"):
            TASK_DURATION.labels(type_, ended)
        for step in steps:
            STEP_DURATION.labels(type_, step)
            for cause in (INFRASTRUCTURE, EXIT_CODE):
                STEP_RETRIES.labels(type_, step, cause)


_known_series()


class StateCollector(Collector):
    """Gauges of what the watches delivered, computed at each scrape: tasks and pipelines by
    namespace, type and status, and the working-volume bytes the tasks hold."""

    def __init__(self, source: Callable[[], Iterable[Metric]]) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source()

    def describe(self) -> Iterable[Metric]:
        return []  # the families are only known at scrape time


def state_families(tasks: dict[tuple[str, str, str], int],
                   pipelines: dict[tuple[str, str], int],
                   volume_bytes: dict[str, int]) -> list[Metric]:
    """The gauge families from counts: (namespace, type, status) -> tasks, (namespace,
    status) -> pipelines, namespace -> bytes."""
    t = GaugeMetricFamily("mltask_tasks", "MLTasks by namespace, type and status",
                          labels=["namespace", "type", "status"])
    for (ns, type_, status), n in sorted(tasks.items()):
        t.add_metric([ns, type_, status], n)
    p = GaugeMetricFamily("mltask_pipelines", "Pipelines by namespace and status",
                          labels=["namespace", "status"])
    for (ns, status), n in sorted(pipelines.items()):
        p.add_metric([ns, status], n)
    v = GaugeMetricFamily("mltask_work_volume_bytes",
                          "Bytes requested by the working volumes MLTasks hold (not released), "
                          "by namespace", labels=["namespace"])
    for ns, n in sorted(volume_bytes.items()):
        v.add_metric([ns], n)
    return [t, p, v]


def register_state(source: Callable[[], Iterable[Metric]]) -> StateCollector:
    collector = StateCollector(source)
    REGISTRY.register(collector)
    return collector
