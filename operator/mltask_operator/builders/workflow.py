"""Builds the Argo Workflow of one MLTask attempt, and the task's working volume claim.

The step-image contract (paths and environment variables every step sees) is defined here and
documented in README.md ("Step image contract").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mltask_operator import labels
from mltask_operator.api.v1alpha1.common import ResourceRequirements, quantity_value
from mltask_operator.api.v1alpha1.mltask import (
    PVC_SCHEME,
    STEP_ORDER,
    MLTask,
    RetryOn,
    StepName,
    StepSpec,
)
from mltask_operator.settings import (
    CleanupDefaults,
    RunStepDefaults,
    TaskDefaults,
    TransferDefaults,
)

WORKDIR = "/mltask"
INPUT_DIR = f"{WORKDIR}/input"
INPUT_DATASET_DIR = f"{INPUT_DIR}/dataset"
INPUT_MODEL_DIR = f"{INPUT_DIR}/model"
OUTPUT_DIR = f"{WORKDIR}/output"
META_DIR = f"{WORKDIR}/meta"
#: Where the run step keeps its checkpoints: on the working volume, which a task keeps across
#: Argo's retries of a pod, `continue` and `retry`, until it completes. The default
#: download step creates it, writable by the pods' group (WORK_GROUP).
CHECKPOINT_DIR = f"{WORKDIR}/checkpoints"
#: Where the run step writes its progress, N/M: Argo's self-reported progress file (its
#: ARGO_PROGRESS_FILE, on the pod's var-run-argo volume), which Argo's wait container reads and
#: reports into the Workflow's node, where the operator reads it (status.progress).
PROGRESS_FILE = "/var/run/argo/progress"
METRICS_FILE = f"{META_DIR}/metrics.json"
RESULT_FILE = f"{META_DIR}/result.json"
CONFIG_DIR = "/etc/mltask/config"
WORK_VOLUME = "work"
#: The metrics and result files live on a volume of each pod's own (emptyDir), not on the
#: working volume: a retried pod or a later attempt can never report an earlier one's files.
META_VOLUME = "meta"
CONFIG_VOLUME = "config"
#: The run step's memory-backed /dev/shm (spec.runtime.sharedMemorySize).
SHM_VOLUME = "dshm"
SHM_DIR = "/dev/shm"
#: Where the run step sees a pvc://CLAIM/PATH input's claim: INPUT_VOLUMES_DIR/<input>.
INPUT_VOLUMES_DIR = "/mltask-volumes"
#: The pod's volume of a spec.runtime.volumes entry is DATA_VOLUME_PREFIX + its name.
DATA_VOLUME_PREFIX = "data-"
METRICS_PARAM = "metrics"
RESULT_PARAM = "result"
#: A step may ask for `gpu: 1`; the operator writes the cluster's GPU resource name instead.
GPU_ALIAS = "gpu"
#: The group every step pod gets (`fsGroup`): the kubelet makes the working volume writable by
#: it, so the transfer steps (which run as this non-root user) and a run image of any user
#: share the volume's files.
WORK_GROUP = 65532
#: The transfer program of the project's image: `mltask-transfer download|upload`.
TRANSFER_COMMAND = "mltask-transfer"


def workflow_name(task_name: str, attempt: int) -> str:
    """Deterministic per attempt: a restarted operator can never create a duplicate."""
    return f"{task_name}-{attempt}"


def work_pvc_name(task_name: str) -> str:
    return f"{task_name}-work"


@dataclass(frozen=True)
class ResolvedInputs:
    """Input URIs after `fromTask` references were resolved to upstream outputs, with their
    sha256 where known (the spec's, or the upstream's status.outputs.sha256)."""

    dataset_uri: str
    model_uri: str | None = None
    dataset_sha256: str | None = None
    model_sha256: str | None = None


#: Placeholders of spec.output.uri, replaced by the run's name and uid: the Pipeline's for a
#: task of a Pipeline (each run of a Pipeline is a new object, `kubectl mltask run` makes one),
#: the MLTask's own otherwise, so every run can write to a place of its own.
RUN_NAME, RUN_UID = "$(run.name)", "$(run.uid)"


def run_identity(task: MLTask) -> tuple[str, str]:
    """(name, uid) of the run the task belongs to: its Pipeline (the owner named by
    spec.pipelineRef), else the task itself."""
    meta = task.metadata
    if task.spec.pipeline_ref:
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Pipeline" and ref.get("name") == task.spec.pipeline_ref.name:
                return str(ref["name"]), str(ref.get("uid") or ref["name"])
        return task.spec.pipeline_ref.name, task.spec.pipeline_ref.name
    return task.name, str(meta.get("uid") or task.name)


def output_uri(task: MLTask) -> str | None:
    """spec.output.uri with $(run.name) and $(run.uid) replaced (see run_identity)."""
    uri = task.spec.output.uri
    if not uri or "$(run." not in uri:
        return uri
    name, uid = run_identity(task)
    return uri.replace(RUN_NAME, name).replace(RUN_UID, uid)


def work_volume_bytes(task: MLTask) -> int | None:
    """The working volume's size in bytes: the bound of what the download step writes."""
    try:
        return int(quantity_value(task.spec.runtime.work_volume.size))
    except ValueError:
        return None


