"""The bench's printed report: the figures table (operator | floor | ratio/target), the request
breakdown, and the run's date, machine and notes."""

from __future__ import annotations

from typing import Any


def _s(x: float | None, unit: str = " s") -> str:
    return "n/a" if x is None else f"{x:g}{unit}"


def _why(results: dict[str, Any], *phases: str) -> str | None:
    for phase in phases:
        err = results.get("errors", {}).get(phase)
        if err:
            return f"not measured: {phase} failed: {err}"
    return None


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    skipped = results.get("skipped", {})

    def missing(figure: str, *phases: str) -> None:
        why = _why(results, *phases) or skipped.get(figure) or "not measured"
        out.append((figure, why, "", ""))

    burst, floor = results.get("burst"), results.get("floor_burst")
    if burst and floor:
        n = burst["tasks"]
        t = burst.get("all_workflows_s")
        ratio = f"{t / floor['floor_s']:.1f}x" if t else "n/a"
        out.append((f"burst: {n} MLTasks at once -> all {n} Workflows exist",
                    _s(t) if t else burst.get("note", "n/a"),
                    f"{floor['floor_s']:g} s (MLTasks {floor['mltasks_s']:g} s + Workflows "
                    f"{floor['workflows_s']:g} s)", f"{ratio} (target <= 2x)"))
        fr = results.get("floor_requests")
        if fr:
            out.append(("  the same burst beside the operator's own requests made directly "
                        "(its reconcile code, no watch or queue)", "",
                        f"{fr['floor_s']:g} s (MLTasks {fr['mltasks_s']:g} s + starts "
                        f"{fr['starts_s']:g} s)", f"{t / fr['floor_s']:.1f}x" if t else "n/a"))
    elif "burst" in results.get("selected", []):
        missing("burst", "floor_burst", "burst")

    steady, fs = results.get("steady"), results.get("floor_steady")
    if steady:
        def pct(d: dict[str, Any]) -> str:
            return f"p50 {_s(d['p50_s'])}, p90 {_s(d['p90_s'])}, p99 {_s(d['p99_s'])}"
        label = (f"steady {results['args']['steady_rate']:g}/s for "
                 f"{results['args']['steady_seconds']:g} s: create -> its Workflow")
        extra = "" if steady["with_workflow"] == steady["tasks"] else (
            f" ({steady['tasks'] - steady['with_workflow']} never got one)")
        out.append((label, pct(steady) + extra, pct(fs) if fs else "n/a",
                    "target p99 < 2 s"))
    elif "steady" in results.get("selected", []):
        missing("steady", "floor_steady", "steady")

    if burst and "per_task" in burst:
        pt = burst["per_task"]
        fpt = (floor or {}).get("per_task") or {}
        floor_req = fpt.get("all_requests")
        out.append(("API requests per started task: the operator's (audit log)",
                    f"{pt['operator_requests']:g}",
                    f"{floor_req:g} (all, /metrics)" if floor_req else "n/a",
                    "target <= 5"))
        out.append(("API requests per started task: all but the bench's (/metrics)",
                    f"{pt['cluster_requests']:g}", "", ""))
        for name, label in (("operator", "operator"), ("kube-apiserver", "kube-apiserver"),
                            ("etcd", "etcd")):
            ms = pt["cpu_ms"].get(name)
            fms = fpt.get("cpu_ms", {}).get(name) if fpt else None
            ratio = f"{ms / fms:.1f}x" if ms and fms else ""
            out.append((f"CPU per started task: {label}", _s(ms, " ms"),
                        _s(fms, " ms") if fms is not None and name != "operator" else "",
                        ratio if name != "operator" else ""))
    elif {"requests", "cpu"} & set(results.get("selected", [])):
        missing("requests and CPU per task", "floor_burst", "burst")

    for rec in results.get("finished", []):
        k = rec["finished"]
        if "idle" in rec:
            idle = rec["idle"]
            cycle = "one resync cycle" if idle["window"].startswith("one") else "window"
            out.append((f"idle: API requests per finished task per minute ({k} finished, "
                        f"{idle['window_s']:g} s {cycle})",
                        f"{idle['operator_requests_per_task_min']:g} ("
                        f"{idle['operator_requests_per_s']:g} req/s; all but the bench's: "
                        f"{idle['cluster_requests_per_task_min']:g})", "", "target 0"))
            if "operator_object_requests_per_task_min" in idle:
                out.append((f"idle: of which per-object (not watch reopens), per finished task "
                            f"per minute ({k} finished)",
                            f"{idle['operator_object_requests_per_task_min']:g} (watches "
                            f"reopened: {idle['operator_watch_requests_per_s']:g}/s, whatever "
                            "the number of tasks)", "", "target 0"))
    if burst and "rss_start_mib" in burst:
        out.append(("operator RSS at start (VmRSS)",
                    f"{burst['rss_start_mib'].get('VmRSS', 0):.0f} MiB", "", ""))
    for rec in results.get("finished", []):
        k = rec["finished"]
        rss = rec["rss_mib"]
        target = "target < 150 MiB" if k <= 1000 else (
            "target < 300 MiB" if k <= 10000 else "")
        out.append((f"operator RSS with {k} finished tasks (peak)",
                    f"{rss.get('VmRSS', 0):.0f} MiB ({rss.get('VmHWM', 0):.0f})", "", target))
    if not results.get("finished") and {"idle", "rss"} & set(results.get("selected", [])):
        missing("idle and RSS with finished tasks", "finished")

    for rec in results.get("recovery", []):
        label = (f"{rec['cut_s']:g} s cut ({rec['mode']}), {rec['tasks']} tasks created "
                 "meanwhile -> all Workflows, after the return (at "
                 f"{rec['return_after_operator_start_s']:.0f} s of the operator's life)")
        out.append((label, _s(rec["after_return_s"]) if rec["after_return_s"] is not None
                    else rec.get("note", "n/a"), "", "target <= 10 s"))
    if not results.get("recovery") and "recovery" in results.get("selected", []):
        missing("recovery", "recovery")

    kill = results.get("sigkill")
    if kill:
        conv = _s(kill["converged_s"]) if kill["converged_s"] is not None else kill["note"]
        out.append((f"SIGKILL at {kill['killed_at_workflows']}/{kill['tasks']} Workflows, "
                    "restart: duplicate Workflows; converged after the restart",
                    f"{kill['duplicates']} duplicates; {conv}", "", "target 0 duplicates"))
    elif "sigkill" in results.get("selected", []):
        missing("sigkill", "sigkill")
    return out


