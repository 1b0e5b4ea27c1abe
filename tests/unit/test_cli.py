"""The kubectl plugin's pure parts: targets, selectors, tables, sorting, paging, the watch, the
retry and archive patches, which step's pod to read, errors and usage errors; no cluster."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import shlex
from typing import Any

import pytest
import yaml

from harness import argo_standin as argo
from harness.cases import Case
from harness.tasks import REPO, example
from mltask_operator import cli, kinds
from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders.workflow import ResolvedInputs, build_workflow
from mltask_operator.cli import changes, commands, errors, parser, render, targets
from mltask_operator.mltask_status import pod_name

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def ago(seconds: int) -> str:
    return (NOW - datetime.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------- targets

TARGETS = [
    Case("bare name is an MLTask", "train-digits", targets.Target(kinds.MLTASK, "train-digits")),
    Case("mltask/", "mltask/x", targets.Target(kinds.MLTASK, "x")),
    Case("mlt/", "mlt/x", targets.Target(kinds.MLTASK, "x")),
    Case("mltasks/", "mltasks/x", targets.Target(kinds.MLTASK, "x")),
    Case("fully qualified", "mltasks.mltask.dev/x", targets.Target(kinds.MLTASK, "x")),
    Case("pipeline/", "pipeline/digits", targets.Target(kinds.PIPELINE, "digits")),
    Case("pipelines/", "pipelines/digits", targets.Target(kinds.PIPELINE, "digits")),
    Case("mlp/", "mlp/digits", targets.Target(kinds.PIPELINE, "digits")),
    Case("type is case-insensitive", "Pipeline/digits", targets.Target(kinds.PIPELINE, "digits")),
    Case("unknown type", "pod/x", error="unknown resource type 'pod'"),
    Case("no name", "pipeline/", error="names no object"),
    Case("two slashes", "a/pipeline/x", error="unknown resource type"),
    Case("empty", "", error="names no object"),
]


@pytest.mark.parametrize("case", TARGETS, ids=lambda c: c.name)
def test_parse_target(case: Case) -> None:
    if case.error:
        with pytest.raises(ValueError, match=case.error):
            targets.parse_target(case.given)
    else:
        assert targets.parse_target(case.given) == case.expected


def test_target_prints_as_kind_slash_name() -> None:
    assert str(targets.parse_target("mlp/digits")) == "pipeline/digits"
    assert str(targets.parse_target("x")) == "mltask/x"


# ----------------------------------------------------------------------------- selectors

SELECTORS = [
    Case("no filter", {}, None),
    Case("type", {"type_": "training"}, "spec.type=training"),
    Case("status", {"status": "failed"}, "status.status=failed"),
    Case("pipeline", {"pipeline": "digits"}, "spec.pipelineRef.name=digits"),
    Case("all three, in order", {"type_": "training", "status": "failed", "pipeline": "p"},
         "spec.type=training,status.status=failed,spec.pipelineRef.name=p"),
    Case("escaped", {"pipeline": "a,b=c\\d"}, "spec.pipelineRef.name=a\\,b\\=c\\\\d"),
]


@pytest.mark.parametrize("case", SELECTORS, ids=lambda c: c.name)
def test_field_selector(case: Case) -> None:
    assert targets.field_selector(**case.given) == case.expected


def test_field_selector_paths_are_selectable_fields_of_the_crd() -> None:
    """Every path the filters use is one the CRD declares selectable, so the API server (not
    the plugin) filters; a path missing from the CRD would make every list fail."""
    from mltask_operator.api.v1alpha1 import mltask as api

    used = targets.field_selector(type_="t", status="s", pipeline="p")
    assert used is not None
    paths = {f".{term.split('=')[0]}" for term in used.split(",")}
    assert paths <= set(api.SELECTABLE_FIELDS)
    crd = yaml.safe_load((REPO / "crds" / "mltask.dev_mltasks.yaml").read_text())
    declared = {f["jsonPath"] for v in crd["spec"]["versions"] for f in v["selectableFields"]}
    assert paths <= declared


LABELS = [
    Case("archived ones hidden by default", (None, targets.HIDE), "!mltask.dev/archived"),
    Case("-l and hidden", ("team=vision", targets.HIDE), "team=vision,!mltask.dev/archived"),
    Case("--archived: the user's -l alone", ("team=vision", targets.SHOW), "team=vision"),
    Case("--archived without -l: no selector", (None, targets.SHOW), None),
    Case("--only-archived", (None, targets.ONLY), "mltask.dev/archived"),
    Case("--only-archived and a set-based -l", ("env in (a,b)", targets.ONLY),
         "env in (a,b),mltask.dev/archived"),
    Case("a -l naming the archived label decides alone", ("mltask.dev/archived=true", targets.HIDE),
         "mltask.dev/archived=true"),
]


@pytest.mark.parametrize("case", LABELS, ids=lambda c: c.name)
def test_label_selector(case: Case) -> None:
    assert targets.label_selector(*case.given) == case.expected


def test_the_archived_label_is_the_operators() -> None:
    from mltask_operator import labels

    assert targets.label_selector(None, targets.ONLY) == labels.ARCHIVED


CONTEXTS = [
    {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "ml-dev"}},
    {"name": "prod", "context": {"cluster": "c", "user": "u"}},
]
NAMESPACES = [
    Case("current context's namespace", (CONTEXTS[0], None), "ml-dev"),
    Case("current context without one", (CONTEXTS[1], None), "default"),
    Case("--context wins over the current one", (CONTEXTS[1], "dev"), "ml-dev"),
    Case("--context without a namespace", (CONTEXTS[0], "prod"), "default"),
    Case("no current context", (None, None), "default"),
]


@pytest.mark.parametrize("case", NAMESPACES, ids=lambda c: c.name)
def test_context_namespace(case: Case) -> None:
    active, wanted = case.given
    assert targets.context_namespace(CONTEXTS, active, wanted) == case.expected


# -------------------------------------------------------------------------------- tables

DURATIONS = [
    Case("seconds", 45, "45s"), Case("under two minutes", 119, "119s"),
    Case("minutes and seconds", 200, "3m20s"), Case("whole minutes", 180, "3m"),
    Case("ten minutes and up", 15 * 60 + 30, "15m"), Case("three hours", 3 * 3600, "3h"),
    Case("hours and minutes", 5 * 3600 + 4 * 60, "5h4m"), Case("hours", 20 * 3600, "20h"),
    Case("days and hours", 3 * 86400 + 4 * 3600, "3d4h"), Case("days", 30 * 86400, "30d"),
    Case("years and days", (2 * 365 + 10) * 86400, "2y10d"),
    Case("clock skew", -1, "0s"), Case("future", -5, "<invalid>"),
]


@pytest.mark.parametrize("case", DURATIONS, ids=lambda c: c.name)
def test_human_duration_as_kubectl(case: Case) -> None:
    assert render.human_duration(case.given) == case.expected


def task_obj(name: str, type_: str, status: dict[str, Any] | None, created: int = 300,
             namespace: str = "ml") -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace,
                                        "creationTimestamp": ago(created)},
                           "spec": {"type": type_}}
    if status is not None:
        obj["status"] = status
    return obj


def test_render_list_of_tasks() -> None:
    items = [
        task_obj("train-digits", "training", {"status": "running", "executeStep": "run_task",
                                                "progress": "12/40", "attempt": 1,
                                                "duration": "2m3s"}),
        task_obj("preprocess", "preprocessing", None, created=30),
    ]
    assert render.render_list(kinds.MLTASK, items, NOW).splitlines() == [
        "NAME           TYPE            STATUS    STEP       PROGRESS   ATTEMPT   AGE   DURATION",
        "train-digits   training        running   run_task   12/40      1         5m    2m3s",
        "preprocess     preprocessing   <none>    <none>     <none>     <none>    30s   <none>",
    ]


def test_render_list_all_namespaces_puts_namespace_first() -> None:
    items = [task_obj("a", "training", {"status": "failed"}, namespace="team-a")]
    header, row = render.render_list(kinds.MLTASK, items, NOW, all_namespaces=True).splitlines()
    assert header.split() == ["NAMESPACE", *render.TASK_HEADERS]
    assert row.split()[:4] == ["team-a", "a", "training", "failed"]


def test_render_list_of_pipelines() -> None:
    pipe = {"metadata": {"name": "digits", "creationTimestamp": ago(7200)},
            "status": {"status": "running", "progress": "1/3", "duration": "1h"}}
    assert render.render_list(kinds.PIPELINE, [pipe], NOW).splitlines() == [
        "NAME     STATUS    PROGRESS   AGE    DURATION",
        "digits   running   1/3        120m   1h",
    ]


TABLE_CELLS = [
    Case("None", None, "<none>"), Case("empty", "", "<none>"), Case("zero", 0, "0"),
    Case("bool", False, "false"), Case("multi-line message", "a\n  b", "a b"),
]


@pytest.mark.parametrize("case", TABLE_CELLS, ids=lambda c: c.name)
def test_cell(case: Case) -> None:
    assert render.cell(case.given) == case.expected


def test_render_table_rejects_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError):
        render.render_table(["A", "B"], [["only one"]])


def test_rows_printed_later_keep_the_tables_columns_and_widen_them() -> None:
    printer = render.RowPrinter(["NAME", "STATUS"])
    assert printer.table([["a", "running"]]).splitlines() == ["NAME   STATUS", "a      running"]
    assert printer.row(["b", None]) == "b      <none>"
    assert printer.row(["a-much-longer-name", "failed"]) == "a-much-longer-name   failed"
    assert printer.row(["c", "ok"]) == "c                    ok", "wider from then on"
    with pytest.raises(ValueError):
        printer.row(["x"])


# ------------------------------------------------------------------------------- sorting


def listed(name: str, created: int | None = None, status: str | None = None,
           duration: str | None = None, namespace: str = "ml") -> dict[str, Any]:
    o: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace}}
    if created is not None:
        o["metadata"]["creationTimestamp"] = ago(created)
    st = {k: v for k, v in (("status", status), ("duration", duration)) if v is not None}
    if st:
        o["status"] = st
    return o


UNSORTED = [  # as the API returned them
    listed("b", created=100, status="running", duration="2m0s"),
    listed("a", created=50, status="failed", duration="1h2m3s"),
    listed("d", created=300, status="completed", duration="59s"),
    listed("c", created=200),
    listed("e", created=300, status="failed", duration="0s"),
    listed("f", status="init"),
]
SORTS = [
    Case("no --sort-by: the API's order", (UNSORTED, None), ["b", "a", "d", "c", "e", "f"]),
    Case("created: oldest first, ties in the API's order, none last", (UNSORTED, "created"),
         ["d", "e", "c", "b", "a", "f"]),
    Case("duration: longest first, 0s before none", (UNSORTED, "duration"),
         ["a", "b", "d", "e", "c", "f"]),
    Case("status, then name; none last", (UNSORTED, "status"), ["d", "a", "e", "f", "b", "c"]),
    Case("name", (UNSORTED, "name"), ["a", "b", "c", "d", "e", "f"]),
    Case("name across namespaces (-A)", ([listed("y", namespace="n1"),
                                          listed("x", namespace="n2"),
                                          listed("x", namespace="n1")], "name"),
         ["n1/x", "n2/x", "n1/y"]),
    Case("status across namespaces: then name, then namespace",
         ([listed("x", status="failed", namespace="n2"), listed("x", status="failed",
                                                                namespace="n1")], "status"),
         ["n1/x", "n2/x"]),
]


@pytest.mark.parametrize("case", SORTS, ids=lambda c: c.name)
def test_sort_items(case: Case) -> None:
    items, by = case.given
    names = [o["metadata"]["name"] for o in render.sort_items(items, by)]
    if "/" in case.expected[0]:
        names = [f"{o['metadata']['namespace']}/{o['metadata']['name']}"
                 for o in render.sort_items(items, by)]
    assert names == case.expected
    assert [o["metadata"]["name"] for o in items] == [o["metadata"]["name"]
                                                      for o in case.given[0]], "not in place"


def test_sort_by_an_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown --sort-by 'age'"):
        render.sort_items(UNSORTED, "age")


# -------------------------------------------------------------------------------- paging

TOKEN = "eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6MTIzLCJzdGFydCI6ImEifQ=="
HINTS = [
    Case("the namespace made explicit", ["list", "--limit", "3"],
         f"kubectl mltask list -n ml --limit 3 --continue {TOKEN}"),
    Case("every flag, quoted to paste",
         ["--kubeconfig", "/k/my config", "--context", "dev", "list", "pipelines", "--status",
          "failed", "-l", "team in (a,b)", "--sort-by", "name", "--only-archived", "--limit",
          "5", "--continue", "OLD"],
         "kubectl mltask --kubeconfig '/k/my config' --context dev list pipelines -n ml "
         f"--status failed -l 'team in (a,b)' --sort-by name --only-archived --limit 5 "
         f"--continue {TOKEN}"),
    Case("-A and the task filters", ["-n", "x", "list", "-A", "--type", "training",
                                     "--pipeline", "p", "--archived", "--limit", "2"],
         f"kubectl mltask list -A --type training --pipeline p --archived --limit 2 "
         f"--continue {TOKEN}"),
]


@pytest.mark.parametrize("case", HINTS, ids=lambda c: c.name)
def test_next_page_hint_is_the_same_listing_continued(case: Case) -> None:
    args = parser.build_parser().parse_args(case.given)
    head, command = render.next_page_hint(args, "ml", TOKEN).splitlines()
    assert head == f"More {args.resource.plural}: the next page with"
    assert command == "  " + case.expected
    again = vars(parser.build_parser().parse_args(shlex.split(command)[2:]))
    assert again.pop("continue_token") == TOKEN
    assert again.pop("namespace", "ml") == "ml"
    before = vars(args)
    before.pop("continue_token")
    before.pop("namespace", None)
    assert again == before


def test_next_page_hint_says_how_many_are_left() -> None:
    args = parser.build_parser().parse_args(["list", "pipelines", "--limit", "3"])
    assert render.next_page_hint(args, "ml", "t", remaining=4).splitlines()[0] == (
        "More pipelines (4 left): the next page with")


class PageSession:
    """A Session whose list_page returns `page`, or raises it."""

    namespace = "ml"

    def __init__(self, page: Any) -> None:
        self.page = page
        self.asked: list[tuple[Any, ...]] = []

    def list_page(self, kind, every, fields, labels, limit, token):
        self.asked.append((kind, every, fields, labels, limit, token))
        if isinstance(self.page, Exception):
            raise self.page
        return self.page


PAGES = [
    Case("a page and the next one's command, sorted within the page",
         ({"items": [listed("b", status="failed"), listed("a", status="completed")],
           "metadata": {"continue": "T1", "remainingItemCount": 3}},
          ["list", "--limit", "2", "--sort-by", "status"]),
         (["a", "b"], "More mltasks (3 left): the next page with\n"
          "  kubectl mltask list -n ml --sort-by status --limit 2 --continue T1\n")),
    Case("the last page: no hint",
         ({"items": [listed("c")], "metadata": {}}, ["list", "--limit", "2", "--continue", "T1"]),
         (["c"], "")),
    Case("an empty page with more to come: only the hint",
         ({"items": [], "metadata": {"continue": "T2"}}, ["list", "--limit", "2"]),
         ([], "More mltasks: the next page with\n"
          "  kubectl mltask list -n ml --limit 2 --continue T2\n")),
    Case("nothing at all",
         ({"items": [], "metadata": {}}, ["list", "--limit", "2"]),
         ([], "No mltasks found in namespace ml.\n")),
]


@pytest.mark.parametrize("case", PAGES, ids=lambda c: c.name)
def test_list_one_page(case: Case, monkeypatch, capsys) -> None:
    page, argv = case.given
    names, err = case.expected
    session = PageSession(page)
    monkeypatch.setattr(cli, "connect", lambda *a: session)
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert [line.split()[0] for line in out.out.splitlines()[1:]] == names
    assert out.err == err
    args = parser.build_parser().parse_args(argv)
    assert session.asked == [(kinds.MLTASK, False, None, "!mltask.dev/archived", args.limit,
                              args.continue_token)]


def test_an_expired_continue_token_says_to_start_again(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: PageSession(errors.ApiCallError("x", 410)))
    assert cli.main(["list", "--limit", "2", "--continue", "old"]) == 1
    assert capsys.readouterr().err == (
        "error: the --continue token has expired (the API server keeps a listing for a few "
        "minutes): list again from the first page, without --continue\n")


LINES = [
    Case("one event a line", [b'{"type": "ADDED"}\n{"type": "DELETED"}\n'],
         [{"type": "ADDED"}, {"type": "DELETED"}]),
    Case("a line split across chunks", [b'{"type": "MOD', b'IFIED", "o": "\xc3', b'\xa9"}\n'],
         [{"type": "MODIFIED", "o": "é"}]),
    Case("blank lines skipped", [b"\n", b'{"a": 1}\n\n'], [{"a": 1}]),
    Case("an unfinished last line left out", [b'{"a": 1}\n{"a": '], [{"a": 1}]),
    Case("nothing", [], []),
]


@pytest.mark.parametrize("case", LINES, ids=lambda c: c.name)
def test_json_lines(case: Case) -> None:
    assert list(render.json_lines(case.given)) == case.expected


# --------------------------------------------------------------------------------- watch


def watched(name: str, rv: str, status: str | None = None,
            labels: dict[str, str] | None = None) -> dict[str, Any]:
    o = task_obj(name, "training", {"status": status} if status else None)
    o["metadata"]["resourceVersion"] = rv
    if labels:
        o["metadata"]["labels"] = labels
    return o


GONES = [
    Case("not found: deleted", (watched("a", "1"), None, targets.HIDE, False), "mltask/a deleted"),
    Case("-A names the namespace", (watched("a", "1"), None, targets.HIDE, True),
         "mltask/a in namespace ml deleted"),
    Case("archived while hidden",
         (watched("a", "1"), watched("a", "2", labels={"mltask.dev/archived": "true"}),
          targets.HIDE, False),
         "mltask/a archived: hidden from now on (--archived shows archived ones)"),
    Case("out of --status", (watched("a", "1", "running"), watched("a", "2", "completed"),
                             targets.SHOW, False),
         "mltask/a no longer matches the filters (status completed)"),
    Case("unarchived under --only-archived", (watched("a", "1"), watched("a", "2", "failed"),
                                              targets.ONLY, False),
         "mltask/a no longer matches the filters (status failed)"),
]


@pytest.mark.parametrize("case", GONES, ids=lambda c: c.name)
def test_gone_message(case: Case) -> None:
    obj, current, archived, every = case.given
    assert render.gone_message(kinds.MLTASK, obj, current, archived, every) == case.expected


class WatchSession:
    """A Session that lists and watches from scripts: each watch is a list of events, or an
    exception its request raises; when the scripts run out, Ctrl-C."""

    namespace = "ml"

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]],
                 watches: list[Any], found: dict[str, dict[str, Any]]) -> None:
        self.lists, self.watches, self.found = lists, watches, found
        self.selectors: list[tuple[Any, Any]] = []
        self.opened: list[str] = []

    def list_snapshot(self, kind, every, fields, labels):
        self.selectors.append((fields, labels))
        return self.lists.pop(0)

    def watch(self, kind, every, fields, labels, resource_version):
        self.selectors.append((fields, labels))
        self.opened.append(resource_version)
        if not self.watches:
            raise KeyboardInterrupt
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        yield from script

    def find(self, kind, namespace, name):
        return self.found.get(name)


def test_watch_prints_changes_reopens_and_lists_again_when_too_old(monkeypatch,
                                                                    capsys) -> None:
    archived = watched("a", "15", labels={"mltask.dev/archived": "true"})
    session = WatchSession(
        lists=[([watched("a", "1")], "10"),
               ([watched("c", "20")], "21"),
               ([watched("d", "22")], "23")],
        watches=[
            [{"type": "ADDED", "object": watched("b", "11")},
             {"type": "MODIFIED", "object": watched("a", "12", "running")},
             {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "13"}}}],
            [],  # the server ended a watch at once
            [{"type": "DELETED", "object": watched("b", "14")},
             {"type": "DELETED", "object": watched("a", "15")},
             {"type": "ERROR", "object": {"kind": "Status", "code": 410,
                                          "message": "too old resource version"}}],
            errors.ApiCallError("gone", 410),  # the watch request itself: too old
        ],
        found={"a": archived})
    slept: list[float] = []
    monkeypatch.setattr(commands.time, "sleep", slept.append)
    monkeypatch.setattr(commands, "_now", lambda: NOW)
    monkeypatch.setattr(cli, "connect", lambda *a: session)
    assert cli.main(["list", "-w", "--status", "running"]) == 0, "Ctrl-C ends it"
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == render.TASK_HEADERS
    assert [line.split()[:3] if "/" not in line else line for line in lines[1:]] == [
        ["a", "training", "<none>"],
        ["b", "training", "<none>"],
        ["a", "training", "running"],
        "mltask/b deleted",
        "mltask/a archived: hidden from now on (--archived shows archived ones)",
        ["c", "training", "<none>"],   # listed again: new since
        ["d", "training", "<none>"],   # listed again: new since
        "mltask/c deleted",            # and c went meanwhile
    ]
    assert session.opened == ["10", "13", "13", "21", "23"], "each from the last version seen"
    assert slept == [1], "only after the watch that ended at once"
    assert set(session.selectors) == {("status.status=running", "!mltask.dev/archived")}


def test_watch_with_nothing_yet_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: WatchSession([([], "5")], [], {}))
    assert cli.main(["list", "pipelines", "-w"]) == 0
    assert capsys.readouterr() == ("", "No pipelines found in namespace ml yet; watching.\n")


def test_a_watch_error_is_one_line_exit_1(monkeypatch, capsys) -> None:
    session = WatchSession([([], "5")], [[{"type": "ERROR", "object": {
        "kind": "Status", "code": 500, "message": "internal error"}}]], {})
    monkeypatch.setattr(cli, "connect", lambda *a: session)
    assert cli.main(["list", "-w"]) == 1
    assert capsys.readouterr().err.endswith(
        "error: the watch of mltasks.mltask.dev failed: internal error\n")


# ------------------------------------------------------------------------------ describe

COMPLETED = {
    "metadata": {"name": "train-digits", "namespace": "ml"},
    "spec": {"type": "training", "retryGeneration": 1,
             "input": {"dataset": {"uri": "s3://d/digits-minmax.npz", "kind": "project"}}},
    "status": {
        "status": "completed", "executeStep": "done", "attempt": 2, "message": "Completed",
        "workflowName": "train-digits-2", "startTime": "2026-11-23T11:00:00Z",
        "completionTime": "2026-11-23T11:40:00Z", "duration": "40m",
        "steps": [
            {"name": "download", "phase": "Succeeded", "attempt": 2, "retries": 0,
             "pod": "train-digits-2-download-1", "startedAt": "2026-11-23T11:00:00Z",
             "finishedAt": "2026-11-23T11:01:00Z", "exitCode": 0},
            {"name": "run", "phase": "Succeeded", "attempt": 2, "retries": 1,
             "pod": "train-digits-2-run-2", "exitCode": 0},
            {"name": "upload", "phase": "Succeeded", "attempt": 2, "pod": "train-digits-2-up-3"},
        ],
        "outputs": {"kind": "model", "name": "digits-mlp", "uri": "s3://m/model.joblib",
                    "size": 10},
        "metrics": {"accuracy": 0.93, "loss": 0.2},
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed",
                        "message": "Completed", "lastTransitionTime": "2026-11-23T11:40:00Z"}],
    },
}


def fields(text: str) -> dict[str, str]:
    """The `Key:  value` lines of a describe (before its first section), values aligned."""
    lines = text.splitlines()
    head = lines[:next(i for i, line in enumerate(lines) if line.endswith(":"))]
    starts = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in head}
    assert len(starts) == 1, f"values not aligned: {head}"
    return {k: v.strip() for k, v in (line.split(":", 1) for line in head)}


def test_describe_task_shows_state_steps_outputs_metrics_conditions() -> None:
    text = render.describe_task(COMPLETED)
    lines = text.splitlines()
    head = fields(text)
    assert (head["Status"], head["Step"], head["Attempt"]) == ("completed", "done", "2")
    assert head["Retry Generation"] == "1" and head["Suspend"] == "false"
    assert head["Input"] == "dataset s3://d/digits-minmax.npz"
    assert head["Completion Time"] == "2026-11-23T11:40:00Z" and head["Duration"] == "40m"
    steps = lines.index("Steps:")
    assert lines[steps + 1].split() == ["STEP", "PHASE", "ATTEMPT", "RETRIES", "POD", "STARTED",
                                        "FINISHED", "EXIT", "MESSAGE"]
    assert lines[steps + 3].split() == ["run", "Succeeded", "2", "1", "train-digits-2-run-2",
                                        "<none>", "<none>", "0", "<none>"]
    assert lines[lines.index("Outputs:") + 3] == "  uri: s3://m/model.joblib"
    assert lines[lines.index("Metrics:") + 1] == "  accuracy: 0.93"
    assert lines[lines.index("Conditions:") + 2].split()[:3] == ["Succeeded", "True", "Completed"]


def test_describe_new_task_says_none() -> None:
    text = render.describe_task({"metadata": {"name": "x"}, "spec": {"type": "training"}})
    for section in ("Steps", "Outputs", "Metrics", "Conditions"):
        assert f"{section}:  <none>" in text.splitlines()


def test_describe_pipeline_has_a_row_per_task() -> None:
    pipe = {"metadata": {"name": "digits", "namespace": "ml"},
            "spec": {"suspend": True, "tasks": []},
            "status": {"status": "stopped", "progress": "1/3", "retryPending": ["train"],
                       "tasks": [
                           {"name": "preprocess", "mltask": "digits-preprocess",
                            "status": "completed", "executeStep": "done", "attempt": 1,
                            "outputUri": "s3://d/x.zip"},
                           {"name": "train", "mltask": "digits-train", "status": "stopped",
                            "executeStep": "run_task", "attempt": 1, "message": "Stopped"},
                           {"name": "optimize", "status": "failed", "reason": "TaskNameTaken",
                            "message": "taken"}]}}
    text = render.describe_pipeline(pipe)
    lines = text.splitlines()
    head = fields(text)
    assert (head["Status"], head["Progress"], head["Suspend"]) == ("stopped", "1/3", "true")
    assert head["Retry Pending"] == "train" and head["Message"] == "<none>"
    rows = lines[lines.index("Tasks:") + 2:lines.index("Tasks:") + 5]
    assert rows[0].split() == ["preprocess", "digits-preprocess", "completed", "done", "1",
                               "s3://d/x.zip", "<none>"]
    assert rows[2].split() == ["optimize", "<none>", "failed", "<none>", "<none>", "<none>",
                               "TaskNameTaken:", "taken"]


# ------------------------------------------------------------------- stop, continue, retry

T = targets.Target(kinds.MLTASK, "t")
P = targets.Target(kinds.PIPELINE, "p")


def obj(status: str | None, suspend: bool = False, retry_generation: int | None = None,
        rv: str = "42", archived: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"suspend": suspend}
    if archived is not None:
        spec["archived"] = archived
    if retry_generation is not None:
        spec["retryGeneration"] = retry_generation
    o: dict[str, Any] = {"metadata": {"name": "t", "resourceVersion": rv}, "spec": spec}
    if status is not None:
        o["status"] = {"status": status}
    return o


RETRIES = [
    Case("failed task", (T, obj("failed", retry_generation=2)),
         ({"metadata": {"resourceVersion": "42"},
           "spec": {"suspend": False, "retryGeneration": 3}}, 3)),
    Case("stopped task: un-suspended too", (T, obj("stopped", suspend=True)),
         ({"metadata": {"resourceVersion": "42"},
           "spec": {"suspend": False, "retryGeneration": 1}}, 1)),
    Case("completed task", (T, obj("completed", retry_generation=0, rv="7")),
         ({"metadata": {"resourceVersion": "7"},
           "spec": {"suspend": False, "retryGeneration": 1}}, 1)),
    Case("failed pipeline", (P, obj("failed", retry_generation=1)),
         ({"metadata": {"resourceVersion": "42"},
           "spec": {"suspend": False, "retryGeneration": 2}}, 2)),
    *(Case(f"{s} task refused", (T, obj(s)), error=f"still active \\({s}\\)")
      for s in ("init", "running", "retry", "stopping")),
    Case("running task: stop it first", (T, obj("running")),
         error="stop it first \\(kubectl mltask stop mltask/t\\)"),
    Case("stopping task: wait", (T, obj("stopping")), error="wait until it is stopped"),
    Case("running pipeline refused", (P, obj("running")), error="pipeline p is still active"),
    Case("completed pipeline: nothing to retry", (P, obj("completed")),
         error="pipeline p is completed"),
    Case("no status yet", (T, obj(None)), error="has no status yet"),
    Case("archived task: unarchive first", (T, obj("failed", archived=True)),
         error="mltask/t is archived \\(spec.archived\\): unarchive it first "
         "\\(kubectl mltask unarchive mltask/t\\), then retry it"),
    Case("archived pipeline: unarchive first", (P, obj("stopped", suspend=True, archived=True)),
         error="kubectl mltask unarchive pipeline/p"),
    Case("unarchived: retried", (T, obj("completed", archived=False)),
         ({"metadata": {"resourceVersion": "42"},
           "spec": {"suspend": False, "retryGeneration": 1}}, 1)),
]


@pytest.mark.parametrize("case", RETRIES, ids=lambda c: c.name)
def test_retry_patch(case: Case) -> None:
    if case.error:
        with pytest.raises(errors.CliError, match=case.error):
            changes.retry_patch(*case.given)
    else:
        assert changes.retry_patch(*case.given) == case.expected


SUSPENDS = [
    Case("stop running", (T, obj("running"), True), {"spec": {"suspend": True}}),
    Case("stop init", (P, obj("init"), True), {"spec": {"suspend": True}}),
    Case("stop again: nothing to send", (T, obj("stopping", suspend=True), True), None),
    Case("stop completed refused", (T, obj("completed"), True), error="has ended \\(completed"),
    Case("stop failed refused, says retry", (T, obj("failed"), True),
         error="kubectl mltask retry mltask/t"),
    Case("continue stopped", (T, obj("stopped", suspend=True), False),
         {"spec": {"suspend": False}}),
    Case("continue a running one: nothing to send", (T, obj("running"), False), None),
    Case("continue an archived one refused", (T, obj("stopped", suspend=True, archived=True),
                                              False),
         error="unarchive it first \\(kubectl mltask unarchive mltask/t\\), then continue"),
    Case("continue an archived pipeline refused", (P, obj("stopped", suspend=True,
                                                          archived=True), False),
         error="kubectl mltask unarchive pipeline/p"),
    Case("continue an archived one not stopped: nothing to send",
         (T, obj("completed", archived=True), False), None),
    Case("stop an archived one: allowed", (T, obj("running", archived=True), True),
         {"spec": {"suspend": True}}),
]


@pytest.mark.parametrize("case", SUSPENDS, ids=lambda c: c.name)
def test_suspend_change(case: Case) -> None:
    if case.error:
        with pytest.raises(errors.CliError, match=case.error):
            changes.suspend_change(*case.given)
    else:
        assert changes.suspend_change(*case.given).patch == case.expected


def owned(o: dict[str, Any]) -> dict[str, Any]:
    o["metadata"]["ownerReferences"] = [{"kind": "Pipeline", "name": "digits",
                                         "controller": True, "uid": "u"}]
    return o


OWNED = [
    Case("stop", "stop", "which sets its suspend and retryGeneration: stop the pipeline "
         "instead (kubectl mltask stop pipeline/digits)"),
    Case("retry", "retry", "kubectl mltask retry pipeline/digits"),
    Case("archive", "archive", "which archives and unarchives its tasks: archive the pipeline "
         "instead (kubectl mltask archive pipeline/digits)"),
    Case("unarchive", "unarchive", "kubectl mltask unarchive pipeline/digits"),
]


@pytest.mark.parametrize("case", OWNED, ids=lambda c: c.name)
def test_a_pipelines_task_is_acted_on_through_the_pipeline(case: Case) -> None:
    with pytest.raises(errors.CliError) as e:
        targets.check_not_owned(T, owned(obj("running")), case.given)
    assert str(e.value).startswith("mltask t belongs to pipeline digits, which ")
    assert case.expected in str(e.value)
    targets.check_not_owned(T, obj("running"), case.given)  # standalone: fine
    targets.check_not_owned(P, owned(obj("running")), case.given)  # not an MLTask target


ARCHIVES = [
    *(Case(f"archive {s}: stopped to be archived", (T, obj(s), True),
           ({"spec": {"archived": True, "suspend": True}},
            f"mltask/t archive requested: it was {s}, so it is stopped to be archived "
            "(spec.suspend: true; unarchiving leaves it stopped); it keeps its status"))
      for s in ("init", "running", "retry")),
    Case("archive a task with no status yet: it never starts", (T, obj(None), True),
         ({"spec": {"archived": True, "suspend": True}}, "it was init, so it is stopped")),
    Case("archive a stopping task: already stopping", (T, obj("stopping", suspend=True), True),
         ({"spec": {"archived": True, "suspend": True}},
          "mltask/t archive requested (it is stopping); it keeps")),
    *(Case(f"archive {s}: just archived", (T, obj(s, suspend=s == "stopped"), True),
           ({"spec": {"archived": True}}, "mltask/t archive requested: it keeps its status, "
            "outputs and metrics and releases its Workflows, pods and working volume"))
      for s in ("completed", "failed", "stopped")),
    Case("archive a running pipeline", (P, obj("running"), True),
         ({"spec": {"archived": True, "suspend": True}},
          "pipeline/p archive requested: it was running, so it is stopped to be archived")),
    Case("archive a failed pipeline", (P, obj("failed"), True),
         ({"spec": {"archived": True}}, "pipeline/p archive requested: its tasks keep their "
          "status, outputs and metrics")),
    Case("archive again: nothing to send", (T, obj("completed", archived=True), True),
         (None, "mltask/t is already archived: nothing to archive")),
    Case("unarchive a stopped one: stays stopped",
         (T, obj("stopped", suspend=True, archived=True), False),
         ({"spec": {"archived": False}}, "mltask/t unarchive requested: it stays stopped "
          "(spec.suspend: true); to continue it: kubectl mltask continue mltask/t")),
    Case("unarchive one not suspended: continues", (P, obj("stopped", archived=True), False),
         ({"spec": {"archived": False}}, "pipeline/p unarchive requested: it continues")),
    Case("unarchive a completed one", (T, obj("completed", archived=True), False),
         ({"spec": {"archived": False}}, "mltask/t unarchive requested: it stays completed")),
    Case("unarchive one not archived: nothing to send", (T, obj("failed"), False),
         (None, "mltask/t is not archived: nothing to unarchive")),
    Case("unarchive archived false: nothing to send", (T, obj("failed", archived=False), False),
         (None, "is not archived")),
]


@pytest.mark.parametrize("case", ARCHIVES, ids=lambda c: c.name)
def test_archive_change(case: Case) -> None:
    change = changes.archive_change(*case.given)
    patch, message = case.expected
    assert change.patch == patch
    assert message in change.message, change.message


class FakeSession:
    """A Session whose get returns `obj` and whose patch must not be called."""

    namespace = "ml"

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj

    def get(self, target: targets.Target) -> dict[str, Any]:
        return self.obj

    def patch(self, target: targets.Target, body: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError(f"patched {target} with {body}")


REFUSED = [
    Case("retry an archived task", (["retry", "t"], obj("failed", archived=True)),
         "error: mltask/t is archived (spec.archived): unarchive it first (kubectl mltask "
         "unarchive mltask/t), then retry it"),
    Case("continue an archived pipeline", (["continue", "pipeline/p"],
                                           obj("stopped", suspend=True, archived=True)),
         "error: pipeline/p is archived (spec.archived): unarchive it first (kubectl mltask "
         "unarchive pipeline/p), then continue it"),
    Case("archive a pipeline's task", (["archive", "t"], owned(obj("running"))),
         "error: mltask t belongs to pipeline digits, which archives and unarchives its "
         "tasks: archive the pipeline instead (kubectl mltask archive pipeline/digits)"),
    Case("unarchive a pipeline's task", (["unarchive", "t"], owned(obj("stopped",
                                                                       archived=True))),
         "error: mltask t belongs to pipeline digits, which archives and unarchives its "
         "tasks: unarchive the pipeline instead (kubectl mltask unarchive pipeline/digits)"),
]


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.name)
def test_refused_before_any_patch(case: Case, monkeypatch, capsys) -> None:
    argv, o = case.given
    monkeypatch.setattr(cli, "connect", lambda *a: FakeSession(o))
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", case.expected + "\n")


NOTHING_TO_DO = [
    Case("archive an archived one", (["archive", "t"], obj("completed", archived=True)),
         "mltask/t is already archived: nothing to archive"),
    Case("unarchive one not archived", (["unarchive", "pipeline/p"], obj("failed")),
         "pipeline/p is not archived: nothing to unarchive"),
]


@pytest.mark.parametrize("case", NOTHING_TO_DO, ids=lambda c: c.name)
def test_nothing_to_do_is_said_and_sends_nothing(case: Case, monkeypatch, capsys) -> None:
    argv, o = case.given
    monkeypatch.setattr(cli, "connect", lambda *a: FakeSession(o))
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == case.expected + "\n"


# ------------------------------------------------------------------------ step and pod

STEPS = [
    {"name": "download", "phase": "Succeeded", "attempt": 1, "pod": "t-1-download-1"},
    {"name": "run", "phase": "Running", "attempt": 2, "pod": "t-2-run-2"},
    {"name": "upload", "phase": "Pending", "attempt": 2},
]

CHOICES = [
    Case("the step the task is at", (STEPS, "run_task", None, None), ("run", "t-2-run-2", 2)),
    Case("at upload without a pod: the last step with one", (STEPS, "upload", None, None),
         ("run", "t-2-run-2", 2)),
    Case("done: the last step with a pod", (STEPS, "done", None, None),
         ("run", "t-2-run-2", 2)),
    Case("--step download", (STEPS, "run_task", "download", None),
         ("download", "t-1-download-1", 1)),
    Case("--attempt 1: only its entries", (STEPS, None, None, 1),
         ("download", "t-1-download-1", 1)),
    Case("--step without a pod yet", (STEPS, "upload", "upload", None),
         "step upload of mltask t has no pod yet (phase Pending)"),
    Case("--step of another attempt", (STEPS, "run_task", "download", 2),
         "step download of mltask t has not run in attempt 2"),
    Case("no pod at all", ([], "prepare_file", None, None),
         "mltask t has no step pod yet (step prepare_file)"),
    Case("no steps, no status", (None, None, None, None), "mltask t has no step pod yet"),
]


@pytest.mark.parametrize("case", CHOICES, ids=lambda c: c.name)
def test_choose_step(case: Case) -> None:
    steps, execute_step, step, attempt = case.given
    if isinstance(case.expected, str):
        with pytest.raises(errors.CliError) as e:
            changes.choose_step("t", steps, execute_step, step, attempt)
        assert str(e.value).startswith(case.expected)
    else:
        chosen = changes.choose_step("t", steps, execute_step, step, attempt)
        assert (chosen.step, chosen.pod, chosen.attempt) == case.expected


def test_workflow_steps_name_the_pods_of_an_earlier_attempt() -> None:
    body = example("training")
    body["metadata"].update(name="t", namespace="ml", uid="u")
    task = MLTask.model_validate(body)
    wf = build_workflow(task, attempt=1, start_at=StepName.DOWNLOAD,
                        inputs=ResolvedInputs("s3://d/x.zip", None))
    wf = argo.finish_pod(argo.run_pod(wf, "download"), "download")
    wf = argo.run_pod(wf, "run")
    steps = changes.workflow_steps(wf, 1)
    assert [(s["name"], s["attempt"]) for s in steps] == [("download", 1), ("run", 1)]
    chosen = changes.choose_step("t", steps, None, None, 1)
    assert chosen.step == "run"
    assert chosen.pod == pod_name("t-1", "t-1.run(0)", "run")


# ------------------------------------------------------------------------------- errors

ERRORS = [
    Case("404 of a task", (404, "mltasks.mltask.dev \"x\" not found", "get", kinds.MLTASK, "x",
                           "ml"), "mltask x not found in namespace ml"),
    Case("404 of a pipeline", (404, "", "get", kinds.PIPELINE, "p", "ml"),
         "pipeline p not found in namespace ml"),
    Case("404 of a list: no CRD", (404, "the server could not find the requested resource",
                                   "list", kinds.MLTASK, None, "ml"),
         "the server has no mltasks.mltask.dev (are the CRDs installed?)"),
    Case("403 names verb and resource", (403, "User \"u\" cannot patch", "patch", kinds.MLTASK,
                                         "x", "ml"),
         "forbidden: you may not patch mltasks.mltask.dev 'x' in namespace ml"),
    Case("403 of a cluster-wide list", (403, "no", "list", kinds.PIPELINE, None, None),
         "forbidden: you may not list pipelines.mltask.dev in any namespace"),
    Case("403 of logs", (403, "no", "get", kinds.POD_LOG, "pod-1", "ml"),
         "forbidden: you may not get pods/log 'pod-1' in namespace ml"),
    Case("422", (422, "spec.retryGeneration may only increase", "patch", kinds.MLTASK, "x", "ml"),
         "the API server refused to patch mltasks.mltask.dev 'x' in namespace ml: "
         "spec.retryGeneration may only increase"),
    Case("500", (500, "boom", "get", kinds.MLTASK, "x", "ml"),
         "cannot get mltasks.mltask.dev 'x' in namespace ml: HTTP 500: boom"),
]


@pytest.mark.parametrize("case", ERRORS, ids=lambda c: c.name)
def test_api_error_message(case: Case) -> None:
    assert errors.api_error_message(*case.given).startswith(case.expected)


SERVER_MESSAGES = [
    Case("Status body", (json.dumps({"kind": "Status", "message": "nope"}), "Forbidden"), "nope"),
    Case("bytes body", (b'{"message": "bytes"}', "X"), "bytes"),
    Case("not JSON: the reason", ("<html>", "Bad Gateway"), "Bad Gateway"),
    Case("nothing", (None, None), "no message"),
]


@pytest.mark.parametrize("case", SERVER_MESSAGES, ids=lambda c: c.name)
def test_server_message(case: Case) -> None:
    assert errors.server_message(*case.given) == case.expected


def test_write_stream_keeps_a_character_split_across_chunks() -> None:
    out = io.StringIO()
    data = "épochs 1/30 ✓\n".encode()
    render.write_stream([data[:1], data[1:14], data[14:]], out)
    assert out.getvalue() == "épochs 1/30 ✓\n"


ORDERS = [
    Case("the API's order", {"uri": "u", "sha256": "s", "kind": "model", "name": "n"},
         ["kind", "name", "uri", "sha256"]),
    Case("unknown keys last", {"zeta": 1, "size": 2, "id": "i"}, ["id", "size", "zeta"]),
    Case("empty", {}, []),
]


@pytest.mark.parametrize("case", ORDERS, ids=lambda c: c.name)
def test_outputs_in_api_order(case: Case) -> None:
    assert list(render.in_api_order(case.given, render.OUTPUT_KEYS)) == case.expected


DUMPS = [
    Case("yaml keeps the status' order", ({"uri": "s3://x", "size": 3}, "yaml"),
         "uri: s3://x\nsize: 3"),
    Case("json", ({"accuracy": 0.5}, "json"), '{\n  "accuracy": 0.5\n}'),
]


@pytest.mark.parametrize("case", DUMPS, ids=lambda c: c.name)
def test_dump(case: Case) -> None:
    assert render.dump(*case.given) == case.expected


# -------------------------------------------------------------------------------- usage

USAGE = [
    Case("no command", []),
    Case("unknown command", ["frobnicate"]),
    Case("unknown target type", ["stop", "pod/x"]),
    Case("bad --type", ["list", "--type", "inference"]),
    Case("bad --status", ["list", "--status", "done"]),
    Case("list something else", ["list", "pods"]),
    Case("--type on pipelines", ["list", "pipelines", "--type", "training"]),
    Case("--attempt 0", ["logs", "x", "--attempt", "0"]),
    Case("--tail -1", ["logs", "x", "--tail", "-1"]),
    Case("bad --step", ["logs", "x", "--step", "train"]),
    Case("bad -o", ["outputs", "x", "-o", "table"]),
    Case("archive without a target", ["archive"]),
    Case("unarchive an unknown type", ["unarchive", "pod/x"]),
    Case("bad --sort-by", ["list", "--sort-by", "age"]),
    Case("--limit 0", ["list", "--limit", "0"]),
    Case("--limit not a number", ["list", "--limit", "ten"]),
    Case("--archived and --only-archived", ["list", "--archived", "--only-archived"]),
    Case("--continue without --limit", ["list", "--continue", "t"]),
    Case("--watch with --limit", ["list", "-w", "--limit", "3"]),
]

LIST_USAGE = [
    Case("--type on pipelines", ["list", "pipelines", "--type", "training"],
         "kubectl mltask list: --type and --pipeline filter MLTasks, not pipelines"),
    Case("--continue without --limit", ["list", "--continue", "t"],
         "kubectl mltask list: --continue needs --limit (the page size of the listing it "
         "continues)"),
    Case("--watch with --limit", ["list", "--watch", "--limit", "3"],
         "kubectl mltask list: --watch lists every object, then its changes: not with --limit"),
    Case("both archived flags", ["list", "--archived", "--only-archived"],
         "argument --only-archived: not allowed with argument --archived"),
    Case("--limit 0", ["list", "--limit", "0"], "argument --limit: must be at least 1, not 0"),
    Case("--sort-by", ["list", "--sort-by", "age"], "argument --sort-by: invalid choice: 'age'"),
]


@pytest.mark.parametrize("case", LIST_USAGE, ids=lambda c: c.name)
def test_list_usage_errors_name_the_flags(case: Case, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: pytest.fail("must not connect"))
    assert cli.main(case.given) == 2
    assert case.expected in capsys.readouterr().err


@pytest.mark.parametrize("case", USAGE, ids=lambda c: c.name)
def test_usage_errors_exit_2_before_any_api_call(case: Case, capsys, monkeypatch) -> None:
    monkeypatch.setattr(cli, "connect", lambda *a: pytest.fail("must not connect"))
    assert cli.main(case.given) == 2
    assert capsys.readouterr().err


def test_help_exits_0(capsys) -> None:
    assert cli.main(["--help"]) == 0
    assert "pipeline/NAME" in capsys.readouterr().out


def test_global_flags_before_or_after_the_command(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(cli, "connect", lambda *a: seen.append(a) or object())
    monkeypatch.setattr(parser, "COMMANDS", [
        dataclasses.replace(c, run=lambda s, args: 0) if c.name == "list" else c
        for c in commands.COMMANDS])
    assert cli.main(["-n", "a", "--context", "c", "list"]) == 0
    assert cli.main(["list", "-n", "b", "--kubeconfig", "k"]) == 0
    assert cli.main(["list"]) == 0
    assert seen == [(None, "c", "a"), ("k", None, "b"), (None, None, None)]


def test_an_unreadable_kubeconfig_is_one_line_exit_1(tmp_path, capsys) -> None:
    assert cli.main(["--kubeconfig", str(tmp_path / "missing"), "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot load the kubeconfig") and err.count("\n") == 1