def task_labels(task: MLTask, attempt: int | None = None) -> dict[str, str]:
    """Labels tying children to the task. Never copies the task's own labels: Argo CD's
    tracking label (app.kubernetes.io/instance) on a child would get it pruned."""
    out = {
        labels.TASK: task.name,
        labels.TYPE: str(task.spec.type),
        labels.MANAGED_BY: labels.MANAGER,
    }
    if attempt is not None:
        out[labels.ATTEMPT] = str(attempt)
    if task.spec.pipeline_ref:
        out[labels.PIPELINE] = task.spec.pipeline_ref.name
    return out


def build_work_pvc(task: MLTask) -> dict[str, Any]:
    """The working volume, owned by the task (not a Workflow) so it outlives each attempt."""
    wv = task.spec.runtime.work_volume
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": str(wv.size)}},
    }
    if wv.storage_class_name:
        spec["storageClassName"] = wv.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": work_pvc_name(task.name),
            "namespace": task.namespace,
            "labels": task_labels(task),
            "ownerReferences": [task.owner_reference()],
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class InPlaceInput:
    """A pvc://CLAIM/PATH input: the run step mounts CLAIM read-only and reads PATH in place."""

    kind: str  # dataset, model
    claim: str
    path: str  # relative to the claim's root, "" for all of it

    @property
    def volume(self) -> str:
        return f"input-{self.kind}"

    @property
    def mount_path(self) -> str:
        return f"{INPUT_VOLUMES_DIR}/{self.kind}"

    @property
    def dir(self) -> str:
        """What $MLTASK_INPUT_<KIND>_DIR says in the run step: the path itself."""
        return f"{self.mount_path}/{self.path}".rstrip("/")


def in_place_input(kind: str, uri: str | None) -> InPlaceInput | None:
    """The input read in place, if `uri` is a pvc:// URI (the CRD checked its form)."""
    if not uri or not uri.startswith(PVC_SCHEME):
        return None
    claim, _, path = uri[len(PVC_SCHEME):].partition("/")
    return InPlaceInput(kind, claim, path.strip("/"))


def in_place_inputs(inputs: ResolvedInputs) -> list[InPlaceInput]:
    return [i for i in (in_place_input("dataset", inputs.dataset_uri),
                        in_place_input("model", inputs.model_uri)) if i]


