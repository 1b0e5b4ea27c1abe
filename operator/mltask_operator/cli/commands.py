"""The commands, one function each, registered with `command` (its name, help and
arguments): list, describe, stop, continue, retry, archive, unarchive, logs, outputs,
metrics, run."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.builders.workflow import workflow_name
from mltask_operator.cli.argtypes import (
    arg_type,
    non_negative,
    output_arguments,
    positive,
    target_argument,
    task_argument,
)
from mltask_operator.cli.changes import (
    STEP_NAMES,
    Change,
    archive_change,
    choose_step,
    released_logs_message,
    retry_patch,
    suspend_change,
    workflow_steps,
)
from mltask_operator.cli.errors import ApiCallError, CliError, UsageError
from mltask_operator.cli.render import (
    OUTPUT_KEYS,
    SORT_KEYS,
    RowPrinter,
    describe_pipeline,
    describe_task,
    dump,
    gone_message,
    in_api_order,
    list_headers,
    list_row,
    next_page_hint,
    render_list,
    sort_items,
)
from mltask_operator.cli.runs import load_pipeline, parse_param, run_body
from mltask_operator.cli.session import Session
from mltask_operator.cli.targets import (
    HIDE,
    ONLY,
    PROG,
    SHOW,
    Target,
    check_not_owned,
    field_selector,
    label_selector,
    parse_list_kind,
)
from mltask_operator.kinds import MLTASK, PIPELINE, Kind

#: A retry re-reads and tries again this often when someone else changed the object meanwhile.
RETRY_CONFLICTS = 5


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, help, what it runs and the arguments it takes."""

    name: str
    run: Callable[[Session, argparse.Namespace], int]
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    #: What the command reads and checks before connecting (UsageError: exit 2).
    prepare: Callable[[argparse.Namespace], None] | None = None


#: Every command, in the order `--help` lists them.
COMMANDS: list[Command] = []


def command(name: str, help: str, *, description: str | None = None,
            arguments: Callable[[argparse.ArgumentParser], None] = target_argument,
            prepare: Callable[[argparse.Namespace], None] | None = None,
            ) -> Callable[[Callable[[Session, argparse.Namespace], int]],
                          Callable[[Session, argparse.Namespace], int]]:
    """Register the decorated function as the command `name` (by default it takes a
    TARGET; `prepare` runs before connecting)."""
    def register(run: Callable[[Session, argparse.Namespace], int]
                 ) -> Callable[[Session, argparse.Namespace], int]:
        COMMANDS.append(Command(name, run, help, description or help, arguments, prepare))
        return run
    return register


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource", nargs="?", default=MLTASK, metavar="RESOURCE",
                   type=arg_type(parse_list_kind, "resource"),
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
    p.add_argument("--limit", type=arg_type(positive, "limit"), metavar="N",
                   help="list one page of N; when there are more, stderr gives the command for "
                   "the next page (--continue TOKEN)")
    p.add_argument("--continue", dest="continue_token", metavar="TOKEN",
                   help="the next page of a --limit listing: the token it printed")
    p.add_argument("-w", "--watch", action="store_true",
                   help="after the table, print a row each time one is added or changes, "
                   "until Ctrl-C")


def _logs_arguments(p: argparse.ArgumentParser) -> None:
    task_argument(p)
    p.add_argument("--step", choices=STEP_NAMES, help="download, run or upload")
    p.add_argument("--attempt", type=arg_type(positive, "attempt"),
                   help="an earlier attempt (default: the latest)")
    p.add_argument("-f", "--follow", action="store_true", help="stream the logs")
    p.add_argument("--tail", type=arg_type(non_negative, "tail"), metavar="N",
                   help="only the last N lines")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@command("list", "list MLTasks (or pipelines) in a table",
         description="List MLTasks, or Pipelines with `list pipelines`; the filters are field "
         "and label selectors the API server applies. Archived ones (label "
         "mltask.dev/archived) are hidden unless --archived or --only-archived.",
         arguments=_list_arguments)
def cmd_list(s: Session, args: argparse.Namespace) -> int:
    kind: Kind = args.resource
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
        items = s.list_all(kind, args.all_namespaces, fields, labels)
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
    kind: Kind = args.resource
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


@command("describe", "show status, steps, outputs, metrics and conditions")
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


@command("stop", "stop a task or pipeline (spec.suspend: true)")
def cmd_stop(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "stop", lambda t, o: suspend_change(t, o, True))


