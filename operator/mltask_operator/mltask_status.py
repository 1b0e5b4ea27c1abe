"""Pure: (MLTask, its current attempt's Workflow) -> MLTask status, with conditions and outputs.

Argo's Workflow status is read the way Argo writes it: `status.phase`, and `status.nodes` with
one Pod node per step (under a Retry node when the template has a retryStrategy).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from mltask_operator.api.v1alpha1.common import (
    MAX_MESSAGE_LENGTH,
    MAX_OBJECT_NAME_LENGTH,
    MAX_STATUS_URI_LENGTH,
)
from mltask_operator.api.v1alpha1.mltask import (
    ACTIVE_PHASES,
    EXECUTE_STEP_OF,
    MAX_LOG_TAIL_LENGTH,
    MAX_METRIC_NAME_LENGTH,
    MAX_METRICS,
    MAX_PHASE_LENGTH,
    STEP_ORDER,
    TERMINAL_PHASES,
    ExecuteStep,
    MLTask,
    MLTaskStatus,
    OutputStatus,
    Phase,
    StepName,
    StepStatus,
)
from mltask_operator.builders.workflow import INFRASTRUCTURE_FAILURE, METRICS_PARAM, RESULT_PARAM
from mltask_operator.mltask_state_machine import advance
from mltask_operator.status_common import (
    bounded,
    conditions_for,
    format_duration,
    parse_time,
    set_condition,
)

SUCCEEDED, FAILED, ERROR, RUNNING, PENDING = "Succeeded", "Failed", "Error", "Running", "Pending"
DONE_PHASES = {SUCCEEDED, "Skipped", "Omitted"}
FINISHED_NODE_PHASES = {SUCCEEDED, FAILED, ERROR, "Skipped", "Omitted"}
#: Why an attempt could not start (its condition reason): nothing of it was made, so a first
#: attempt refused this way made no working volume either.
REFUSED_REASONS = frozenset({"WorkflowRejected", "VolumeRejected", "NameTaken",
                             "PolicyViolation"})


def holds_volume(attempt: int, volume_released: bool, failed_reason: str | None) -> bool:
    """Whether a task holds its working volume: its first attempt made it (unless refused
    before), and it was not released since (a new attempt makes it again)."""
    if attempt == 0 or volume_released:
        return False
    return not (attempt == 1 and failed_reason in REFUSED_REASONS)


def fnv32a(data: str) -> int:
    h = 0x811C9DC5
    for byte in data.encode():
        h ^= byte
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def pod_name(workflow: str, node_name: str, template: str) -> str:
    """Argo's pod name for a node (POD_NAMES=v2, Argo's default since v3.4)."""
    prefix = f"{workflow}-{template}"
    if len(prefix) > 253 - 10 - 1:
        prefix = prefix[: 253 - 10 - 1]
    return f"{prefix}-{fnv32a(node_name)}"


@dataclass
class StepObservation:
    name: StepName
    phase: str
    pod: str | None = None
    node_id: str | None = None
    retries: int = 0
    latest_pod_phase: str | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    message: str | None = None
    exit_code: int | None = None
    log_tail: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    progress: str | None = None  # the latest pod's, as Argo reports it (N/M)
    superseded: list[str] = field(default_factory=list)  # pods of earlier automatic retries
    retry_causes: list[str] = field(default_factory=list)  # why each of them was retried


@dataclass
class WorkflowObservation:
    name: str
    phase: str
    message: str | None
    shutdown: str | None
    started_at: datetime.datetime | None
    finished_at: datetime.datetime | None
    steps: dict[StepName, StepObservation]


def _params(node: dict[str, Any]) -> dict[str, str]:
    params = (node.get("outputs") or {}).get("parameters") or []
    return {p["name"]: p.get("value", "") for p in params if "name" in p}


def _exit_code(node: dict[str, Any]) -> int | None:
    code = (node.get("outputs") or {}).get("exitCode")
    try:
        return int(code) if code is not None else None
    except ValueError:
        return None


_RETRY_SUFFIX = re.compile(r"\((\d+)\)$")
#: Argo's message for a failed main container: "<reason> (exit code N): <termination message>".
_TERMINATION = re.compile(r"^(?P<head>[^\n]*?\(exit code -?\d+\)): (?P<tail>.+)$", re.S)
LOG_TAIL_LINES, LOG_TAIL_BYTES = 20, 2048
#: What Argo's emissary (the main container's entrypoint) adds to the container's log: its
#: own log lines (logrus, marked argo=true) and, after a failed command, "Error: exit status N".
#: They say nothing the exit code does not, so the log tail leaves them out.
_EMISSARY_LINE = re.compile(r'^(time="[^"]*" level=\w+ .*\bargo=true\b.*'
                            r"|Error: (exit status -?\d+|signal: [\w ]+))$")


def split_termination(message: str | None) -> tuple[str | None, str | None]:
    """Argo's node message -> (the message without it, the container's last log lines).

    With `terminationMessagePolicy: FallbackToLogsOnError` the kubelet makes a failed
    container's last log lines its termination message, and Argo appends that to the node's
    message. Kept bounded: the last LOG_TAIL_LINES lines, at most LOG_TAIL_BYTES bytes."""
    m = _TERMINATION.match(message or "")
    if not m:
        return message, None
    lines = [line for line in m.group("tail").rstrip("\n").splitlines()
             if not _EMISSARY_LINE.match(line.strip())][-LOG_TAIL_LINES:]
    tail = "\n".join(lines).encode()[-LOG_TAIL_BYTES:].decode(errors="ignore")
    return m.group("head"), tail.strip("\n") or None


_ERROR_WORDS = re.compile(r"(?i)\b(error|exception|failed|fatal)\b")


def last_line(text: str | None) -> str | None:
    """The line of a log tail that says why the step failed: the last one naming an error (a
    program's stdout and stderr reach the log through separate pipes, so its error line may
    come before a progress line it printed just before), else the last non-blank one."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if _ERROR_WORDS.search(line)]
    return (errors or lines)[-1] if lines else None