def contract_env(task: MLTask, step: StepName, attempt: int,
                 inputs: ResolvedInputs) -> list[dict[str, Any]]:
    """The MLTASK_* variables every step sees (see README, "Step image contract")."""
    spec = task.spec
    env: dict[str, str | None] = {
        "MLTASK_NAME": task.name,
        "MLTASK_NAMESPACE": task.namespace,
        "MLTASK_TYPE": str(spec.type),
        "MLTASK_STEP": str(step),
        "MLTASK_ATTEMPT": str(attempt),
        "MLTASK_WORKDIR": WORKDIR,
        "MLTASK_INPUT_DIR": INPUT_DIR,
        "MLTASK_OUTPUT_DIR": OUTPUT_DIR,
        "MLTASK_METRICS_FILE": METRICS_FILE,
        "MLTASK_RESULT_FILE": RESULT_FILE,
        "MLTASK_CHECKPOINT_DIR": CHECKPOINT_DIR,
        "MLTASK_INPUT_DATASET_DIR": INPUT_DATASET_DIR,
        "MLTASK_INPUT_DATASET_URI": inputs.dataset_uri,
        "MLTASK_INPUT_DATASET_KIND": (str(spec.input.dataset.kind)
                                      if spec.input.dataset.kind else None),
        "MLTASK_INPUT_DATASET_UNPACK": "true" if spec.input.dataset.unpack else None,
        "MLTASK_INPUT_DATASET_SHA256": inputs.dataset_sha256,
        "MLTASK_INPUT_MODEL_DIR": INPUT_MODEL_DIR if spec.input.model else None,
        "MLTASK_INPUT_MODEL_URI": inputs.model_uri,
        "MLTASK_INPUT_MODEL_UNPACK": ("true" if spec.input.model and spec.input.model.unpack
                                      else None),
        "MLTASK_INPUT_MODEL_SHA256": inputs.model_sha256 if inputs.model_uri else None,
        "MLTASK_OUTPUT_URI": output_uri(task),
        "MLTASK_PARAMETERS": json.dumps((spec.config.parameters if spec.config else None) or {},
                                        sort_keys=True),
    }
    if step == StepName.RUN:
        env["MLTASK_PROGRESS_FILE"] = PROGRESS_FILE
        # a pvc:// input is read where it is: its folder variable names the path in place
        for item in in_place_inputs(inputs):
            env[f"MLTASK_INPUT_{item.kind.upper()}_DIR"] = item.dir
    if step == StepName.DOWNLOAD:
        bound = work_volume_bytes(task)
        env["MLTASK_DOWNLOAD_MAX_BYTES"] = str(bound) if bound else None
        env["MLTASK_UNPACK_MAX_BYTES"] = str(bound) if bound else None
    if spec.config and spec.config.config_map_ref:
        env["MLTASK_CONFIG_DIR"] = CONFIG_DIR
    if spec.output.dataset:
        ds = spec.output.dataset
        env.update({
            "MLTASK_OUTPUT_KIND": "dataset",
            "MLTASK_OUTPUT_NAME": ds.name,
            "MLTASK_OUTPUT_TYPE": str(ds.type),
            "MLTASK_OUTPUT_FILE_EXTENSION": ds.file_extension,
        })
    if spec.output.model:
        m = spec.output.model
        env.update({
            "MLTASK_OUTPUT_KIND": "model",
            "MLTASK_OUTPUT_NAME": m.name,
            "MLTASK_OUTPUT_TYPE": m.type,
            "MLTASK_OUTPUT_INPUT_FORMAT": m.input_format,
            "MLTASK_OUTPUT_FORMAT": m.output_format,
            "MLTASK_OUTPUT_FILE_EXTENSION": m.file_extension,
        })
    if spec.storage and step != StepName.RUN:
        env["MLTASK_STORAGE_ENDPOINT"] = spec.storage.endpoint
        env["MLTASK_STORAGE_SECRET"] = spec.storage.secret_ref.name  # named in error messages
    return [{"name": k, "value": v} for k, v in env.items() if v is not None]


def _resources(step_spec: StepSpec, gpu_resource: str) -> dict[str, dict[str, str]] | None:
    if not step_spec.resources:
        return None
    out: dict[str, dict[str, str]] = {}
    for kind, values in step_spec.resources.to_k8s().items():
        out[kind] = {(gpu_resource if name == GPU_ALIAS else name): str(v)
                     for name, v in values.items()}
    return out


