"""The chart's monitoring (Grafana dashboard, PrometheusRule) as data, and the checks of its PromQL
against what the operator serves: every expression is parsed by Prometheus's own parser
(promql-selectors, tests/tools/promql-selectors), and each series selector and label it names is
looked up in a scrape of the operator's /metrics.

promtool and promql-selectors are built from the pinned Prometheus module by tests/tools/build.sh.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.chart import CHART
from harness.controlplane import BIN_DIR

PROMTOOL = BIN_DIR / "promtool"
PROMQL_SELECTORS = BIN_DIR / "promql-selectors"
DASHBOARD = CHART / "dashboards" / "mltask-operator.json"

#: Labels Prometheus gives every series it scrapes (the target's): an expression may group by
#: them though the operator's /metrics does not show them.
TARGET_LABELS = frozenset({"job", "instance"})

#: What Grafana puts in place of its variables before the query reaches Prometheus: the
#: dashboard's own (namespace and type as "All", the window's default) and Grafana's built-in
#: intervals.
GRAFANA_VARIABLES = {"namespace": ".*", "type": ".*", "window": "1h",
                     "__rate_interval": "1m", "__interval": "30s", "__range": "6h"}


def _tool(path: Path) -> str:
    if not path.exists():
        raise AssertionError(f"{path} missing: run `make tools` (tests/tools/build.sh builds it "
                             "from the pinned Prometheus module)")
    return str(path)


def promtool(*args: str, stdin: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([_tool(PROMTOOL), *args], input=stdin, capture_output=True, text=True,
                         timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"promtool {' '.join(args)} failed ({res.returncode}):\n"
                             f"{res.stdout}\n{res.stderr}")
    return res


def analyse(exprs: list[str]) -> list[dict[str, Any]]:
    """promql-selectors over the expressions: per expression its selectors, groupings and labels
    (an `error` where one does not parse)."""
    res = subprocess.run([_tool(PROMQL_SELECTORS)], input=json.dumps(exprs), capture_output=True,
                         text=True, timeout=60)
    if res.returncode not in (0, 1):
        raise AssertionError(f"promql-selectors failed ({res.returncode}): {res.stderr}")
    out: list[dict[str, Any]] = json.loads(res.stdout)
    assert len(out) == len(exprs)
    return out


# ------------------------------------------------------------------------------ the dashboard


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too (rows themselves left out)."""
    out = []
    for p in board["panels"]:
        if p["type"] == "row":
            out.extend(p.get("panels") or [])
        else:
            out.append(p)
    return out


def grafana_to_promql(query: str) -> str:
    """A dashboard query as Grafana sends it: its variables ($x, ${x}, ${x:format}) replaced."""
    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"unknown Grafana variable ${name} in {query!r}")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, query)


def dashboard_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, query) of every panel target and every query variable, Grafana's variables in."""
    out = []
    for p in panels(board):
        for t in p.get("targets") or []:
            out.append((f"{p['title']} [{t['refId']}]", t["expr"]))
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
            out.append((f"variable {v['name']}", q))
    return out


# ------------------------------------------------------------------------------- the rules


def rule_exprs(rule: dict[str, Any]) -> list[tuple[str, str]]:
    """(alert or record name, expr) of a PrometheusRule object."""
    return [(r.get("alert") or r["record"], r["expr"])
            for g in rule["spec"]["groups"] for r in g["rules"]]


# ------------------------------------------------------------------------------- the scrape


@dataclass
class Scrape:
    """A text exposition as series: sample name -> label sets; and the families' types."""

    series: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def family(self, name: str) -> list[str]:
        """The sample names of family `name` that have series (a histogram's _bucket, _sum,
        _count; a counter's name as given, with _total)."""
        return sorted(s for s in self.series if s == name or (
            s.startswith(name + "_") and s[len(name) + 1:] in ("bucket", "sum", "count")))


def parse_scrape(text: str) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape()
    for fam in text_string_to_metric_families(text):
        scrape.types[fam.name] = fam.type
        for s in fam.samples:
            scrape.series.setdefault(s.name, []).append(dict(s.labels))
    return scrape


def _matches(op: str, want: str, got: str) -> bool:
    if op == "=":
        return got == want
    if op == "!=":
        return got != want
    hit = re.fullmatch(want, got) is not None  # Prometheus anchors regular expressions
    return hit if op == "=~" else not hit


def problems(analysis: dict[str, Any], scrape: Scrape) -> list[str]:
    """What of an expression does not name real series: a metric with no series in the scrape,
    a label none of its series has, a selector that matches none of them, a grouping label
    that none of the series below it has."""
    if analysis.get("error"):
        return [f"does not parse: {analysis['error']}"]
    out = []
    for sel in analysis["selectors"]:
        name = sel["metric"]
        if not name:
            out.append(f"a selector without a fixed metric name: {sel}")
            continue
        series = scrape.series.get(name)
        if not series:
            out.append(f"{name}: no such series")
            continue
        present = set().union(*(s.keys() for s in series)) | TARGET_LABELS
        for m in sel["matchers"]:
            if m["label"] not in present:
                out.append(f"{name}: no series has label {m['label']!r}")
        if not any(all(_matches(m["op"], m["value"], s.get(m["label"], ""))
                       for m in sel["matchers"]) for s in series):
            shown = ", ".join(f"{m['label']}{m['op']}{m['value']!r}" for m in sel["matchers"])
            out.append(f"{name}{{{shown}}} matches none of its {len(series)} series")
    for g in analysis["groupings"]:
        names = [n for n in g["metrics"] if scrape.series.get(n)]
        present = set().union(*(s.keys() for n in names for s in scrape.series[n])) \
            | TARGET_LABELS
        for label in g["labels"]:
            if names and label not in present:
                out.append(f"{g['op']} ({label}): no series of {', '.join(names)} has it")
    return out