def _retry_index(node: dict[str, Any]) -> tuple[int, str]:
    """Order a step's pods as Argo made them: `<step>(0)`, `<step>(1)`, ... (`(10)` after `(9)`)."""
    m = _RETRY_SUFFIX.search(node.get("name", ""))
    return (int(m.group(1)) if m else -1, node.get("startedAt") or "")


_INFRASTRUCTURE = re.compile(INFRASTRUCTURE_FAILURE)
INFRASTRUCTURE, EXIT_CODE = "infrastructure", "exit_code"


def retry_cause(pod_node: dict[str, Any]) -> str:
    """Why a pod was retried: the infrastructure took it (Argo's Error: deleted, node lost;
    or a Failed pod evicted, preempted or shut down) or the user's container exited
    non-zero."""
    if pod_node.get("phase") == ERROR:
        return INFRASTRUCTURE
    if _INFRASTRUCTURE.search(pod_node.get("message") or ""):
        return INFRASTRUCTURE
    return EXIT_CODE


def observe_workflow(wf: dict[str, Any]) -> WorkflowObservation:
    """Reduce a Workflow to what the task status needs: its phase and each step's latest pod."""
    name = wf["metadata"]["name"]
    status = wf.get("status") or {}
    nodes: dict[str, dict[str, Any]] = status.get("nodes") or {}
    steps: dict[StepName, StepObservation] = {}
    for step in STEP_ORDER:
        retry_node = next((n for n in nodes.values()
                           if n.get("type") == "Retry" and n.get("templateName") == step), None)
        pods = [n for n in nodes.values()
                if n.get("type") == "Pod" and n.get("templateName") == step]
        if retry_node is None and not pods:
            continue
        pods.sort(key=_retry_index)
        latest = pods[-1] if pods else None
        main = retry_node or latest
        assert main is not None
        message, log_tail = split_termination(
            (latest or main).get("message") or main.get("message"))
        obs = StepObservation(
            name=step,
            phase=main.get("phase") or PENDING,
            node_id=main.get("id"),
            retries=max(len(pods) - 1, 0),
            latest_pod_phase=latest.get("phase") if latest else None,
            started_at=parse_time(main.get("startedAt")),
            finished_at=parse_time(main.get("finishedAt")),
            message=message,
            log_tail=log_tail,
            outputs=_params(main) or (_params(latest) if latest else {}),
        )
        if latest is not None:
            obs.pod = pod_name(name, latest["name"], step)
            obs.exit_code = _exit_code(latest)
            obs.progress = latest.get("progress")
            obs.superseded = [pod_name(name, n["name"], step) for n in pods[:-1]]
            obs.retry_causes = [retry_cause(n) for n in pods[:-1]]
        steps[step] = obs
    return WorkflowObservation(
        name=name,
        phase=status.get("phase") or "",
        message=status.get("message"),
        shutdown=(wf.get("spec") or {}).get("shutdown"),
        started_at=parse_time(status.get("startedAt")),
        finished_at=parse_time(status.get("finishedAt")),
        steps=steps,
    )