def requests_gpu(step_spec: StepSpec, defaults: RunStepDefaults) -> bool:
    """Whether the step asks for a GPU: the `gpu` alias, the GPU resource, or a resource named
    by one of the GPU prefixes (e.g. a MIG slice, nvidia.com/mig-1g.10gb)."""
    res = _resources(step_spec, defaults.gpu_resource_name) or {}
    return any(str(v) not in ("0", "") for kind in res.values()
               for name, v in kind.items() if defaults.is_gpu(name))


def shared_memory_size(task: MLTask, task_defaults: TaskDefaults) -> str | None:
    """The run step's /dev/shm size: the task's own, else the operator's default."""
    own = task.spec.runtime.shared_memory_size
    return str(own) if own is not None else task_defaults.shared_memory_size


def _run_mounts(task: MLTask, inputs: ResolvedInputs, shm: str | None) -> list[dict[str, Any]]:
    """The run step's own mounts: /dev/shm, its data volumes and pvc:// inputs (read-only)."""
    out: list[dict[str, Any]] = []
    if shm:
        out.append({"name": SHM_VOLUME, "mountPath": SHM_DIR})
    for v in task.spec.runtime.volumes or []:
        mount = {"name": DATA_VOLUME_PREFIX + v.name, "mountPath": v.mount_path,
                 "readOnly": True}
        if v.sub_path:
            mount["subPath"] = v.sub_path
        out.append(mount)
    for item in in_place_inputs(inputs):
        out.append({"name": item.volume, "mountPath": item.mount_path, "readOnly": True})
    return out


