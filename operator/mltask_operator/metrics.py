"""Prometheus metrics of the operator (served on the metrics port, see settings)."""

from prometheus_client import Counter, Gauge

TRANSITIONS = Counter("mltask_status_transitions_total",
                      "MLTask status transitions, by the status entered", ["status"])
WORKFLOWS_CREATED = Counter("mltask_workflows_created_total",
                            "Argo Workflows created, by the action that created them",
                            ["action"])
RECONCILE_ERRORS = Counter("mltask_reconcile_errors_total",
                           "Reconciles that raised, by kind", ["kind"])
PIPELINE_TRANSITIONS = Counter("mltask_pipeline_status_transitions_total",
                               "Pipeline status transitions, by the status entered", ["status"])
PIPELINE_TASKS_CREATED = Counter("mltask_pipeline_tasks_created_total",
                                 "Child MLTasks created by Pipelines")
LEADER = Gauge("mltask_operator_leader",
               "1 while this replica works (holds the Lease, or runs without leader election); "
               "0 while it stands by")