def _step_status(obs: StepObservation, attempt: int) -> StepStatus:
    # bounded as the schema bounds them: what Argo wrote is copied, never refused
    return StepStatus(
        name=obs.name, phase=bounded(obs.phase, MAX_PHASE_LENGTH), attempt=attempt,
        pod=bounded(obs.pod, MAX_OBJECT_NAME_LENGTH),
        node_id=bounded(obs.node_id, MAX_OBJECT_NAME_LENGTH),
        retries=obs.retries, started_at=obs.started_at, finished_at=obs.finished_at,
        message=bounded(obs.message, MAX_MESSAGE_LENGTH) or None, exit_code=obs.exit_code,
        log_tail=bounded(obs.log_tail, MAX_LOG_TAIL_LENGTH),
    )


def merged_steps(prev: list[StepStatus] | None, obs: WorkflowObservation | None,
                 attempt: int) -> list[StepStatus]:
    """Steps of the current attempt, plus steps an earlier attempt finished (continue)."""
    current = {s: _step_status(o, attempt) for s, o in (obs.steps if obs else {}).items()}
    out: list[StepStatus] = []
    for step in STEP_ORDER:
        if step in current:
            out.append(current[step])
            continue
        earlier = next((s for s in prev or [] if s.name == step), None)
        if earlier is not None and (earlier.phase in DONE_PHASES or earlier.attempt == attempt):
            out.append(earlier)
    return out


def first_unfinished(steps: list[StepStatus]) -> StepName | None:
    done = {s.name for s in steps if s.phase in DONE_PHASES}
    return next((s for s in STEP_ORDER if s not in done), None)


METRICS_FILE = "the metrics file ($MLTASK_METRICS_FILE)"
RESULT_FILE = "the result file ($MLTASK_RESULT_FILE)"
#: The condition saying whether the run step's metrics were all kept, and its reasons.
METRICS_VALID, METRICS_DROPPED, METRICS_KEPT = "MetricsValid", "MetricsDropped", "MetricsKept"
#: The reason of a task whose upload step wrote a result file status cannot carry.
INVALID_RESULT = "InvalidResult"
#: The largest metrics (or result) file read; a larger one is dropped whole.
MAX_METRICS_FILE_BYTES = 64 * 1024
#: A metric's name: what Prometheus-like tools and `when` expressions can read.
METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
#: At most this many dropped metrics are named in the MetricsValid condition.
_NAMED_DROPS = 10


class _NonFinite:
    """What json's parse_constant makes of NaN, Infinity and -Infinity."""


_NON_FINITE = _NonFinite()


@dataclass(frozen=True)
class Metrics:
    """What a run step's metrics file holds that status can carry, and what it dropped: each
    metric's name -> why, or the whole file (`unreadable` says why)."""

    values: dict[str, float]
    dropped: dict[str, str] = field(default_factory=dict)
    unreadable: str | None = None

    def note(self) -> str | None:
        """The MetricsValid condition's message when something was dropped, else None."""
        if self.unreadable:
            return f"{METRICS_FILE}: {self.unreadable}: no metric kept"
        if not self.dropped:
            return None
        named = [f"{bounded(k, 64)!r} ({why})"
                 for k, why in list(self.dropped.items())[:_NAMED_DROPS]]
        more = len(self.dropped) - len(named)
        return bounded(f"{METRICS_FILE}: {len(self.dropped)} metric(s) dropped, "
                       f"{len(self.values)} kept: " + ", ".join(named)
                       + (f" and {more} more" if more else ""), 4096)


def _number(text: str) -> float | _NonFinite:
    """An integer of the file, as the double status carries (overflowing ones are not finite:
    float() of a long digit string is inf where int() would raise)."""
    value = float(text)
    return value if math.isfinite(value) else _NON_FINITE


