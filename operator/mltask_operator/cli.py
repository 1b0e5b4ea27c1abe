"""`kubectl mltask`: list, describe, stop, continue, retry, archive, logs, outputs, metrics."""

from __future__ import annotations

import argparse
import codecs
import datetime
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

import urllib3
import yaml
from kubernetes import client, config

from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1 import pipeline as pipeline_api
from mltask_operator.api.v1alpha1.common import GROUP, VERSION
from mltask_operator.builders.workflow import workflow_name
from mltask_operator.clients.kube import list_objects
from mltask_operator.labels import ARCHIVED as ARCHIVED_LABEL
from mltask_operator.status import ACTIVE, observe_workflow, parse_duration

PROG = "kubectl mltask"
NONE = "<none>"
#: A retry re-reads and tries again this often when someone else changed the object meanwhile.
RETRY_CONFLICTS = 5
#: The container of a step pod that runs the step's image (Argo's `wait` runs beside it).
MAIN_CONTAINER = "main"
ENDED = ("completed", "failed")
STEP_NAMES = [s.value for s in mltask_api.STEP_ORDER]
STEP_OF_EXECUTE = {v.value: k.value for k, v in mltask_api.EXECUTE_STEP_OF.items()}


class CliError(Exception):
    """What the user is told on stderr, without a traceback; the command exits 1."""


#: How long `logs -f` waits for a step's container to start (its init container runs first).
FOLLOW_START_WAIT = 300
#: The page size of the listing `list -w` starts from.
LIST_PAGE = 500
#: How long one watch request of `list -w` lasts (the API server ends it, and it is reopened
#: from the last resourceVersion seen).
WATCH_SECONDS = 300


