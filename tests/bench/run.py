"""`python -m bench`: parses the flags, runs the phases, prints and saves the figures."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import bench
from bench import report
from bench.cluster import SHIPPED_ENV, BenchCluster
from bench.cutproxy import MODES
from bench.figures import Phases
from bench.load import AG, AP, AV, G, P, Store, V, Watcher, task_fields, workflow_fields
from bench.meter import Meter, machine
from harness.controlplane import REPO

FIGURES = ("burst", "steady", "requests", "cpu", "idle", "rss", "recovery", "sigkill")


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=bench.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(FIGURES),
                   help=f"figures to measure, comma-separated (default: all: {','.join(FIGURES)})")
    p.add_argument("--burst", type=int, default=1000, help="tasks in the burst (1000)")
    p.add_argument("--steady-rate", type=float, default=20, help="tasks per second (20)")
    p.add_argument("--steady-seconds", type=float, default=30, help="steady duration (30)")
    p.add_argument("--finished", type=_ints, default=[1000, 10000],
                   help="finished-task counts for idle and RSS (1000,10000)")
    p.add_argument("--idle-window", type=float, default=300,
                   help="longest idle window, seconds: it runs from the start of one resync "
                   "pass to the next (the pass, about 10 ms per task today, then 60 s) (300)")
    p.add_argument("--idle-at", type=_ints, default=None,
                   help="finished counts to measure idle requests at (default: every one)")
    p.add_argument("--recovery-tasks", type=int, default=100, help="tasks created in the cut")
    p.add_argument("--cut-seconds", type=float, default=30, help="length of the cut (30)")
    p.add_argument("--cut-modes", default="blackhole,hang,refuse",
                   help=f"how the connection is cut, comma-separated: {', '.join(MODES)} "
                   "(all three)")
    p.add_argument("--sigkill-tasks", type=int, default=500, help="tasks in the burst (500)")
    p.add_argument("--sigkill-at", type=float, default=0.3,
                   help="fraction of Workflows created when the operator is killed (0.3)")
    p.add_argument("--threads", type=int, default=16, help="client threads (16)")
    p.add_argument("--timeout", type=float, default=900,
                   help="longest wait for any one outcome, seconds (900)")
    p.add_argument("--json", type=Path, help="write the figures there")
    p.add_argument("--dir", type=Path, help="cluster directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the cluster directory (logs)")
    args = p.parse_args(argv)
    args.only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = set(args.only) - set(FIGURES)
    if unknown:
        p.error(f"--only: unknown figures {', '.join(sorted(unknown))}; known: "
                + ", ".join(FIGURES))
    args.cut_modes = [m.strip() for m in args.cut_modes.split(",") if m.strip()]
    if set(args.cut_modes) - set(MODES):
        p.error(f"--cut-modes: one or more of {', '.join(MODES)}")
    if args.idle_window <= 60 and "idle" in args.only:
        print("warning: an idle window of 60 s or less may miss the operator's resync",
              file=sys.stderr)
    return args


def commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "operator"],
                               capture_output=True, text=True).stdout.strip()
        return head + (" (operator/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {msg}", file=sys.stderr, flush=True)

    workdir = args.dir.resolve() if args.dir else Path(tempfile.mkdtemp(prefix="mltask-bench-"))
    if args.dir and workdir.exists():
        shutil.rmtree(workdir)
    only = set(args.only)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "commit": commit(), "selected": args.only,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "operator_env": SHIPPED_ENV, "errors": {}, "skipped": {}, "notes": [],
    }
    with open("/proc/loadavg") as f:
        results["loadavg_before"] = f.read().split()[:3]
    log(f"cluster in {workdir}; figures: {', '.join(args.only)}")
    cluster = BenchCluster(workdir, args.threads, log)
    ok = True
    try:
        t0 = time.monotonic()
        cluster.start()
        log(f"control plane up at {cluster.cp.server} in {time.monotonic() - t0:.0f}s")
        workflows = Store(workflow_fields)
        tasks = Store(task_fields)
        Watcher(cluster.api, AG, AV, AP, workflows).start()
        Watcher(cluster.api, G, V, P, tasks).start()
        phases = Phases(cluster, Meter(cluster), workflows, tasks, args, log)

        def run(name: str, fn, *a) -> Any:
            log(f"{name} ...")
            try:
                value = fn(*a)
                results[name] = value
                return value
            except Exception as e:  # noqa: BLE001 - a figure that fails is reported, the rest go on
                nonlocal ok
                ok = False
                results["errors"][name] = f"{type(e).__name__}: {e}"
                log(f"{name} FAILED: {e}\n{traceback.format_exc()}")
                with contextlib.suppress(Exception):
                    cluster.stop_operator()
                return None

        if only & {"burst", "requests", "cpu"}:
            run("floor_burst", phases.floor_burst, args.burst)
            run("floor_requests", phases.floor_requests, args.burst)
            run("request_costs", phases.request_costs, args.burst)
        if "steady" in only:
            run("floor_steady", phases.floor_steady, args.steady_rate, args.steady_seconds)
        floors = [ns for ns, key in (("floor-burst", "floor_burst"),
                                     ("floor-requests", "floor_requests"),
                                     ("floor-steady", "floor_steady"),
                                     ("request-costs", "request_costs")) if key in results]
        if floors:
            took = cluster.objects.delete_namespaces(floors)
            log(f"  deleted the floors' namespaces in {took:.0f}s")
            phases.settle_cluster()
        if "steady" in only:
            run("steady", phases.steady, args.steady_rate, args.steady_seconds)
        if "recovery" in only:
            results["recovery"] = []
            for mode in args.cut_modes:
                rec = run(f"recovery_{mode}", phases.recovery, mode, args.recovery_tasks,
                          args.cut_seconds)
                if rec:
                    results["recovery"].append(rec)
        if "sigkill" in only:
            run("sigkill", phases.sigkill, args.sigkill_tasks, args.sigkill_at)
        ns = "burst"
        if only & {"burst", "requests", "cpu"}:
            run("burst", phases.burst, args.burst)
        if only & {"idle", "rss"}:
            def finished() -> list[dict[str, Any]]:
                if cluster.operator is None:
                    phases.start_operator("finished")
                    cluster.objects.ensure_namespace(ns)
                if phases.workflows.count():
                    results["finish"] = phases.finish()
                return phases.finished_levels(ns, sorted(args.finished), args.idle_window,
                                              "idle" in only, args.idle_at)

            run("finished", finished)
        cluster.stop_operator()
    except Exception as e:  # noqa: BLE001
        ok = False
        results["errors"]["bench"] = f"{type(e).__name__}: {e}"
        log(f"bench FAILED: {e}\n{traceback.format_exc()}")
    finally:
        cluster.stop()
    with open("/proc/loadavg") as f:
        results["loadavg_after"] = f.read().split()[:3]
    results["run_s"] = round(time.monotonic() - started, 1)
    add_notes(results)
    text = report.render(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"figures written to {args.json}")
    if args.keep or not ok:
        log(f"cluster directory kept: {workdir} (logs, operator-*.log)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def add_notes(results: dict[str, Any]) -> None:
    notes = results["notes"]
    notes.append("operator: a subprocess with its shipped defaults ("
                 + ", ".join(f"{k}={v}" for k, v in SHIPPED_ENV.items())
                 + ", leader election off) under its own ServiceAccount with the cluster-wide "
                 "RBAC of manifests/; its requests are counted from the API server's audit log "
                 "by that identity, all requests from /metrics (apiserver_request_total)")
    for phase in ("floor_burst", "burst", "steady"):
        pt = (results.get(phase) or {}).get("per_task")
        if pt and pt.get("machine_busy_pct") is not None:
            unknown = pt["unknown_cpu_s"]
            if unknown > 0.1 * pt["window_s"] * results["machine"]["cores"]:
                notes.append(f"{phase}: {unknown:g} CPU-s of its {pt['window_s']:g} s window "
                             "went to neither the bench nor the cluster's processes (other "
                             "work on the machine, or the kernel's interrupt handling): the "
                             "figures may be slower than on an otherwise idle machine")
    pt = (results.get("burst") or {}).get("per_task")
    resync = float(SHIPPED_ENV["MLTASK_RESYNC_SECONDS"])
    if pt and pt["window_s"] > resync:
        notes.append(f"the burst's window ({pt['window_s']:g} s, until the operator was quiet) "
                     f"is longer than the resync interval ({resync:g} s): the resync passes in "
                     "it are part of the requests and CPU per started task (the operator "
                     f"listed MLTasks {pt['operator_mltask_lists']} times in it)")
    notes.append(f"load average before {' '.join(results['loadavg_before'])}, after "
                 f"{' '.join(results['loadavg_after'])}")
    for name, err in results["errors"].items():
        notes.append(f"{name} failed: {err}")
