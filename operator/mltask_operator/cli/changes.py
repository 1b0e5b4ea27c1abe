"""Pure: the patches the actions send (stop, continue, retry, archive) and which pod a step's
logs are read from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1.mltask import ACTIVE_PHASES, FINISHED_PHASES
from mltask_operator.cli.errors import CliError
from mltask_operator.cli.targets import PROG, Target, check_not_archived
from mltask_operator.kinds import PIPELINE
from mltask_operator.mltask_status import observe_workflow

STEP_NAMES = [s.value for s in mltask_api.STEP_ORDER]


STEP_OF_EXECUTE = {v.value: k.value for k, v in mltask_api.EXECUTE_STEP_OF.items()}


@dataclass(frozen=True)
class Change:
    """A merge patch to send (None: nothing to change) and what to tell the user."""

    patch: dict[str, Any] | None
    message: str


def suspend_change(target: Target, obj: dict[str, Any], suspend: bool) -> Change:
    """`stop` (suspend) or `continue` (not suspend): the patch and its message, or CliError
    when there is nothing the operator would do."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    status = st.get("status") or "init"
    current = bool(spec.get("suspend"))
    what = "its running tasks stop and no new task starts" if target.kind == PIPELINE else (
        "Argo shuts the Workflow down")
    if suspend:
        if current:
            return Change(None, f"{target} is already stopped or stopping (status {status})")
        if status in FINISHED_PHASES:
            raise CliError(f"{target.kind.singular} {target.name} has ended ({status}): nothing "
                           f"to stop" + (f"; to run it again: {PROG} retry {target}"
                                         if status == "failed" else ""))
        return Change({"spec": {"suspend": True}},
                      f"{target} stop requested (status {status}): {what}; "
                      "it goes stopping, then stopped")
    if not current:
        return Change(None, f"{target} is not stopped (status {status}): nothing to continue")
    check_not_archived(target, obj, "continue")
    then = ("its stopped tasks continue and waiting tasks start" if target.kind == PIPELINE
            else "a new attempt starts at the step that did not finish")
    return Change({"spec": {"suspend": False}}, f"{target} continue requested: {then}")


def archive_change(target: Target, obj: dict[str, Any], archive: bool) -> Change:
    """`archive` (archive) or `unarchive` (not archive): the merge patch and its message (no
    patch when it is already so). An active one is stopped in the same patch (spec.suspend:
    true), so unarchiving it later leaves it stopped instead of running it again."""
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    status = st.get("status") or "init"
    suspended = bool(spec.get("suspend"))
    if archive:
        if spec.get("archived"):
            return Change(None, f"{target} is already archived: nothing to archive")
        kept = ("its tasks keep their status, outputs and metrics and release their "
                "Workflows, pods and working volumes" if target.kind == PIPELINE else
                "it keeps its status, outputs and metrics and releases its Workflows, pods "
                "and working volume")
        if status not in ACTIVE_PHASES:
            return Change({"spec": {"archived": True}}, f"{target} archive requested: {kept}")
        stopped = (f" (it is {status})" if suspended else
                   f": it was {status}, so it is stopped to be archived (spec.suspend: true; "
                   "unarchiving leaves it stopped)")
        return Change({"spec": {"archived": True, "suspend": True}},
                      f"{target} archive requested{stopped}; {kept}")
    if not spec.get("archived"):
        return Change(None, f"{target} is not archived: nothing to unarchive")
    if status in FINISHED_PHASES:
        then = f"it stays {status}"
    elif suspended:
        then = f"it stays stopped (spec.suspend: true); to continue it: {PROG} continue {target}"
    else:
        then = "it continues (spec.suspend is false)"
    return Change({"spec": {"archived": False}}, f"{target} unarchive requested: {then}")


def retry_patch(target: Target, obj: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The merge patch of a retry and the new retryGeneration; CliError when the operator
    would ignore it. The patch carries the resourceVersion read: if anyone changed the object
    since (another retry, say), the API server refuses it (409) instead of two retries
    writing the same number."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    status = (obj.get("status") or {}).get("status")
    noun = f"{target.kind.singular} {target.name}"
    check_not_archived(target, obj, "retry")
    if status is None:
        raise CliError(f"{noun} has no status yet (the operator has not started it): "
                       "nothing to retry")
    if status in ACTIVE_PHASES:
        then = ("wait until it is stopped" if status == "stopping"
                else f"stop it first ({PROG} stop {target})")
        raise CliError(f"{noun} is still active ({status}): the operator ignores a retry until "
                       f"it has failed, stopped or completed; {then}")
    if target.kind == PIPELINE and status == "completed":
        raise CliError(f"{noun} is completed: a pipeline retry reruns failed and stopped "
                       "tasks, and there are none")
    generation = int(spec.get("retryGeneration") or 0) + 1
    return ({"metadata": {"resourceVersion": meta["resourceVersion"]},
             "spec": {"suspend": False, "retryGeneration": generation}}, generation)


@dataclass(frozen=True)
class StepPod:
    step: str
    pod: str
    attempt: int | None
    log_tail: str | None = None  # what status kept of a failed step's log


def choose_step(task: str, steps: Sequence[dict[str, Any]] | None, execute_step: str | None,
                step: str | None = None, attempt: int | None = None) -> StepPod:
    """The pod whose logs to read: `step`'s, else the pod of the step the task is at
    (executeStep), else the last step that has a pod; only `attempt`'s entries if given."""
    entries = {s.get("name"): s for s in steps or []
               if attempt is None or s.get("attempt") == attempt}
    where = f" in attempt {attempt}" if attempt is not None else ""
    if step is not None:
        entry = entries.get(step)
        if entry is None:
            raise CliError(f"step {step} of mltask {task} has not run{where}")
        if not entry.get("pod"):
            raise CliError(f"step {step} of mltask {task} has no pod yet{where} "
                           f"(phase {entry.get('phase') or 'unknown'})")
    else:
        current = entries.get(STEP_OF_EXECUTE.get(execute_step or ""))
        with_pod = [entries[n] for n in STEP_NAMES if (entries.get(n) or {}).get("pod")]
        entry = current if current and current.get("pod") else (
            with_pod[-1] if with_pod else None)
        if entry is None:
            raise CliError(f"mltask {task} has no step pod yet{where} "
                           f"(step {execute_step or 'unknown'})")
    return StepPod(entry["name"], entry["pod"], entry.get("attempt"), entry.get("logTail"))


def workflow_steps(wf: dict[str, Any], attempt: int) -> list[dict[str, Any]]:
    """status.steps-like entries for one attempt's Workflow (an earlier attempt's pods)."""
    obs = observe_workflow(wf)
    return [{"name": str(o.name), "phase": o.phase, "pod": o.pod, "attempt": attempt}
            for o in obs.steps.values()]


def released_logs_message(task: str, attempt: int, workflow: str) -> str:
    """Why an earlier attempt's logs cannot be read: the operator released its Workflow."""
    return (f"attempt {attempt} of mltask {task} was released (Workflow {workflow} and its pods "
            "were deleted once a later attempt ran); a failed step's last log lines are kept "
            f"in its status: {PROG} describe {task}")