def parse_metrics(raw: str | None) -> Metrics:
    """A run step's metrics file -> the metrics status carries: finite numbers under valid
    names, at most MAX_METRICS of them; everything else is dropped and said. Never raises."""
    if not raw:
        return Metrics({})
    if len(raw.encode(errors="replace")) > MAX_METRICS_FILE_BYTES:
        return Metrics({}, unreadable=f"larger than {MAX_METRICS_FILE_BYTES} bytes")
    try:
        data = json.loads(raw, parse_constant=lambda _: _NON_FINITE, parse_int=_number)
    except (ValueError, RecursionError):
        return Metrics({}, unreadable="not valid JSON")
    if not isinstance(data, dict):
        return Metrics({}, unreadable="not a JSON object of name: number")
    values: dict[str, float] = {}
    dropped: dict[str, str] = {}
    for name, value in data.items():
        if len(name) > MAX_METRIC_NAME_LENGTH:
            dropped[name] = f"name longer than {MAX_METRIC_NAME_LENGTH} characters"
        elif not METRIC_NAME.match(name):
            dropped[name] = "not a metric name"
        elif value is _NON_FINITE or (isinstance(value, float) and not math.isfinite(value)):
            dropped[name] = "not a finite number"
        elif isinstance(value, bool) or not isinstance(value, int | float):
            dropped[name] = "not a number"
        elif len(values) >= MAX_METRICS:
            dropped[name] = f"more than {MAX_METRICS} metrics"
        else:
            values[name] = float(value)
    return Metrics(values, dropped)


class InvalidResult(ValueError):
    """The upload step's result file is not what the contract says: the task fails."""


_SHA256 = re.compile(r"^[a-fA-F0-9]{64}$")
_MAX_SIZE = 2**63 - 1


def _result_field(data: dict[str, Any], key: str, check: Any, what: str) -> Any:
    value = data.get(key)
    if value is None:
        return None
    if not check(value):
        shown = bounded(json.dumps(value), 64)
        raise InvalidResult(f"{RESULT_FILE}: field {key!r} must be {what}, not {shown}")
    return value