def _run_volumes(task: MLTask, inputs: ResolvedInputs, shm: str | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if shm:
        out.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
    for v in task.spec.runtime.volumes or []:
        out.append({"name": DATA_VOLUME_PREFIX + v.name, "persistentVolumeClaim": {
            "claimName": v.claim_name, "readOnly": True}})
    for item in in_place_inputs(inputs):
        out.append({"name": item.volume, "persistentVolumeClaim": {
            "claimName": item.claim, "readOnly": True}})
    return out


def _container(task: MLTask, step: StepName, step_spec: StepSpec, attempt: int,
               inputs: ResolvedInputs, gpu_resource: str,
               shm: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"image": step_spec.image}
    if step_spec.command:
        container["command"] = list(step_spec.command)
    if step_spec.args:
        container["args"] = list(step_spec.args)
    if step_spec.image_pull_policy:
        container["imagePullPolicy"] = step_spec.image_pull_policy
    env = contract_env(task, step, attempt, inputs)
    env += [e.to_k8s() for e in step_spec.env or []]
    container["env"] = env
    # Credentials reach only the steps that move data, never the user's run step.
    if task.spec.storage and step != StepName.RUN:
        container["envFrom"] = [{"secretRef": {"name": task.spec.storage.secret_ref.name}}]
    resources = _resources(step_spec, gpu_resource)
    if resources:
        container["resources"] = resources
    mounts: list[dict[str, Any]] = [{"name": WORK_VOLUME, "mountPath": WORKDIR},
              {"name": META_VOLUME, "mountPath": META_DIR}]
    if task.spec.config and task.spec.config.config_map_ref:
        mounts.append({"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True})
    if step == StepName.RUN:
        mounts += _run_mounts(task, inputs, shm)
    container["volumeMounts"] = mounts
    # When the step fails, the kubelet keeps its log's last lines (80 lines, 2 KiB at most) as
    # the container's termination message; Argo copies it into the node's message and the
    # operator into status.steps[].logTail, so the reason outlives the pod.
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def transfer_step(step: StepName, transfer: TransferDefaults) -> StepSpec:
    """The project's own download or upload step (`mltask-transfer`), for a task without one."""
    return StepSpec(
        image=transfer.image,
        command=[TRANSFER_COMMAND, "download" if step == StepName.DOWNLOAD else "upload"],
        image_pull_policy=transfer.image_pull_policy,
        resources=ResourceRequirements.model_validate(transfer.resources),
    )


# Pod Security: every pod the operator makes passes the `restricted` profile unless the task
# asks otherwise (steps.<step>.securityContext). The pod runs as non-root with the runtime's
# default seccomp profile; every container, Argo's init and wait included, drops all
# capabilities and cannot escalate.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
    "fsGroup": WORK_GROUP,
    "fsGroupChangePolicy": "OnRootMismatch",
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
#: The transfer steps run as the image's non-root user with nothing they do not need.
TRANSFER_SECURITY_CONTEXT: dict[str, Any] = {
    **CONTAINER_SECURITY_CONTEXT,
    "runAsNonRoot": True,
    "runAsUser": WORK_GROUP,
    "runAsGroup": WORK_GROUP,
}
#: Argo's init and wait containers as Argo itself locks them down (common.MinimalCtrSC: its
#: image's user 8737), patched in by name so the Workflow passes `restricted` whatever the
#: workflow-controller's executor settings say; the root filesystem stays writable, as Argo
#: leaves it for these two (argoproj/argo-workflows#10787).
ARGO_EXECUTOR_UID = 8737
EXECUTOR_SECURITY_CONTEXT: dict[str, Any] = {
    **CONTAINER_SECURITY_CONTEXT,
    "privileged": False,
    "runAsNonRoot": True,
    "runAsUser": ARGO_EXECUTOR_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
EXECUTOR_PATCH = json.dumps({
    "initContainers": [{"name": "init", "securityContext": EXECUTOR_SECURITY_CONTEXT}],
    "containers": [{"name": "wait", "securityContext": EXECUTOR_SECURITY_CONTEXT}],
}, sort_keys=True)


def security_context(step_spec: StepSpec, defaulted: bool) -> dict[str, Any]:
    """The container's securityContext: the restricted defaults, then what the step asks."""
    out: dict[str, Any] = json.loads(json.dumps(TRANSFER_SECURITY_CONTEXT if defaulted
                                                else CONTAINER_SECURITY_CONTEXT))
    own = step_spec.security_context
    if own is None:
        return out
    asked = own.to_k8s()
    added = asked.pop("capabilities", {}).get("add")
    out.update(asked)
    if added:
        out["capabilities"]["add"] = list(added)
    if own.run_as_user == 0 and own.run_as_non_root is None:
        out["runAsNonRoot"] = False  # the pod's runAsNonRoot would refuse root
    if own.privileged and own.allow_privilege_escalation is None:
        out["allowPrivilegeEscalation"] = True  # the API server refuses privileged without
    return out


#: What the kubelet and scheduler write on a pod the infrastructure took away while its node
#: kept running: eviction under node pressure, graceful node shutdown (how GPU spot and
#: preemptible nodes are reclaimed), preemption, and admission refusal (e.g. the GPU device
#: plugin lost its devices). Argo marks such pods Failed, not Error, since they carry a message.
INFRASTRUCTURE_FAILURE = ("(?i)(evict|low on resource|node shutdown|preempt|pod was rejected"
                          "|didn't have enough resource)")
#: OnError in the task's sense: Argo's errors (pod deleted, node lost, init or wait container
#: failed) and the infrastructure failures above, never the user's own non-zero exit.
ON_INFRASTRUCTURE_ERROR = (
    f'lastRetry.status == "Error" || (lastRetry.status == "Failed"'
    f' && lastRetry.message matches "{INFRASTRUCTURE_FAILURE}")')


def _retry_strategy(task: MLTask) -> dict[str, Any] | None:
    """Argo's retryStrategy for every step. `OnError` goes beyond Argo's own OnError (which
    retries only Error nodes) so that evicted and shut-down pods are retried too."""
    policy = task.spec.runtime.retry_policy
    if policy.limit == 0:
        return None
    strategy: dict[str, Any] = {"limit": policy.limit, "retryPolicy": str(policy.retry_on)}
    if policy.retry_on == RetryOn.ON_ERROR:
        strategy.update(retryPolicy=str(RetryOn.ALWAYS), expression=ON_INFRASTRUCTURE_ERROR)
    return {
        **strategy,
        "backoff": {
            "duration": policy.backoff.duration,
            "factor": policy.backoff.factor,
            "maxDuration": policy.backoff.max_duration,
        },
    }


def _gpu_placement(task: MLTask, defaults: RunStepDefaults) -> dict[str, Any]:
    """Template fields that put a GPU run step where the cluster's GPU policy says."""
    out: dict[str, Any] = {}
    runtime = task.spec.runtime
    if defaults.node_selector:
        out["nodeSelector"] = {**defaults.node_selector, **(runtime.node_selector or {})}
    if defaults.tolerations:
        own = [t.to_k8s() for t in runtime.tolerations or []]
        out["tolerations"] = own + [t for t in defaults.tolerations if t not in own]
    return out


def run_runtime_class(task: MLTask, gpu: bool, defaults: RunStepDefaults,
                      task_defaults: TaskDefaults) -> str | None:
    """The run step's RuntimeClass: the task's own, else the GPU default for a GPU run step,
    else the operator's default for every task."""
    return (task.spec.runtime.runtime_class_name
            or (defaults.runtime_class_name if gpu else None)
            or task_defaults.runtime_class_name)


def image_pull_secrets(task: MLTask, task_defaults: TaskDefaults) -> list[str]:
    """The operator's default pull secrets, then the task's own, each once."""
    out: list[str] = []
    for name in (*task_defaults.image_pull_secrets,
                 *(ref.name for ref in task.spec.runtime.image_pull_secrets or [])):
        if name not in out:
            out.append(name)
    return out


def pod_metadata(task: MLTask, child_labels: dict[str, str]) -> dict[str, Any]:
    """Every step pod's labels and annotations: the task's (runtime.podLabels, podAnnotations,
    keys the task policy allowed), then the operator's own, which always win."""
    runtime = task.spec.runtime
    out: dict[str, Any] = {"labels": {**(runtime.pod_labels or {}), **child_labels}}
    if runtime.pod_annotations:
        out["annotations"] = dict(runtime.pod_annotations)
    return out


def pod_gc(task: MLTask, cleanup: CleanupDefaults) -> str:
    """The task's podGC strategy: its own (spec.cleanup.podGC), else the operator's default."""
    own = task.spec.cleanup.pod_gc if task.spec.cleanup else None
    return str(own or cleanup.pod_gc)


def build_workflow(task: MLTask, *, attempt: int, start_at: StepName,
                   inputs: ResolvedInputs,
                   defaults: RunStepDefaults | None = None,
                   transfer: TransferDefaults | None = None,
                   cleanup: CleanupDefaults | None = None,
                   task_defaults: TaskDefaults | None = None) -> dict[str, Any]:
    """The Argo Workflow for `attempt`, running the steps from `start_at` on.

    A DAG (not a `steps` template): every field is validated by Argo's full CRD schema.
    `defaults` is the cluster's policy for run steps that request GPUs, `transfer` the
    project's download and upload steps for tasks that leave them out, `cleanup` the default
    podGC strategy, `task_defaults` the pod settings of tasks that set none (operator
    settings).
    """
    defaults = defaults or RunStepDefaults()
    transfer = transfer or TransferDefaults()
    cleanup = cleanup or CleanupDefaults()
    task_defaults = task_defaults or TaskDefaults()
    shm = shared_memory_size(task, task_defaults)
    gpu = defaults.gpu_resource_name
    steps = STEP_ORDER[STEP_ORDER.index(start_at):]
    own = task.spec.steps
    step_specs = {
        StepName.DOWNLOAD: own.download or transfer_step(StepName.DOWNLOAD, transfer),
        StepName.RUN: own.run,
        StepName.UPLOAD: own.upload or transfer_step(StepName.UPLOAD, transfer),
    }
    defaulted = {StepName.DOWNLOAD: own.download is None, StepName.UPLOAD: own.upload is None}
    retry = _retry_strategy(task)
    dag_tasks: list[dict[str, Any]] = []
    templates: list[dict[str, Any]] = [{"name": "main", "dag": {"tasks": dag_tasks}}]
    previous: StepName | None = None
    for step in steps:
        dag_task: dict[str, Any] = {"name": str(step), "template": str(step)}
        if previous is not None:
            dag_task["depends"] = f"{previous}.Succeeded"
        dag_tasks.append(dag_task)
        previous = step
        template: dict[str, Any] = {
            "name": str(step),
            "container": _container(task, step, step_specs[step], attempt, inputs, gpu, shm),
        }
        template["container"]["securityContext"] = security_context(
            step_specs[step], bool(defaulted.get(step)))
        if defaulted.get(step) and transfer.service_account_name:
            # The project's own transfer steps run as their own ServiceAccount (Argo's
            # per-template serviceAccountName; its wait container writes the step's result
            # with that account's token): a cloud storage role bound to it (IRSA, workload
            # identity) never reaches the run step, which runs as the Workflow's.
            template["serviceAccountName"] = transfer.service_account_name
        if step == StepName.RUN:
            on_gpu = requests_gpu(step_specs[step], defaults)
            if on_gpu:
                template.update(_gpu_placement(task, defaults))
            runtime_class = run_runtime_class(task, on_gpu, defaults, task_defaults)
            if runtime_class:
                # Argo has no runtimeClassName field: the run step's pod gets it by a patch
                template["podSpecPatch"] = json.dumps({"runtimeClassName": runtime_class})
        if retry:
            template["retryStrategy"] = retry
        if step == StepName.RUN:
            template["outputs"] = {"parameters": [{
                "name": METRICS_PARAM,
                "valueFrom": {"path": METRICS_FILE, "default": "{}"},
            }]}
        if step == StepName.UPLOAD:
            template["outputs"] = {"parameters": [{
                "name": RESULT_PARAM, "valueFrom": {"path": RESULT_FILE},
            }]}
        templates.append(template)

    volumes: list[dict[str, Any]] = [
        {"name": WORK_VOLUME, "persistentVolumeClaim": {"claimName": work_pvc_name(task.name)}},
        {"name": META_VOLUME, "emptyDir": {"sizeLimit": "16Mi"}},
    ]
    if task.spec.config and task.spec.config.config_map_ref:
        volumes.append({"name": CONFIG_VOLUME,
                        "configMap": {"name": task.spec.config.config_map_ref.name}})
    if StepName.RUN in steps:
        volumes += _run_volumes(task, inputs, shm)

    runtime = task.spec.runtime
    child_labels = task_labels(task, attempt)
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "templates": templates,
        "volumes": volumes,
        "podMetadata": pod_metadata(task, child_labels),
        "securityContext": dict(POD_SECURITY_CONTEXT),
        "podSpecPatch": EXECUTOR_PATCH,
    }
    if runtime.service_account_name:
        spec["serviceAccountName"] = runtime.service_account_name
    secrets = image_pull_secrets(task, task_defaults)
    if secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in secrets]
    scheduler = runtime.scheduler_name or task_defaults.scheduler_name
    if scheduler:
        spec["schedulerName"] = scheduler
    if runtime.node_selector:
        spec["nodeSelector"] = dict(runtime.node_selector)
    if runtime.tolerations:
        spec["tolerations"] = [t.to_k8s() for t in runtime.tolerations]
    if runtime.affinity:
        spec["affinity"] = runtime.affinity.to_k8s()
    if runtime.priority_class_name:
        spec["podPriorityClassName"] = runtime.priority_class_name
    if runtime.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = runtime.active_deadline_seconds
    strategy = pod_gc(task, cleanup)
    if strategy != "Never":
        spec["podGC"] = {"strategy": strategy}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": workflow_name(task.name, attempt),
            "namespace": task.namespace,
            "labels": child_labels,
            "annotations": {labels.START_STEP: str(start_at)},
            "ownerReferences": [task.owner_reference()],
        },
        "spec": spec,
    }
