"""Label and annotation keys the operator puts on the objects it creates."""

from mltask_operator.api.v1alpha1.common import GROUP

TASK = f"{GROUP}/task"
ATTEMPT = f"{GROUP}/attempt"
TYPE = f"{GROUP}/type"
PIPELINE = f"{GROUP}/pipeline"
PIPELINE_TASK = f"{GROUP}/pipeline-task"
START_STEP = f"{GROUP}/start-step"
#: On archived MLTasks and Pipelines: `kubectl get mlt -l '!mltask.dev/archived'` hides them.
ARCHIVED = f"{GROUP}/archived"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "mltask-operator"