def table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in body]
    return "\n".join(lines)


def breakdown(results: dict[str, Any]) -> str:
    burst = results.get("burst") or {}
    pt = burst.get("per_task")
    if not pt:
        return ""
    keys = list(dict.fromkeys([*pt["operator_breakdown"], *pt["cluster_breakdown"]]))
    big = [k for k in keys if max(pt["operator_breakdown"].get(k, 0),
                                  pt["cluster_breakdown"].get(k, 0)) >= 0.01]
    body = [(k, f"{pt['operator_breakdown'].get(k, 0):g}",
             f"{pt['cluster_breakdown'].get(k, 0):g}") for k in big]
    rest = [k for k in keys if k not in big]
    if rest:
        body.append((f"{len(rest)} more, each under 0.01",
                     f"{sum(pt['operator_breakdown'].get(k, 0) for k in rest):.3g}",
                     f"{sum(pt['cluster_breakdown'].get(k, 0) for k in rest):.3g}"))
    body.append(("total", f"{pt['operator_requests']:g}", f"{pt['cluster_requests']:g}"))
    return (f"API requests per started task in the burst ({pt['tasks']} tasks, "
            f"{pt['window_s']:g} s window until the operator went quiet):\n"
            + table(("verb resource", "operator (audit log)",
                     "all but the bench's (/metrics)"), body))


def costs(results: dict[str, Any]) -> str:
    rc = results.get("request_costs")
    if not rc:
        return ""
    body = [(kind, f"{v['kube-apiserver_ms']:g} ms", f"{v['etcd_ms']:g} ms",
             f"{v['kube-controller-manager_ms']:g} ms", f"{v['wall_s']:g} s")
            for kind, v in rc["kinds"].items()]
    ratio = rc["design_apiserver_ms"] / rc["floor_apiserver_ms"]
    return (f"What each request costs the API server, one kind at a time ({rc['tasks']} each, "
            f"{results['args']['threads']} threads; the bodies the operator's reconcile "
            "writes):\n"
            + table(("request", "kube-apiserver CPU", "etcd CPU",
                     "controller-manager CPU", "wall"), body)
            + f"\nThe floor's requests (MLTask, Workflow) cost the API server "
            f"{rc['floor_apiserver_ms']:g} ms per task; a task started as the operator does "
            f"(MLTask, Workflow, volume, status, Event) {rc['design_apiserver_ms']:g} ms: "
            f"{ratio:.1f}x, before the operator's own CPU on the same cores.")


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    head = (f"mltask-operator bench, {results['date']} on {m['cores']} cores, "
            f"{m['ram_gib']} GiB RAM ({m['cpu']}, Linux {m['kernel']}); operator at "
            f"{results['commit']}; run took {results['run_s'] / 60:.1f} min")
    parts = [head, "", table(("figure", "operator", "floor (same client, direct)",
                              "ratio / target"), rows(results))]
    for extra in (breakdown(results), costs(results)):
        if extra:
            parts += ["", extra]
    notes = results.get("notes") or []
    if notes:
        parts += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(parts)
