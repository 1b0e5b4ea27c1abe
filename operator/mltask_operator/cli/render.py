"""Pure rendering: kubectl-style tables, ages and durations, describe, what `list -w` prints,
and the outputs as YAML or JSON."""

from __future__ import annotations

import argparse
import codecs
import datetime
import json
import shlex
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

import yaml

from mltask_operator.api.v1alpha1 import mltask as mltask_api
from mltask_operator.api.v1alpha1.mltask import INPUT_KINDS, input_upstreams
from mltask_operator.cli.printable import PrintableStream, printable
from mltask_operator.cli.targets import HIDE, PROG, SHOW
from mltask_operator.kinds import PIPELINE, Kind
from mltask_operator.labels import ARCHIVED as ARCHIVED_LABEL
from mltask_operator.status_common import parse_duration, parse_time

NONE = "<none>"


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
    return " ".join(printable(value).split()) if isinstance(value, str) else str(value)


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


TASK_HEADERS = ["NAME", "TYPE", "STATUS", "STEP", "PROGRESS", "ATTEMPT", "AGE", "DURATION"]


PIPELINE_HEADERS = ["NAME", "STATUS", "PROGRESS", "AGE", "DURATION"]


def task_row(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    st = obj.get("status") or {}
    return [obj["metadata"]["name"], (obj.get("spec") or {}).get("type"), st.get("status"),
            st.get("executeStep"), st.get("progress"), st.get("attempt"), age(obj, now),
            st.get("duration")]


def pipeline_row(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    st = obj.get("status") or {}
    return [obj["metadata"]["name"], st.get("status"), st.get("progress"), age(obj, now),
            st.get("duration")]


def list_headers(kind: Kind, all_namespaces: bool = False) -> list[str]:
    headers = PIPELINE_HEADERS if kind == PIPELINE else TASK_HEADERS
    return ["NAMESPACE", *headers] if all_namespaces else list(headers)


def list_row(kind: Kind, obj: dict[str, Any], now: datetime.datetime,
             all_namespaces: bool = False) -> list[Any]:
    row = (pipeline_row if kind == PIPELINE else task_row)(obj, now)
    return [obj["metadata"].get("namespace"), *row] if all_namespaces else row


def render_list(kind: Kind, items: Sequence[dict[str, Any]], now: datetime.datetime,
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


def gone_message(kind: Kind, obj: dict[str, Any], current: dict[str, Any] | None,
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
    return "\n".join(f"  {cell(k)}: {cell(v)}" for k, v in values.items())


def _conditions(conditions: list[dict[str, Any]] | None) -> str | None:
    if not conditions:
        return None
    return render_table(["TYPE", "STATUS", "REASON", "LAST TRANSITION", "MESSAGE"],
                        ([c.get("type"), c.get("status"), c.get("reason"),
                          c.get("lastTransitionTime"), c.get("message")] for c in conditions),
                        indent="  ")


def _input_text(spec: dict[str, Any]) -> str | None:
    inp = spec.get("input") or {}
    refs = input_upstreams(inp)
    parts = []
    for what in INPUT_KINDS:
        uri = (inp.get(what) or {}).get("uri")
        if uri:
            parts.append(f"{what} {uri}")
        elif what in refs:
            parts.append(f"{what} from task {refs[what]}")
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
        ("Progress", st.get("progress")),
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
             + "\n".join(f"    {line}" for line in printable(s["logTail"]).splitlines())
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
    """Copy a log stream to `out` as text without terminal escape sequences (printable); a
    UTF-8 character or an escape sequence split across chunks stays whole."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    clean = PrintableStream()
    for chunk in chunks:
        text = clean.feed(decoder.decode(chunk))
        if text:
            out.write(text)
            out.flush()
    out.write(clean.feed(decoder.decode(b"", final=True)) + clean.close())
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