@command("continue", "continue a stopped task or pipeline (spec.suspend: false)")
def cmd_continue(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "continue", lambda t, o: suspend_change(t, o, False))


@command("retry", "retry a failed, stopped or completed task, or a failed or stopped "
         "pipeline (spec.retryGeneration + 1)")
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


@command("archive", "archive a task or pipeline (spec.archived: true): it keeps its "
         "status, outputs and metrics and releases its Workflows, pods and working volume; an "
         "active one is stopped to be archived (spec.suspend: true)")
def cmd_archive(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "archive", lambda t, o: archive_change(t, o, True))


@command("unarchive", "unarchive an archived task or pipeline (spec.archived: false)")
def cmd_unarchive(s: Session, args: argparse.Namespace) -> int:
    return _change(s, args, "unarchive", lambda t, o: archive_change(t, o, False))


def _task_only(target: Target, command: str) -> None:
    if target.kind != MLTASK:
        raise CliError(f"{command} applies to an MLTask; a pipeline's tasks are MLTasks named "
                       f"<pipeline>-<task> ({PROG} describe {target} lists them)")


@command("logs", "print a step's logs (container main)",
         description="Print the logs of a step's pod (container main). Default step: the one "
         "the task is at, else the last one that has a pod.", arguments=_logs_arguments)
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


@command("outputs", "print status.outputs: the produced dataset or model",
         arguments=output_arguments)
def cmd_outputs(s: Session, args: argparse.Namespace) -> int:
    return _status_field(s, args, "outputs")


@command("metrics", "print status.metrics", arguments=output_arguments)
def cmd_metrics(s: Session, args: argparse.Namespace) -> int:
    return _status_field(s, args, "metrics")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--filename", required=True, metavar="FILE",
                   help="a YAML file of one Pipeline (apiVersion mltask.dev/v1alpha1); - reads "
                   "stdin")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="NAME=VALUE",
                   type=arg_type(parse_param, "param"),
                   help="set parameter NAME's value (spec.parameters[].value) for this run, "
                   "checked against its type and enum; repeat for each parameter")
    p.add_argument("--name", help="the new Pipeline's exact name (default: generated from "
                   "FILE's metadata.name)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the Pipeline that would be created, as YAML, once the API "
                   "server checked it (server-side dry run, dryRun=All); create nothing")


def _read_run(args: argparse.Namespace) -> None:
    """Read FILE and build the Pipeline to create (args.pipeline), before any API call."""
    source = "stdin" if args.filename == "-" else args.filename
    try:
        if args.filename == "-":
            text = sys.stdin.read()
        else:
            with open(args.filename, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {source}: {e}") from None
    args.pipeline = run_body(load_pipeline(text, source), args.params, args.name, source)


@command("run", "create a new Pipeline from a file, with parameter values "
         "(--param NAME=VALUE)",
         description="Create a new Pipeline from the one in FILE, which is left as it is. Its "
         "name is generated, <FILE's metadata.name>-<5 random characters> "
         "(metadata.generateName), unless --name gives one. Each --param NAME=VALUE sets the "
         "value of parameter NAME, checked against the parameter's type and enum before "
         "anything is sent. The namespace: -n, else FILE's metadata.namespace, else the "
         "context's.",
         arguments=_run_arguments, prepare=_read_run)
def cmd_run(s: Session, args: argparse.Namespace) -> int:
    body: dict[str, Any] = args.pipeline
    meta = body["metadata"]
    meta["namespace"] = getattr(args, "namespace", None) or meta.get("namespace") or s.namespace
    resource = f"{PIPELINE.singular}.{PIPELINE.group}"
    try:
        created = s.create(PIPELINE, body, dry_run=args.dry_run)
    except ApiCallError as e:
        if e.status == 409 and meta.get("name"):
            raise CliError(f"{e}: choose another --name, or leave --name out for a "
                           "generated name") from e
        raise
    if args.dry_run:
        print(dump(body, "yaml"))
        shown = meta.get("name") or f"{meta['generateName']}<random>"
        print(f"{resource}/{shown} checked by the API server (server dry run): nothing "
              f"created in namespace {meta['namespace']}", file=sys.stderr)
        return 0
    print(f"{resource}/{created['metadata']['name']} created")
    for name, value in args.params:
        print(f"  {name}={value}")
    return 0