def _is_size(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return 0 <= v <= _MAX_SIZE
    return isinstance(v, float) and v.is_integer() and 0 <= v <= _MAX_SIZE  # not NaN, inf


def parse_result(raw: str | None, task: MLTask) -> OutputStatus | None:
    """The upload step's result file -> status.outputs; InvalidResult (naming the file and
    the field) when it is not a JSON object of the contract's types."""
    out = task.spec.output
    kind, name = ("dataset", out.dataset.name) if out.dataset else (
        "model", out.model.name if out.model else "")
    if raw is None:
        return None
    if len(raw.encode(errors="replace")) > MAX_METRICS_FILE_BYTES:
        raise InvalidResult(f"{RESULT_FILE}: larger than {MAX_METRICS_FILE_BYTES} bytes")
    try:
        data = json.loads(raw) if raw else {}
    except (ValueError, RecursionError) as e:
        raise InvalidResult(f"{RESULT_FILE}: not valid JSON ({bounded(str(e), 200)})") from None
    if not isinstance(data, dict):
        raise InvalidResult(f"{RESULT_FILE}: not a JSON object with uri, size, sha256 and id")

    def text(v: Any) -> bool:
        return isinstance(v, str) and 0 < len(v) <= MAX_STATUS_URI_LENGTH

    uri = _result_field(data, "uri", text,
                        f"a string of 1 to {MAX_STATUS_URI_LENGTH} characters")
    id_ = _result_field(data, "id", lambda v: text(v) or (
        isinstance(v, int) and not isinstance(v, bool)),
        f"a string of 1 to {MAX_STATUS_URI_LENGTH} characters or an integer")
    size = _result_field(data, "size", _is_size, "a whole number of bytes (0 or more)")
    sha256 = _result_field(data, "sha256", lambda v: isinstance(v, str) and _SHA256.match(v),
                           "64 hexadecimal digits")
    return OutputStatus(
        kind=kind, name=name, uri=uri,
        id=str(id_) if id_ is not None else uri,
        size=int(size) if size is not None else None,
        sha256=sha256.lower() if sha256 else None,
    )


#: Why a step's pod cannot start or is refused for whom it runs as, and what the task can do.
_RUN_AS_HINTS = (
    (re.compile(r"runAsNonRoot and image will run as root"),
     "the step runs as its image's user, which must not be root: set "
     "spec.steps.{step}.securityContext.runAsUser to a non-root uid the image works with, or "
     "runAsUser: 0 where the namespace's Pod Security allows root"),
    (re.compile(r"runAsNonRoot and image has non-numeric user"),
     "the kubelet cannot tell whether a user name is root: set "
     "spec.steps.{step}.securityContext.runAsUser to the image user's uid"),
    (re.compile(r"violates PodSecurity"),
     "the namespace's Pod Security refuses the step's pod: check "
     "spec.steps.{step}.securityContext against the namespace's "
     "pod-security.kubernetes.io/enforce level"),
)


def with_hint(step: str, message: str | None) -> str | None:
    """A step's message, with what to do when it says the pod may not run as it asks."""
    for pattern, hint in _RUN_AS_HINTS:
        if message and pattern.search(message):
            return f"{message} ({hint.format(step=step)})"
    return message


#: A process killed by SIGBUS (128 + 7): in a run step, almost always /dev/shm full.
SIGBUS_EXIT_CODE = 135
SHM_HINT = ("bus error: set spec.runtime.sharedMemorySize (DataLoader workers need more than "
            "the default 64 MiB /dev/shm)")


def shm_hint(step: StepObservation | StepStatus, task: MLTask | None) -> str | None:
    """What to do when the run step died of SIGBUS and the task set no /dev/shm size."""
    if (task is None or step.name != StepName.RUN or step.exit_code != SIGBUS_EXIT_CODE
            or task.spec.runtime.shared_memory_size is not None):
        return None
    return SHM_HINT


def _step_message(step: StepObservation | StepStatus | None, task: MLTask | None = None) -> str:
    if step is None:
        return ""
    parts = [f"{step.name} step {str(step.phase).lower()}"]
    if step.message:
        parts.append(f": {with_hint(step.name, step.message)}")
    if step.exit_code is not None and "exit code" not in (step.message or ""):
        parts.append(f" (exit code {step.exit_code})")
    hint = shm_hint(step, task)
    if hint:
        parts.append(f" ({hint})")
    said = last_line(step.log_tail)
    if said:
        parts.append(f": {said}")
    return "".join(parts)


def _retrying(step: StepObservation) -> bool:
    """Argo is retrying the step: its last pod failed and the next one is not running yet."""
    if step.phase != RUNNING:
        return False
    if step.latest_pod_phase in (FAILED, ERROR):
        return True  # in backoff, the next pod not created yet
    return step.retries > 0 and step.latest_pod_phase == PENDING


_PROGRESS = re.compile(r"([0-9]{1,18})/([0-9]{1,18})")


def parse_progress(value: str | None) -> str | None:
    """A run step's self-reported progress as status keeps it: N/M with 0 <= N <= M and M > 1
    (Argo gives every pod 0/1, then 1/1 once it succeeds: no report of the step's own)."""
    found = _PROGRESS.fullmatch((value or "").strip())
    if not found:
        return None
    done, total = (int(g) for g in found.groups())
    return f"{done}/{total}" if total > 1 and done <= total else None


def compute_status(task: MLTask, wf: dict[str, Any] | None,
                   now: datetime.datetime) -> MLTaskStatus:
    """The task's status given its current attempt's Workflow (None: not created yet)."""
    prev = task.status or MLTaskStatus()
    attempt = prev.attempt
    generation = task.metadata.get("generation")
    obs = observe_workflow(wf) if wf is not None else None
    if obs is None and prev.status in TERMINAL_PHASES:
        # Ended with nothing left to observe (refused, stopped before a Workflow, or its
        # Workflow deleted since): the status says how it ended, reasons included.
        return prev.model_copy(update={"observed_generation": generation})
    steps = merged_steps(prev.steps, obs, attempt)
    current = first_unfinished(steps)
    current_obs = obs.steps.get(current) if (obs and current) else None

    started = bool(obs and obs.steps)
    execute_step = EXECUTE_STEP_OF[current] if current else ExecuteStep.DONE
    message: str
    if obs is None:
        # No Workflow (not created yet, or deleted): the steps recorded so far still say
        # where the task is; with none, it is preparing.
        proposed = prev.status
        if not steps:
            execute_step = ExecuteStep.PREPARE_FILE
        message = prev.message or "Preparing the working volume and Workflow"
    elif obs.phase == SUCCEEDED:
        proposed, execute_step, message = Phase.COMPLETED, ExecuteStep.DONE, "Completed"
    elif obs.phase in (FAILED, ERROR):
        if obs.shutdown or task.spec.suspend:
            proposed = Phase.STOPPED
            message = f"Stopped at {execute_step}"
        else:
            proposed = Phase.FAILED
            failed = next((s for s in obs.steps.values() if s.phase in (FAILED, ERROR)), None)
            message = _step_message(failed, task) or obs.message or "Workflow failed"
    elif obs.shutdown:
        proposed, message = Phase.STOPPING, f"Stopping at {execute_step}"
    elif not started or current_obs is None:
        # between two steps the task is running, even when this is its first observation
        # (e.g. after an operator restart); before any step it keeps init
        proposed = (Phase.RUNNING if started or prev.status not in ACTIVE_PHASES
                    else prev.status)
        if not started and not steps:
            execute_step = ExecuteStep.PREPARE_FILE  # a continued attempt keeps its next step
        message = f"Starting {execute_step}" if started else "Workflow created, waiting for pods"
    elif _retrying(current_obs):
        proposed = Phase.RETRY
        waiting = current_obs.latest_pod_phase in (FAILED, ERROR)
        n = current_obs.retries + (1 if waiting else 0)
        message = (f"Retrying {current} step (retry {n} of "
                   f"{task.spec.runtime.retry_policy.limit})"
                   + (f" after: {current_obs.message}" if current_obs.message else ""))
    elif current_obs.latest_pod_phase == RUNNING or current_obs.phase == RUNNING:
        proposed, message = Phase.RUNNING, f"Running {execute_step}"
    else:
        proposed = prev.status if prev.status in ACTIVE_PHASES else Phase.RUNNING
        message = f"Waiting for the {current} pod"
        if current_obs.message:  # e.g. the image cannot be pulled, or may not run as root
            message += f": {with_hint(current_obs.name, current_obs.message)}"

    outputs, metrics, kept = prev.outputs, prev.metrics, None
    progress = prev.progress
    reason = None
    if obs is not None:
        run = obs.steps.get(StepName.RUN)
        progress = (parse_progress(run.progress) if run is not None else None) or progress
        if run is not None and METRICS_PARAM in run.outputs:
            kept = parse_metrics(run.outputs[METRICS_PARAM])
            metrics = kept.values or metrics
        upload = obs.steps.get(StepName.UPLOAD)
        if upload is not None and upload.phase == SUCCEEDED:
            try:
                outputs = parse_result(upload.outputs.get(RESULT_PARAM, ""), task) or outputs
            except InvalidResult as e:
                # the Workflow succeeded, but what it reports cannot be used: the task fails
                proposed, reason = Phase.FAILED, INVALID_RESULT
                message = f"upload step succeeded, but {e}"

    phase = advance(prev.status, proposed)
    if phase != proposed:  # a stale observation: keep what we had
        return prev.model_copy(update={"observed_generation": generation})
    message = bounded(message, MAX_MESSAGE_LENGTH)
    conditions = conditions_for(phase, message, prev.conditions, generation, now, reason=reason)
    note = kept.note() if kept is not None else None
    if kept is not None and (note or any(c.type == METRICS_VALID for c in conditions)):
        conditions = set_condition(
            conditions, METRICS_VALID, "False" if note else "True",
            METRICS_DROPPED if note else METRICS_KEPT,
            note or f"{METRICS_FILE}: all {len(kept.values)} metric(s) kept", generation, now)

    start_time = prev.start_time or (obs.started_at if obs else None) or now
    completion = None
    if phase in TERMINAL_PHASES:
        completion = (prev.completion_time if prev.status == phase and prev.completion_time
                      else (obs.finished_at if obs and obs.finished_at else now))
    duration = format_duration(((completion or now) - start_time).total_seconds())

    return MLTaskStatus(
        status=phase,
        execute_step=execute_step,
        message=message,
        attempt=attempt,
        workflow_name=prev.workflow_name,
        start_time=start_time,
        completion_time=completion,
        duration=duration,
        steps=steps or None,
        outputs=outputs,
        progress=progress,
        metrics=metrics,
        conditions=conditions,
        observed_generation=generation,
        observed_retry_generation=prev.observed_retry_generation,
        released=prev.released,
        cache_key=prev.cache_key,
    )