class ApiCallError(CliError):
    """An API call failed: `status` is the HTTP status (0 when the server was not reached),
    `server` what the API server said."""

    def __init__(self, message: str, status: int, server: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.server = server or message


@dataclass(frozen=True)
class Resource:
    """A kind the plugin reads or writes: how messages name it and where the API serves it."""

    singular: str
    plural: str
    group: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


MLTASK = Resource(mltask_api.SINGULAR, mltask_api.PLURAL, GROUP)
PIPELINE = Resource(pipeline_api.SINGULAR, pipeline_api.PLURAL, GROUP)
POD = Resource("pod", "pods")
POD_LOG = Resource("pod", "pods/log")
WORKFLOW = Resource("workflow", "workflows", "argoproj.io")

TYPE_NAMES = {
    **dict.fromkeys((mltask_api.SINGULAR, mltask_api.PLURAL, *mltask_api.SHORT_NAMES,
                     f"{mltask_api.SINGULAR}.{GROUP}", f"{mltask_api.PLURAL}.{GROUP}"), MLTASK),
    **dict.fromkeys((pipeline_api.SINGULAR, pipeline_api.PLURAL, *pipeline_api.SHORT_NAMES,
                     f"{pipeline_api.SINGULAR}.{GROUP}", f"{pipeline_api.PLURAL}.{GROUP}"),
                    PIPELINE),
}


@dataclass(frozen=True)
class Target:
    """What a command acts on: an MLTask (NAME) or a Pipeline (pipeline/NAME)."""

    kind: Resource
    name: str

    def __str__(self) -> str:
        return f"{self.kind.singular}/{self.name}"


# ------------------------------------------------------------------------------ pure parts


def parse_target(text: str) -> Target:
    """`NAME` is an MLTask; `TYPE/NAME` like kubectl, TYPE one of mltask, mlt, pipeline, mlp..."""
    kind_name, sep, name = text.rpartition("/")
    if not sep:
        kind = MLTASK
    elif kind_name.lower() in TYPE_NAMES:
        kind = TYPE_NAMES[kind_name.lower()]
    else:
        raise ValueError(f"unknown resource type {kind_name!r} in {text!r}: use NAME for an "
                         "MLTask, or pipeline/NAME")
    if not name or "/" in kind_name:
        raise ValueError(f"{text!r} names no object: use NAME or pipeline/NAME")
    return Target(kind, name)


def parse_list_kind(text: str) -> Resource:
    """What `list` lists: mltasks (the default) or pipelines."""
    try:
        return TYPE_NAMES[text.lower()]
    except KeyError:
        raise ValueError(f"cannot list {text!r}: use mltasks or pipelines") from None


def escape_selector_value(value: str) -> str:
    """A field selector value with `\\`, `,` and `=` escaped, as kubectl's fields.EscapeValue."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def field_selector(type_: str | None = None, status: str | None = None,
                   pipeline: str | None = None) -> str | None:
    """The field selector for `list`'s filters, on the CRDs' selectableFields."""
    terms = [f"{path}={escape_selector_value(value)}" for path, value in (
        ("spec.type", type_), ("status.status", status), ("spec.pipelineRef.name", pipeline))
        if value]
    return ",".join(terms) or None


#: What `list` shows of archived objects (label mltask.dev/archived): none (the default), all
#: objects (--archived), or only archived ones (--only-archived).
HIDE, SHOW, ONLY = "hide", "show", "only"


def label_selector(user: str | None, archived: str = HIDE) -> str | None:
    """`list`'s label selector: the user's -l, with `!mltask.dev/archived` (archived objects
    hidden) unless --archived shows them too or --only-archived only them
    (`mltask.dev/archived`). A -l that names the archived label itself decides alone."""
    if archived == SHOW or (archived == HIDE and user and ARCHIVED_LABEL in user):
        return user or None
    term = f"!{ARCHIVED_LABEL}" if archived == HIDE else ARCHIVED_LABEL
    return f"{user},{term}" if user else term


def context_namespace(contexts: Sequence[dict[str, Any]], active: dict[str, Any] | None,
                      wanted: str | None) -> str:
    """The namespace of the kubeconfig context in use (`--context`, else the current one),
    else `default`, as kubectl chooses it."""
    ctx = next((c for c in contexts if c.get("name") == wanted), None) if wanted else active
    return ((ctx or {}).get("context") or {}).get("namespace") or "default"


def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's AGE: 45s, 3m20s, 15m, 5h4m, 20h, 3d4h, 30d, 2y10d (duration.HumanDuration)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y{days % 365}d" if days % 365 else f"{years}y"
    return f"{years}y"


def age(obj: dict[str, Any], now: datetime.datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return human_duration((now - created).total_seconds()) if created else NONE


def cell(value: Any) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return str(value).lower()
    return " ".join(str(value).split()) if isinstance(value, str) else str(value)


def format_row(cells: Sequence[str], widths: Sequence[int], indent: str = "") -> str:
    return (indent + "   ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))).rstrip()


class RowPrinter:
    """A table, then (`list -w`) more rows as they come: in the table's columns, wider from
    the row on whose value needs it."""

    def __init__(self, headers: Sequence[str]) -> None:
        self.headers = list(headers)
        self.widths = [len(h) for h in headers]

    def _cells(self, row: Sequence[Any]) -> list[str]:
        if len(row) != len(self.headers):
            raise ValueError(f"a row does not have the {len(self.headers)} columns "
                             f"{self.headers}")
        return [cell(v) for v in row]

    def table(self, rows: Iterable[Sequence[Any]], indent: str = "") -> str:
        cells = [self.headers, *(self._cells(row) for row in rows)]
        self.widths = [max(len(r[i]) for r in cells) for i in range(len(self.headers))]
        return "\n".join(format_row(r, self.widths, indent) for r in cells)

    def row(self, row: Sequence[Any]) -> str:
        cells = self._cells(row)
        self.widths = [max(w, len(c)) for w, c in zip(self.widths, cells, strict=True)]
        return format_row(cells, self.widths)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """Columns as kubectl prints them: left-aligned, three spaces apart, missing as <none>."""
    return RowPrinter(headers).table(rows, indent)


def render_fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """`Key:   value` lines with the values aligned, as kubectl describe prints them."""
    width = max(len(k) for k, _ in pairs) + 2
    return "\n".join(f"{k + ':':<{width}}{cell(v)}".rstrip() for k, v in pairs)


TASK_HEADERS = ["NAME", "TYPE", "STATUS", "STEP", "ATTEMPT", "AGE", "DURATION"]
PIPELINE_HEADERS = ["NAME", "STATUS", "PROGRESS", "AGE", "DURATION"]


def task_row(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    st = obj.get("status") or {}
    return [obj["metadata"]["name"], (obj.get("spec") or {}).get("type"), st.get("status"),
            st.get("executeStep"), st.get("attempt"), age(obj, now), st.get("duration")]


def pipeline_row(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    st = obj.get("status") or {}
    return [obj["metadata"]["name"], st.get("status"), st.get("progress"), age(obj, now),
            st.get("duration")]


def list_headers(kind: Resource, all_namespaces: bool = False) -> list[str]:
    headers = PIPELINE_HEADERS if kind == PIPELINE else TASK_HEADERS
    return ["NAMESPACE", *headers] if all_namespaces else list(headers)


def list_row(kind: Resource, obj: dict[str, Any], now: datetime.datetime,
             all_namespaces: bool = False) -> list[Any]:
    row = (pipeline_row if kind == PIPELINE else task_row)(obj, now)
    return [obj["metadata"].get("namespace"), *row] if all_namespaces else row


def render_list(kind: Resource, items: Sequence[dict[str, Any]], now: datetime.datetime,
                all_namespaces: bool = False) -> str:
    return render_table(list_headers(kind, all_namespaces),
                        (list_row(kind, i, now, all_namespaces) for i in items))


SORT_KEYS = ("created", "duration", "status", "name")
_NEVER = datetime.datetime.max.replace(tzinfo=datetime.UTC)


def _name_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("name") or "", meta.get("namespace") or ""


def _sort_key(by: str) -> Callable[[dict[str, Any]], Any]:
    def st(obj: dict[str, Any]) -> dict[str, Any]:
        return obj.get("status") or {}

    if by == "created":  # oldest first, as kubectl's --sort-by=.metadata.creationTimestamp
        return lambda o: parse_time((o.get("metadata") or {}).get("creationTimestamp")) or _NEVER
    if by == "duration":  # longest first, none last
        def duration(o: dict[str, Any]) -> tuple[bool, int]:
            seconds = parse_duration(st(o).get("duration"))
            return seconds is None, -(seconds or 0)
        return duration
    if by == "status":  # then name; none last
        return lambda o: (st(o).get("status") is None, st(o).get("status") or "", _name_key(o))
    if by == "name":
        return _name_key
    raise ValueError(f"unknown --sort-by {by!r}: use one of {', '.join(SORT_KEYS)}")


def sort_items(items: Iterable[dict[str, Any]], by: str | None) -> list[dict[str, Any]]:
    """`--sort-by`: created (oldest first), duration (status.duration, longest first, none
    last), status (then name) or name. None keeps the API's order (namespace, then name); ties
    keep it too."""
    return sorted(items, key=_sort_key(by)) if by else list(items)


def gone_message(kind: Resource, obj: dict[str, Any], current: dict[str, Any] | None,
                 archived: str = HIDE, all_namespaces: bool = False) -> str:
    """What `list -w` prints when the watch says an object went: deleted (`current` None, it
    is not found), or still there but out of the listing: archived, or its status no longer
    what --status asks (the API server's watch sends both as a deletion)."""
    meta = obj.get("metadata") or {}
    what = f"{kind.singular}/{meta.get('name')}" + (
        f" in namespace {meta.get('namespace')}" if all_namespaces else "")
    if current is None:
        return f"{what} deleted"
    if archived == HIDE and ARCHIVED_LABEL in ((current.get("metadata") or {}).get("labels")
                                               or {}):
        return f"{what} archived: hidden from now on (--archived shows archived ones)"
    status = (current.get("status") or {}).get("status") or "init"
    return f"{what} no longer matches the filters (status {status})"


def _section(title: str, body: str | None) -> str:
    return f"{title}:\n{body}" if body else f"{title}:  {NONE}"


def _mapping(values: dict[str, Any] | None) -> str | None:
    if not values:
        return None
    return "\n".join(f"  {k}: {cell(v)}" for k, v in values.items())


def _conditions(conditions: list[dict[str, Any]] | None) -> str | None:
    if not conditions:
        return None
    return render_table(["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"],
                        ([c.get("type"), c.get("status"), c.get("reason"),
                          c.get("lastTransitionTime"), c.get("message")] for c in conditions),
                        indent="  ")


def _input_text(spec: dict[str, Any]) -> str | None:
    inp = spec.get("input") or {}
    parts = []
    for what in ("dataset", "model"):
        src = inp.get(what) or {}
        if src.get("uri"):
            parts.append(f"{what} {src['uri']}")
        elif src.get("fromTask"):
            parts.append(f"{what} from task {src['fromTask']}")
    return ", ".join(parts) or None


def describe_task(obj: dict[str, Any]) -> str:
    """What `describe NAME` prints: state, steps, outputs, metrics and conditions of an MLTask."""
    meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    fields: list[tuple[str, Any]] = [
        ("Name", meta["name"]), ("Namespace", meta.get("namespace")), ("Type", spec.get("type")),
    ]
    if spec.get("pipelineRef"):
        fields.append(("Pipeline", spec["pipelineRef"].get("name")))
    fields += [
        ("Input", _input_text(spec)),
        ("Status", st.get("status")), ("Step", st.get("executeStep")),
        ("Attempt", st.get("attempt")), ("Message", st.get("message")),
        ("Workflow", st.get("workflowName")),
        ("Suspend", bool(spec.get("suspend"))),
        ("Retry Generation", spec.get("retryGeneration") or 0),
        ("Start Time", st.get("startTime")), ("Completion Time", st.get("completionTime")),
        ("Duration", st.get("duration")),
    ]
    steps = st.get("steps") or []
    step_table = render_table(
        ["STEP", "PHASE", "ATTEMPT", "RETRIES", "POD", "STARTED", "FINISHED", "EXIT", "MESSAGE"],
        ([s.get("name"), s.get("phase"), s.get("attempt"), s.get("retries"), s.get("pod"),
          s.get("startedAt"), s.get("finishedAt"), s.get("exitCode"), s.get("message")]
         for s in steps), indent="  ") if steps else None
    tails = [f"  {s.get('name')} (attempt {s.get('attempt')}):\n"
             + "\n".join(f"    {line}" for line in s["logTail"].splitlines())
             for s in steps if s.get("logTail")]
    return "\n".join([
        render_fields(fields),
        _section("Steps", step_table),
        *([_section("Last Log Lines Of Failed Steps", "\n".join(tails))] if tails else []),
        _section("Outputs", _mapping(in_api_order(st.get("outputs") or {}, OUTPUT_KEYS))),
        _section("Metrics", _mapping(st.get("metrics"))),
        _section("Conditions", _conditions(st.get("conditions"))),
    ])


def describe_pipeline(obj: dict[str, Any]) -> str:
    """What `describe pipeline/NAME` prints: state, each task's state, and conditions."""
    meta, spec, st = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    fields: list[tuple[str, Any]] = [
        ("Name", meta["name"]), ("Namespace", meta.get("namespace")),
        ("Status", st.get("status")), ("Progress", st.get("progress")),
        ("Message", st.get("message")),
        ("Suspend", bool(spec.get("suspend"))),
        ("Retry Generation", spec.get("retryGeneration") or 0),
        ("Fail Fast", spec.get("failFast", True)), ("Concurrency", spec.get("concurrency")),
        ("Retry Pending", ", ".join(st.get("retryPending") or []) or None),
        ("Start Time", st.get("startTime")), ("Completion Time", st.get("completionTime")),
        ("Duration", st.get("duration")),
    ]
    tasks = st.get("tasks") or []
    task_table = render_table(
        ["TASK", "MLTASK", "STATUS", "STEP", "ATTEMPT", "OUTPUT", "MESSAGE"],
        ([t.get("name"), t.get("mltask"), t.get("status"), t.get("executeStep"),
          t.get("attempt"), t.get("outputUri"),
          f"{t['reason']}: {t.get('message') or ''}" if t.get("reason") else t.get("message")]
         for t in tasks), indent="  ") if tasks else None
    return "\n".join([
        render_fields(fields),
        _section("Tasks", task_table),
        _section("Conditions", _conditions(st.get("conditions"))),
    ])


def owning_pipeline(obj: dict[str, Any]) -> str | None:
    """The Pipeline that owns an MLTask (it sets the task's suspend and retryGeneration)."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r["name"] for r in refs
                 if r.get("kind") == pipeline_api.KIND and r.get("controller")), None)


def check_not_owned(target: Target, obj: dict[str, Any], verb: str) -> None:
    """Refuse to act on a Pipeline's task: the Pipeline would undo it (it owns the task's
    suspend, retryGeneration and archived)."""
    owner = owning_pipeline(obj) if target.kind == MLTASK else None
    if owner:
        sets = ("archives and unarchives its tasks" if verb in ("archive", "unarchive")
                else "sets its suspend and retryGeneration")
        raise CliError(f"mltask {target.name} belongs to pipeline {owner}, which {sets}: "
                       f"{verb} the pipeline instead ({PROG} {verb} pipeline/{owner})")


def check_not_archived(target: Target, obj: dict[str, Any], verb: str) -> None:
    """Refuse retry and continue of an archived object, as the API server would (its rule on
    spec.archived), before asking it."""
    if (obj.get("spec") or {}).get("archived"):
        raise CliError(f"{target} is archived (spec.archived): unarchive it first "
                       f"({PROG} unarchive {target}), then {verb} it")


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
        if status in ENDED:
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
        if status not in ACTIVE:
            return Change({"spec": {"archived": True}}, f"{target} archive requested: {kept}")
        stopped = (f" (it is {status})" if suspended else
                   f": it was {status}, so it is stopped to be archived (spec.suspend: true; "
                   "unarchiving leaves it stopped)")
        return Change({"spec": {"archived": True, "suspend": True}},
                      f"{target} archive requested{stopped}; {kept}")
    if not spec.get("archived"):
        return Change(None, f"{target} is not archived: nothing to unarchive")
    if status in ENDED:
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
    if status in ACTIVE:
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


def server_message(body: str | bytes | None, reason: str | None) -> str:
    """The `message` of the API server's Status body, else the HTTP reason."""
    try:
        text = body.decode() if isinstance(body, bytes) else body
        message = json.loads(text or "").get("message")
    except (ValueError, AttributeError, UnicodeDecodeError):
        message = None
    return str(message or reason or "no message").strip()


def api_error_message(status: int, message: str, verb: str, kind: Resource, name: str | None,
                      namespace: str | None) -> str:
    """One line naming what failed: `mltask x not found in namespace ns`, or for a 403 the
    verb and resource that were refused."""
    where = f"in namespace {namespace}" if namespace else "in any namespace"
    obj = f"{kind.qualified} {name!r}" if name else kind.qualified
    if status == 404:
        if name:
            return f"{kind.singular} {name} not found {where}"
        return f"the server has no {kind.qualified} (are the CRDs installed?): {message}"
    if status == 403:
        return f"forbidden: you may not {verb} {obj} {where}: {message}"
    if status == 401:
        return f"unauthorized: the API server refused the kubeconfig's credentials: {message}"
    if status == 409:
        return f"conflict: {obj} changed while this command ran: {message}"
    if status in (400, 422):
        return f"the API server refused to {verb} {obj} {where}: {message}"
    if status == 0:
        return f"cannot {verb} {obj}: {message}"
    return f"cannot {verb} {obj} {where}: HTTP {status}: {message}"


def next_page_hint(args: argparse.Namespace, namespace: str, token: str,
                   remaining: int | None = None) -> str:
    """What `list --limit N` prints on stderr when the API server has more: the same command
    with --continue TOKEN, ready to paste."""
    words = PROG.split()
    for flag in ("kubeconfig", "context"):
        if getattr(args, flag, None):
            words += [f"--{flag}", getattr(args, flag)]
    words.append("list")
    if args.resource == PIPELINE:
        words.append("pipelines")
    words += ["-A"] if args.all_namespaces else ["-n", namespace]
    for flag, value in (("--type", args.type), ("--status", args.status),
                        ("--pipeline", args.pipeline), ("-l", args.selector),
                        ("--sort-by", args.sort_by)):
        if value:
            words += [flag, value]
    if args.archived != HIDE:
        words.append("--archived" if args.archived == SHOW else "--only-archived")
    words += ["--limit", str(args.limit), "--continue", token]
    left = f" ({remaining} left)" if remaining else ""
    return f"More {args.resource.plural}{left}: the next page with\n  {shlex.join(words)}"


def list_usage_error(args: argparse.Namespace) -> str | None:
    """Flags of `list` that do not go together (exit 2, before any API call)."""
    if args.resource == PIPELINE and (args.type or args.pipeline):
        return "--type and --pipeline filter MLTasks, not pipelines"
    if args.continue_token and not args.limit:
        return "--continue needs --limit (the page size of the listing it continues)"
    if args.watch and args.limit:
        return "--watch lists every object, then its changes: not with --limit"
    return None


def json_lines(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The events of a watch stream, one JSON object a line; a line split across chunks stays
    whole, and an unfinished last line (the connection dropped) is left out."""
    rest = b""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)


def write_stream(chunks: Iterable[bytes], out: TextIO) -> None:
    """Copy a log stream to `out` as text; a UTF-8 character split across chunks stays whole."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in chunks:
        text = decoder.decode(chunk)
        if text:
            out.write(text)
            out.flush()
    out.write(decoder.decode(b"", final=True))
    out.flush()


#: status.outputs as the API defines it (the API server returns the keys sorted).
OUTPUT_KEYS = [f.alias or n for n, f in mltask_api.OutputStatus.model_fields.items()]


def in_api_order(value: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """`value` with `keys` first, in that order, then any others as they come."""
    return {**{k: value[k] for k in keys if k in value},
            **{k: v for k, v in value.items() if k not in keys}}


def dump(value: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(value, indent=2)
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


# ------------------------------------------------------------------------------------- I/O

T = TypeVar("T")


class Session:
    """The plugin's API calls, each turning an API error into a one-line CliError."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.objects = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def call(self, fn: Callable[[], T], verb: str, kind: Resource, name: str | None = None,
             namespace: str | None = None) -> T:
        try:
            return fn()
        except client.ApiException as e:
            message = server_message(e.body, e.reason)
            raise ApiCallError(api_error_message(e.status or 0, message, verb, kind, name,
                                                 namespace), e.status or 0, message) from e
        except urllib3.exceptions.HTTPError as e:
            raise ApiCallError(f"cannot reach the API server at {self.api.configuration.host}: "
                               f"{e}", 0) from e

    def get(self, target: Target) -> dict[str, Any]:
        return self.call(lambda: self.objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, target.kind.plural, target.name),
            "get", target.kind, target.name, self.namespace)

    def patch(self, target: Target, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(lambda: self.objects.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, target.kind.plural, target.name, body,
            _content_type="application/merge-patch+json"),
            "patch", target.kind, target.name, self.namespace)

    def list(self, kind: Resource, all_namespaces: bool, fields: str | None,
             labels: str | None) -> list[dict[str, Any]]:
        namespace = None if all_namespaces else self.namespace
        return self.call(lambda: list_objects(self.objects, kind.plural, namespace,
                                              field_selector=fields, label_selector=labels),
                         "list", kind, namespace=namespace)

    def _list_call(self, kind: Resource, namespace: str | None, **kwargs: Any) -> Any:
        if namespace is None:
            return self.objects.list_cluster_custom_object(GROUP, VERSION, kind.plural, **kwargs)
        return self.objects.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                          kind.plural, **kwargs)

    def list_page(self, kind: Resource, all_namespaces: bool, fields: str | None,
                  labels: str | None, limit: int, token: str | None = None) -> dict[str, Any]:
        """One page of at most `limit` objects (the API server's chunking), after `token`."""
        namespace = None if all_namespaces else self.namespace
        kwargs: dict[str, Any] = {"limit": limit}
        for key, value in (("field_selector", fields), ("label_selector", labels),
                           ("_continue", token)):
            if value:
                kwargs[key] = value
        return self.call(lambda: self._list_call(kind, namespace, **kwargs), "list", kind,
                         namespace=namespace)

    def list_snapshot(self, kind: Resource, all_namespaces: bool, fields: str | None,
                      labels: str | None) -> tuple[list[dict[str, Any]], str]:
        """Every object, page by page, and the resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = self.list_page(kind, all_namespaces, fields, labels, LIST_PAGE, token)
            items += page.get("items") or []
            token = page["metadata"].get("continue")
            if not token:
                return items, page["metadata"]["resourceVersion"]

    def watch(self, kind: Resource, all_namespaces: bool, fields: str | None,
              labels: str | None, resource_version: str) -> Iterator[dict[str, Any]]:
        """The watch events after `resource_version`, until the server ends the watch (after
        WATCH_SECONDS) or the connection drops."""
        namespace = None if all_namespaces else self.namespace
        kwargs: dict[str, Any] = {
            "watch": True, "resource_version": resource_version, "allow_watch_bookmarks": True,
            "timeout_seconds": WATCH_SECONDS, "_preload_content": False,
            "_request_timeout": (10, WATCH_SECONDS + 30)}
        for key, value in (("field_selector", fields), ("label_selector", labels)):
            if value:
                kwargs[key] = value
        resp = self.call(lambda: self._list_call(kind, namespace, **kwargs), "watch", kind,
                         namespace=namespace)
        try:
            yield from json_lines(resp.stream(None))
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            return  # reopened from the last resourceVersion seen
        finally:
            resp.close()
            resp.release_conn()

    def find(self, kind: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it is not found."""
        try:
            return self.call(lambda: self.objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural, name), "get", kind, name, namespace)
        except ApiCallError as e:
            if e.status == 404:
                return None
            raise

    def get_workflow(self, name: str) -> dict[str, Any]:
        return self.call(lambda: self.objects.get_namespaced_custom_object(
            WORKFLOW.group, "v1alpha1", self.namespace, WORKFLOW.plural, name),
            "get", WORKFLOW, name, self.namespace)

    def stream_logs(self, task: str, chosen: StepPod, follow: bool, tail: int | None,
                    out: TextIO) -> None:
        what = (f"pod {chosen.pod} (step {chosen.step}, attempt {chosen.attempt}) of "
                f"mltask {task}")
        deadline = time.monotonic() + FOLLOW_START_WAIT
        while True:
            try:
                resp = self.call(lambda: self.core.read_namespaced_pod_log(
                    chosen.pod, self.namespace, container=MAIN_CONTAINER, follow=follow,
                    tail_lines=tail, _preload_content=False),
                    "get", POD_LOG, chosen.pod, self.namespace)
                break
            except ApiCallError as e:
                # -f on a step whose container has not started yet (its init container still
                # runs): wait for it to start, as a user following a step about to run expects
                if follow and e.status == 400 and "waiting to start" in e.server \
                        and time.monotonic() < deadline:
                    time.sleep(1)
                    continue
                if e.status == 404 and chosen.log_tail and not self._pod_exists(chosen.pod):
                    # the pod is gone, but the task's status kept why the step failed
                    print(f"{what} is gone; its last log lines, kept in the task's status:",
                          file=sys.stderr)
                    out.write(chosen.log_tail.rstrip("\n") + "\n")
                    return
                err = self._log_error(e, what, chosen)
                if err is e:
                    raise
                raise err from e
        try:
            write_stream(resp.stream(None), out)
        except urllib3.exceptions.HTTPError as e:
            raise CliError(f"the log stream of {what} broke off: {e}") from e
        finally:
            resp.release_conn()

    def _log_error(self, e: ApiCallError, what: str, chosen: StepPod) -> CliError:
        """What a failed log read means for the user."""
        if e.status == 404 and not self._pod_exists(chosen.pod):
            return CliError(f"{what} not found in namespace {self.namespace}: deleted, or not "
                            "created yet")
        if e.status in (0, 401, 403):
            return e
        # e.g. no kubelet answers for the pod's node, or the container has not started
        return CliError(f"cannot read the logs of {what}: {e.server} (HTTP {e.status})")

    def _pod_exists(self, pod: str) -> bool:
        try:
            self.call(lambda: self.core.read_namespaced_pod(pod, self.namespace),
                      "get", POD, pod, self.namespace)
            return True
        except ApiCallError as e:
            if e.status == 404:
                return False
            raise


def connect(kubeconfig: str | None, context: str | None,
            namespace: str | None) -> Session:
    """A session from the kubeconfig (`--kubeconfig`, else $KUBECONFIG or ~/.kube/config)."""
    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, context=context,
                                client_configuration=cfg, persist_config=False)
        if namespace is None:
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = context_namespace(contexts, active, context)
    except (config.ConfigException, OSError, yaml.YAMLError) as e:
        source = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CliError(f"cannot load the kubeconfig ({source}): {e}") from e
    cfg.retries = 0  # one line of error, not urllib3's retry warnings, when unreachable
    return Session(client.ApiClient(cfg), namespace)


# -------------------------------------------------------------------------------- commands


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def cmd_list(s: Session, args: argparse.Namespace) -> int:
    kind: Resource = args.resource
    fields = field_selector(args.type, args.status, args.pipeline)
    labels = label_selector(args.selector, args.archived)
    if args.watch:
        return _watch_list(s, args, fields, labels)
    token, remaining = None, None
    if args.limit:
        try:
            page = s.list_page(kind, args.all_namespaces, fields, labels, args.limit,
                               args.continue_token)
        except ApiCallError as e:
            if e.status == 410 and args.continue_token:
                raise CliError("the --continue token has expired (the API server keeps a "
                               "listing for a few minutes): list again from the first page, "
                               "without --continue") from e
            raise
        items = page.get("items") or []
        token = page["metadata"].get("continue")
        remaining = page["metadata"].get("remainingItemCount")
    else:
        items = s.list(kind, args.all_namespaces, fields, labels)
    if items:
        print(render_list(kind, sort_items(items, args.sort_by), _now(), args.all_namespaces))
    elif not token:
        where = "" if args.all_namespaces else f" in namespace {s.namespace}"
        print(f"No {kind.plural} found{where}.", file=sys.stderr)
    if token:
        sys.stdout.flush()
        print(next_page_hint(args, s.namespace, token, remaining), file=sys.stderr)
    return 0


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def _watch_list(s: Session, args: argparse.Namespace, fields: str | None,
                labels: str | None) -> int:
    """`list -w`: the table, then a row each time an object is added or changes, until
    Ctrl-C. A watch the server ends is reopened from the last resourceVersion seen; one too old
    to watch from (410 Gone) lists again, printing what changed meanwhile."""
    kind: Resource = args.resource
    every = args.all_namespaces
    printer = RowPrinter(list_headers(kind, every))

    def row(obj: dict[str, Any]) -> str:
        return printer.row(list_row(kind, obj, _now(), every))

    def gone(obj: dict[str, Any]) -> str:
        meta = obj["metadata"]
        current = s.find(kind, meta.get("namespace") or s.namespace, meta["name"])
        return gone_message(kind, obj, current, args.archived, every)

    try:
        items, version = s.list_snapshot(kind, every, fields, labels)
        items = sort_items(items, args.sort_by)
        if items:
            print(printer.table(list_row(kind, i, _now(), every) for i in items), flush=True)
        else:
            where = "" if every else f" in namespace {s.namespace}"
            print(f"No {kind.plural} found{where} yet; watching.", file=sys.stderr, flush=True)
        seen = {_key(i): i for i in items}
        while True:
            expired, opened, events = False, time.monotonic(), 0
            try:
                for event in s.watch(kind, every, fields, labels, version):
                    events += 1
                    type_, obj = event.get("type"), event.get("object") or {}
                    if type_ == "ERROR":
                        if obj.get("code") == 410:
                            expired = True
                            break
                        raise CliError(f"the watch of {kind.qualified} failed: "
                                       f"{obj.get('message') or obj}")
                    version = obj["metadata"]["resourceVersion"]
                    if type_ in ("ADDED", "MODIFIED"):
                        seen[_key(obj)] = obj
                        print(row(obj), flush=True)
                    elif type_ == "DELETED":
                        seen.pop(_key(obj), None)
                        print(gone(obj), flush=True)
            except ApiCallError as e:
                if e.status != 410:
                    raise
                expired = True
            if expired:  # list again: print what changed since the objects last seen
                items, version = s.list_snapshot(kind, every, fields, labels)
                fresh = {_key(i): i for i in items}
                for key, obj in fresh.items():
                    old = seen.get(key)
                    if old is None or (old["metadata"]["resourceVersion"]
                                       != obj["metadata"]["resourceVersion"]):
                        print(row(obj), flush=True)
                for key in seen.keys() - fresh.keys():
                    print(gone(seen[key]), flush=True)
                seen = fresh
            elif not events and time.monotonic() - opened < 1:
                time.sleep(1)  # a server ending every watch at once is not asked in a loop
    except KeyboardInterrupt:
        return 0


def cmd_describe(s: Session, args: argparse.Namespace) -> int:
    obj = s.get(args.target)
    print(describe_pipeline(obj) if args.target.kind == PIPELINE else describe_task(obj))
    return 0


def _change(s: Session, args: argparse.Namespace, verb: str,
            decide: Callable[[Target, dict[str, Any]], Change]) -> int:
    """A command that patches the spec once, as `decide` says from the object read."""
    obj = s.get(args.target)
    check_not_owned(args.target, obj, verb)
    change = decide(args.target, obj)
    if change.patch is not None:
        s.patch(args.target, change.patch)
    print(change.message)
    return 0


def cmd_stop(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "stop", lambda t, o: suspend_change(t, o, True))


def cmd_continue(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "continue", lambda t, o: suspend_change(t, o, False))


def cmd_archive(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "archive", lambda t, o: archive_change(t, o, True))


def cmd_unarchive(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "unarchive", lambda t, o: archive_change(t, o, False))


def cmd_retry(s: Session, args: argparse.Namespace) -> int:
    target: Target = args.target
    for _ in range(RETRY_CONFLICTS):
        obj = s.get(target)
        check_not_owned(target, obj, "retry")
        patch, generation = retry_patch(target, obj)
        try:
            s.patch(target, patch)
        except ApiCallError as e:
            if e.status == 409:
                continue  # changed since read: read again, so no two retries share a number
            raise
        then = ("its failed and stopped tasks get a new attempt from download; completed "
                "tasks are kept" if target.kind == PIPELINE
                else "a new attempt will start from download")
        print(f"{target} retry requested: retryGeneration {generation}; {then}")
        return 0
    raise CliError(f"{target} kept changing while retrying ({RETRY_CONFLICTS} tries): "
                   "try again")


def _task_only(target: Target, command: str) -> None:
    if target.kind != MLTASK:
        raise CliError(f"{command} applies to an MLTask; a pipeline's tasks are MLTasks named "
                       f"<pipeline>-<task> ({PROG} describe {target} lists them)")


def cmd_logs(s: Session, args: argparse.Namespace) -> int:
    target: Target = args.target
    _task_only(target, "logs")
    obj = s.get(target)
    st = obj.get("status") or {}
    current = st.get("attempt") or 0
    if args.attempt is not None and args.attempt > current:
        raise CliError(f"mltask {target.name} has had {current} attempt(s), not "
                       f"{args.attempt}")
    if args.attempt is None or args.attempt == current:
        chosen = choose_step(target.name, st.get("steps"), st.get("executeStep"), args.step,
                             args.attempt)
    else:  # an earlier attempt: its own Workflow says which pods it had
        wf_name = workflow_name(target.name, args.attempt)
        released = (st.get("released") or {}).get("workflows") or []
        if wf_name in released:
            raise CliError(released_logs_message(target.name, args.attempt, wf_name))
        wf = s.get_workflow(wf_name)
        chosen = choose_step(target.name, workflow_steps(wf, args.attempt), None, args.step,
                             args.attempt)
    s.stream_logs(target.name, chosen, args.follow, args.tail, sys.stdout)
    return 0


def _status_field(s: Session, args: argparse.Namespace, field: str) -> int:
    target: Target = args.target
    _task_only(target, field)
    obj = s.get(target)
    st = obj.get("status") or {}
    value = st.get(field)
    if field == "outputs" and value:
        value = in_api_order(value, OUTPUT_KEYS)
    if not value:
        print(f"mltask {target.name} has no {field} (status {st.get('status') or 'init'})",
              file=sys.stderr)
        return 1
    print(dump(value, args.output))
    return 0


def cmd_outputs(s: Session, args: argparse.Namespace) -> int:
    return _status_field(s, args, "outputs")


def cmd_metrics(s: Session, args: argparse.Namespace) -> int:
    return _status_field(s, args, "metrics")


# ---------------------------------------------------------------------------------- parser


def _arg_type(parse: Callable[[str], T], metavar: str) -> Callable[[str], T]:
    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = metavar  # argparse names the type in its message
    return convert


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value}")
    return value


EXAMPLES = f"""examples:
  {PROG} list --type training --status failed
  {PROG} list pipelines -A
  {PROG} list --sort-by duration --limit 20
  {PROG} list --only-archived
  {PROG} list --status running -w
  {PROG} describe train-digits
  {PROG} stop train-digits
  {PROG} continue train-digits
  {PROG} retry pipeline/digits
  {PROG} archive train-digits
  {PROG} unarchive pipeline/digits
  {PROG} logs train-digits --step run -f
  {PROG} outputs train-digits -o json
"""


def build_parser() -> argparse.ArgumentParser:
    # Global flags are accepted before or after the command, as kubectl's are; SUPPRESS keeps a
    # command's parser from overwriting a value given before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    common.add_argument("--context", default=argparse.SUPPRESS,
                        help="kubeconfig context to use (default: the current context)")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                        help="namespace (default: the context's namespace, else default)")
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Act on MLTasks and Pipelines: list, describe, stop, continue, retry, "
        "archive, unarchive, logs, outputs, metrics. TARGET is an MLTask NAME, or pipeline/NAME "
        "(also mlp/NAME).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target = _arg_type(parse_target, "target")

    p = sub.add_parser("list", parents=[common], help="list MLTasks (or pipelines) in a table",
                       description="List MLTasks, or Pipelines with `list pipelines`; the "
                       "filters are field and label selectors the API server applies. Archived "
                       "ones (label mltask.dev/archived) are hidden unless --archived or "
                       "--only-archived.")
    p.add_argument("resource", nargs="?", default=MLTASK, metavar="RESOURCE",
                   type=_arg_type(parse_list_kind, "resource"),
                   help="mltasks (default) or pipelines")
    p.add_argument("--type", choices=[t.value for t in mltask_api.TaskType],
                   help="only tasks of this type")
    p.add_argument("--status", choices=[ph.value for ph in mltask_api.Phase],
                   help="only this status")
    p.add_argument("--pipeline", metavar="P", help="only the tasks of Pipeline P")
    p.add_argument("-l", "--selector", metavar="SELECTOR",
                   help="label selector, e.g. team=vision")
    p.add_argument("-A", "--all-namespaces", action="store_true",
                   help="list in every namespace")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--archived", dest="archived", action="store_const", const=SHOW,
                       default=HIDE, help="show archived ones too (hidden by default)")
    shown.add_argument("--only-archived", dest="archived", action="store_const", const=ONLY,
                       default=HIDE, help="show only archived ones")
    p.add_argument("--sort-by", choices=SORT_KEYS,
                   help="created (oldest first), duration (longest first), status (then name) "
                   "or name; with --limit, within the page (default: by namespace, then name, "
                   "as the API server returns them)")
    p.add_argument("--limit", type=_arg_type(_positive, "limit"), metavar="N",
                   help="list one page of N; when there are more, stderr gives the command for "
                   "the next page (--continue TOKEN)")
    p.add_argument("--continue", dest="continue_token", metavar="TOKEN",
                   help="the next page of a --limit listing: the token it printed")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after the table, print a row each time one is added or changes, "
                   "until Ctrl-C")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("describe", parents=[common], help="show status, steps, outputs, "
                       "metrics and conditions")
    p.add_argument("target", type=target, metavar="TARGET")
    p.set_defaults(func=cmd_describe)

    for name, func, text in (
            ("stop", cmd_stop, "stop a task or pipeline (spec.suspend: true)"),
            ("continue", cmd_continue, "continue a stopped task or pipeline (spec.suspend: "
             "false)"),
            ("retry", cmd_retry, "retry a failed, stopped or completed task, or a failed or "
             "stopped pipeline (spec.retryGeneration + 1)"),
            ("archive", cmd_archive, "archive a task or pipeline (spec.archived: true): it "
             "keeps its status, outputs and metrics and releases its Workflows, pods and "
             "working volume; an active one is stopped to be archived (spec.suspend: true)"),
            ("unarchive", cmd_unarchive, "unarchive an archived task or pipeline "
             "(spec.archived: false)")):
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("target", type=target, metavar="TARGET")
        p.set_defaults(func=func)

    p = sub.add_parser("logs", parents=[common], help="print a step's logs (container main)",
                       description="Print the logs of a step's pod (container main). Default "
                       "step: the one the task is at, else the last one that has a pod.")
    p.add_argument("target", type=target, metavar="NAME")
    p.add_argument("--step", choices=STEP_NAMES, help="download, run or upload")
    p.add_argument("--attempt", type=_arg_type(_positive, "attempt"),
                   help="an earlier attempt (default: the latest)")
    p.add_argument("-f", "--follow", action="store_true", help="stream the logs")
    p.add_argument("--tail", type=_arg_type(_non_negative, "tail"), metavar="N",
                   help="only the last N lines")
    p.set_defaults(func=cmd_logs)

    for name, func, text in (("outputs", cmd_outputs, "print status.outputs: the produced "
                              "dataset or model"),
                             ("metrics", cmd_metrics, "print status.metrics")):
        p = sub.add_parser(name, parents=[common], help=text, description=text)
        p.add_argument("target", type=target, metavar="NAME")
        p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
        p.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 1 a user or API error (one line on stderr), 2 bad usage."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, argparse printed it)
        return e.code if isinstance(e.code, int) else 2
    usage = list_usage_error(args) if args.command == "list" else None
    if usage:
        print(f"{PROG} list: {usage}", file=sys.stderr)
        return 2
    try:
        session = connect(getattr(args, "kubeconfig", None), getattr(args, "context", None),
                          getattr(args, "namespace", None))
        return int(args.func(session, args))
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `... | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
