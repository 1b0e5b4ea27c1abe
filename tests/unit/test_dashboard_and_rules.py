"""The chart's monitoring without a cluster: the Grafana dashboard (its JSON and the ConfigMap the
sidecar loads), the PrometheusRule (promtool check rules, and promtool's unit tests of every
alert in prometheusrule_test.yaml), and promql-selectors, which tells the integration tests what
series each expression reads (tests/integration/test_monitoring.py checks those against the
running operator)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.chart import RELEASE, RELEASE_NS, find, render
from harness.monitoring import (
    DASHBOARD,
    analyse,
    dashboard,
    dashboard_queries,
    grafana_to_promql,
    panels,
    promtool,
    rule_exprs,
)

HERE = Path(__file__).resolve().parent
ON = ["--set", "prometheusRule.enabled=true", "--set", "grafana.dashboard.enabled=true"]


def kinds(*args: str) -> list[str]:
    return [d["kind"] for d in render(RELEASE_NS, *args)]


def test_off_by_default() -> None:
    assert not {"PrometheusRule", "ConfigMap"} & set(kinds())
    on = kinds(*ON)
    assert (on.count("PrometheusRule"), on.count("ConfigMap")) == (1, 1)


# ------------------------------------------------------------------------------- dashboard


DASHBOARD_CASES = [
    # (id, helm args, namespace, labels expected among the ConfigMap's, annotations)
    ("defaults", [], RELEASE_NS, {"grafana_dashboard": "1"}, None),
    ("own-label", ["--set", "grafana.dashboard.labelKey=example.com/dashboard",
                   "--set-string", "grafana.dashboard.labelValue=mltask"],
     RELEASE_NS, {"example.com/dashboard": "mltask"}, None),
    ("folder-and-namespace", ["--set", "grafana.dashboard.namespace=monitoring",
                              "--set", "grafana.dashboard.annotations.grafana_folder=MLTask",
                              "--set", "grafana.dashboard.labels.team=ml-platform"],
     "monitoring", {"grafana_dashboard": "1", "team": "ml-platform"},
     {"grafana_folder": "MLTask"}),
]


@pytest.mark.parametrize(("args", "namespace", "labels", "annotations"),
                         [c[1:] for c in DASHBOARD_CASES], ids=[c[0] for c in DASHBOARD_CASES])
def test_dashboard_configmap_is_labelled_for_the_sidecar(
        args: list[str], namespace: str, labels: dict[str, str],
        annotations: dict[str, str] | None) -> None:
    cm = find(render(RELEASE_NS, "--set", "grafana.dashboard.enabled=true", *args), "ConfigMap")
    meta = cm["metadata"]
    assert meta["name"] == f"{RELEASE}-dashboard" and meta["namespace"] == namespace
    assert labels.items() <= meta["labels"].items()
    assert meta["labels"]["app.kubernetes.io/part-of"] == "mltask-operator"
    assert meta.get("annotations") == annotations
    assert list(cm["data"]) == ["mltask-operator.json"]
    assert json.loads(cm["data"]["mltask-operator.json"]) == dashboard(), "the file, as it is"


def test_dashboard_fits_an_annotation() -> None:
    """Client-side `kubectl apply` (and Argo CD's default sync) copies the whole object into
    the last-applied annotation, and all annotations together must stay under 256 KiB."""
    assert DASHBOARD.stat().st_size < 200 * 1024


#: what the dashboard shows, by panel title
PANELS = [
    "Tasks by status", "Running and waiting tasks by type", "Task failure rate",
    "Task duration p50 / p95 by type", "Step duration p95 by step",
    "Wait from creation to Workflow p50 / p99", "Step retries by cause",
    "Reconcile duration p99 by kind", "Reconcile errors by kind",
    "API requests by verb and code", "Workflows refused by reason",
    "Working-volume bytes by namespace", "Pipelines by status", "Active replica (leader)",
    "Work queue depth",
]


def test_dashboard_model() -> None:
    board = dashboard()
    assert 39 <= board["schemaVersion"] < 42
    assert board["uid"] == "mltask-operator" and board["id"] is None
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource", "prometheus")
    ns = variables["namespace"]
    assert (ns["type"], ns["query"], ns["definition"]) == (
        "query", "label_values(mltask_tasks, namespace)", "label_values(mltask_tasks, namespace)")
    assert ns["includeAll"] and ns["allValue"] == ".*"
    titles = [p["title"] for p in panels(board)]
    assert not [t for t in PANELS if t not in titles]
    assert len(set(titles)) == len(titles)
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    stacked = next(p for p in panels(board) if p["title"] == "Tasks by status")
    assert stacked["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


def test_every_query_uses_the_datasource_variable() -> None:
    board = dashboard()
    ds = {"type": "prometheus", "uid": "${datasource}"}
    for p in panels(board):
        assert p["datasource"] == ds, p["title"]
        assert p["targets"] and all(t["datasource"] == ds for t in p["targets"]), p["title"]
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == ds, v["name"]


def test_panels_tile_the_grid() -> None:
    """Within the 24 columns, none overlapping another."""
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def operator_series_names() -> set[str]:
    """The sample names the operator's metrics (mltask_operator.metrics) are exposed as."""
    from prometheus_client import Counter, Gauge, Histogram

    from mltask_operator import metrics

    names: set[str] = set()
    for m in vars(metrics).values():
        if isinstance(m, Counter | Gauge | Histogram):
            for fam in m.describe():
                names |= ({fam.name + "_total"} if fam.type == "counter" else
                          {fam.name + s for s in ("_bucket", "_sum", "_count")}
                          if fam.type == "histogram" else {fam.name})
    names |= {f.name for f in metrics.state_families({}, {}, {})}
    return names


def all_exprs() -> list[tuple[str, str]]:
    rule = find(render(RELEASE_NS, *ON), "PrometheusRule")
    return ([(f"dashboard: {w}", grafana_to_promql(q)) for w, q in dashboard_queries(dashboard())]
            + [(f"alert: {w}", e) for w, e in rule_exprs(rule)])


def test_every_expression_parses_and_names_the_operators_metrics() -> None:
    """By Prometheus's own parser (promql-selectors); every metric named is one the operator
    defines (tests/integration/test_monitoring.py checks them against real series)."""
    exprs = all_exprs()
    known = operator_series_names()
    assert len(known) >= 26  # 9 counters, 4 histograms (3 series each), 5 gauges
    for (where, expr), a in zip(exprs, analyse([e for _, e in exprs]), strict=True):
        assert not a.get("error"), f"{where}: {a['error']}\n{expr}"
        assert a["selectors"], where
        unknown = {s["metric"] for s in a["selectors"]} - known
        assert not unknown, f"{where}: not the operator's: {unknown}"


def test_every_metric_is_on_the_dashboard() -> None:
    used = {s["metric"] for a in analyse([grafana_to_promql(q) for _, q in
                                          dashboard_queries(dashboard())])
            for s in a["selectors"]}
    families = {n.removesuffix("_bucket") for n in operator_series_names()
                if not n.endswith(("_sum", "_count"))}
    assert not families - {u.removesuffix("_bucket").removesuffix("_count") for u in used}


# ----------------------------------------------------------------------------- the alerts


def rendered_rule(*args: str) -> dict[str, Any]:
    return find(render(RELEASE_NS, "--set", "prometheusRule.enabled=true", *args),
                "PrometheusRule")


def write_rules(tmp_path: Path, rule: dict[str, Any]) -> Path:
    """The PrometheusRule's spec as a Prometheus rules file (what prometheus-operator gives
    Prometheus)."""
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


ALERTS = ["MLTaskFailureRateHigh", "MLTaskOperatorNoActiveReplica", "MLTaskReconcileErrors",
          "MLTaskWorkflowWaitHigh"]


def test_prometheus_rule_object() -> None:
    rule = rendered_rule("--set", "prometheusRule.labels.release=prometheus")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert (rule["metadata"]["name"], rule["metadata"]["namespace"]) == (RELEASE, RELEASE_NS)
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert [r["alert"] for r in rules] == ALERTS
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert r["for"], r["alert"]


@pytest.mark.parametrize("args", [[], ["--set", "prometheusRule.alerts.failureRate.window=6h",
                                       "--set", "prometheusRule.alerts.workflowWait.threshold=5"]],
                         ids=["defaults", "changed"])
def test_promtool_check_rules(tmp_path: Path, args: list[str]) -> None:
    out = promtool("check", "rules", str(write_rules(tmp_path, rendered_rule(*args)))).stdout
    assert "SUCCESS: 4 rules found" in out, out


def test_promtool_unit_tests_of_the_alerts(tmp_path: Path) -> None:
    """prometheusrule_test.yaml: each alert fires when it should and not otherwise."""
    write_rules(tmp_path, rendered_rule())
    shutil.copy(HERE / "prometheusrule_test.yaml", tmp_path)
    res = promtool("test", "rules", str(tmp_path / "prometheusrule_test.yaml"), check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    tested = {t["alertname"] for case in yaml.safe_load(
        (HERE / "prometheusrule_test.yaml").read_text())["tests"]
        for t in case["alert_rule_test"]}
    assert tested == set(ALERTS)


def test_promtool_unit_tests_see_a_changed_threshold(tmp_path: Path) -> None:
    """The tests are of the values: at a 60% threshold the 50% failure rate no longer fires."""
    write_rules(tmp_path, rendered_rule(
        "--set", "prometheusRule.alerts.failureRate.threshold=0.6"))
    shutil.copy(HERE / "prometheusrule_test.yaml", tmp_path)
    res = promtool("test", "rules", str(tmp_path / "prometheusrule_test.yaml"), check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "alertname: MLTaskFailureRateHigh" in out, out
    assert "MLTaskWorkflowWaitHigh" not in out, "only the failure rate's expectations change"


VALUES = [
    # (id, helm args, alert, what its rendered rule has)
    ("failure-threshold", ["--set", "prometheusRule.alerts.failureRate.threshold=0.4"],
     "MLTaskFailureRateHigh", {"expr": ") > 0.4\n", "description": "(more than 40%)"}),
    ("failure-window-min", ["--set", "prometheusRule.alerts.failureRate.window=6h",
                            "--set", "prometheusRule.alerts.failureRate.minTasks=10"],
     "MLTaskFailureRateHigh", {"expr": "[6h])) >= 10", "description": "in the last 6h"}),
    ("leader-for", ["--set", "prometheusRule.alerts.noActiveReplica.for=2m",
                    "--set", "prometheusRule.alerts.noActiveReplica.severity=page"],
     "MLTaskOperatorNoActiveReplica", {"for": "2m", "severity": "page"}),
    ("errors", ["--set", "prometheusRule.alerts.reconcileErrors.threshold=1",
                "--set", "prometheusRule.alerts.reconcileErrors.window=5m"],
     "MLTaskReconcileErrors", {"expr": "[5m])) > 1"}),
    ("wait", ["--set", "prometheusRule.alerts.workflowWait.threshold=300",
              "--set", "prometheusRule.alerts.workflowWait.for=1h"],
     "MLTaskWorkflowWaitHigh", {"expr": ")) > 300", "for": "1h", "description": "300s"}),
]


@pytest.mark.parametrize(("args", "alert", "has"), [v[1:] for v in VALUES],
                         ids=[v[0] for v in VALUES])
def test_alert_values(args: list[str], alert: str, has: dict[str, str]) -> None:
    rule = next(r for g in rendered_rule(*args)["spec"]["groups"] for r in g["rules"]
                if r["alert"] == alert)
    where = {"expr": rule["expr"], "for": rule["for"], "severity": rule["labels"]["severity"],
             "description": rule["annotations"]["description"]}
    for key, text in has.items():
        assert text in where[key] if key in ("expr", "description") else where[key] == text, \
            (key, where[key])


# ------------------------------------------------------------------------- promql-selectors


def m(label: str, op: str, value: str) -> dict[str, str]:
    return {"label": label, "op": op, "value": value}


SELECTORS = [
    # (id, expression, selectors, groupings, labels)
    ("plain", "up", [{"metric": "up", "matchers": []}], [], []),
    ("matchers", 'x_total{a="1", b!="2", c=~"3|4", d!~"5"}',
     [{"metric": "x_total", "matchers": [m("a", "=", "1"), m("b", "!=", "2"),
                                         m("c", "=~", "3|4"), m("d", "!~", "5")]}],
     [], ["a", "b", "c", "d"]),
    ("name-matcher", '{__name__="x", a="1"}',
     [{"metric": "x", "matchers": [m("a", "=", "1")]}], [], ["a"]),
    ("name-regex", '{__name__=~"x.*"}',
     [{"metric": "", "matchers": [m("__name__", "=~", "x.*")]}], [], []),
    ("by", "histogram_quantile(0.9, sum by (le, type) (rate(h_bucket[5m])))",
     [{"metric": "h_bucket", "matchers": []}],
     [{"op": "sum", "labels": ["le", "type"], "metrics": ["h_bucket"]}], ["le", "type"]),
    ("without", "max without (pod) (g)", [{"metric": "g", "matchers": []}],
     [{"op": "max", "without": True, "labels": ["pod"], "metrics": ["g"]}], ["pod"]),
    ("no-grouping", "sum(g)", [{"metric": "g", "matchers": []}], [], []),
    ("vector-matching", "a / on (x) group_left (y) b",
     [{"metric": "a", "matchers": []}, {"metric": "b", "matchers": []}],
     [{"op": "on", "labels": ["x"], "metrics": ["a", "b"]},
      {"op": "group_left", "labels": ["y"], "metrics": ["a", "b"]}], ["x", "y"]),
    ("ignoring", "a - ignoring (z) b",
     [{"metric": "a", "matchers": []}, {"metric": "b", "matchers": []}],
     [{"op": "ignoring", "labels": ["z"], "metrics": ["a", "b"]}], ["z"]),
    ("label-replace", 'label_replace(g, "d", "$1", "src", "(.*)")',
     [{"metric": "g", "matchers": []}],
     [{"op": "label_replace", "labels": ["src"], "metrics": ["g"]}], ["src"]),
    ("absent-or-vector", "absent(g == 1) or vector(0)", [{"metric": "g", "matchers": []}], [],
     []),
    ("label-values", 'label_values(g{a="x,y"}, namespace)',
     [{"metric": "g", "matchers": [m("a", "=", "x,y")]}],
     [{"op": "label_values", "labels": ["namespace"], "metrics": ["g"]}], ["a", "namespace"]),
    ("label-values-label-only", "label_values(job)", [],
     [{"op": "label_values", "labels": ["job"], "metrics": []}], ["job"]),
    ("query-result", "query_result(topk(3, g))", [{"metric": "g", "matchers": []}], [], []),
]


def test_promql_selectors() -> None:
    out = analyse([c[1] for c in SELECTORS])
    for (name, expr, selectors, groupings, labels), got in zip(SELECTORS, out, strict=True):
        assert got["expr"] == expr and "error" not in got, (name, got)
        assert (got["selectors"], got["groupings"], got["labels"]) == (
            selectors, groupings, labels), name


@pytest.mark.parametrize("expr", ["sum(", "rate(x[5m]", "label_values(g, not-a-label)",
                                  "label_values(sum(g), a)", "x{a=1}"])
def test_promql_selectors_reports_what_does_not_parse(expr: str) -> None:
    ok, bad = analyse(["up", expr])
    assert "error" not in ok and bad["error"], bad
    assert bad["selectors"] == [] and bad["groupings"] == []
