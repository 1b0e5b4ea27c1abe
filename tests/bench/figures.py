"""The bench's measurements, one function per phase; each returns plain dicts of figures."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.cluster import BenchCluster
from bench.load import (
    AG,
    AP,
    AV,
    G,
    P,
    Store,
    V,
    operator_workflow,
    parallel,
    renamed,
    seeded_task,
    succeeded_workflow,
    task_body,
    wait_until,
)
from bench.meter import Meter, Window, memory_mib, quiet
from mltask_operator.settings import Settings

COMPLETED = "completed"


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def names(prefix: str, n: int, start: int = 0) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(start, start + n)]


def per_task(window: Window, n: int) -> dict[str, Any]:
    """Requests and CPU of a window divided by the tasks it served."""
    def table(counts: Counter) -> dict[str, float]:
        return {" ".join(x for x in k if x): round(v / n, 3)
                for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}

    everyone = window.all_requests.copy()
    everyone.subtract(window.bench)
    return {
        "tasks": n,
        "window_s": round(window.seconds, 1),
        "operator_requests": round(sum(window.operator.values()) / n, 2),
        "operator_breakdown": table(window.operator),
        # today's resync pass starts with a LIST of MLTasks, then GETs every task and Workflow
        "operator_mltask_lists": window.operator[("LIST", "mltasks", "")],
        "cluster_requests": round(sum((+everyone).values()) / n, 2),
        "cluster_breakdown": table(+everyone),
        "others_breakdown": table(window.others),
        "bench_requests": round(sum(window.bench.values()) / n, 2),
        "all_requests": round(sum(window.all_requests.values()) / n, 2),
        "cpu_ms": {name: round(1000 * s / n, 1) for name, s in window.cpu.items()},
        "machine_busy_pct": round(100 * window.busy / window.capacity, 1)
        if window.capacity else None,
        "unknown_cpu_s": round(window.other_cpu(), 1),
    }


class Phases:
    """State shared by the phases: the cluster, the meter, the two watches' stores."""

    def __init__(self, cluster: BenchCluster, meter: Meter, workflows: Store, tasks: Store,
                 args, log) -> None:
        self.cluster = cluster
        self.objects = cluster.objects
        self.meter = meter
        self.workflows = workflows
        self.tasks = tasks
        self.args = args
        self.log = log
        self.threads = args.threads
        self.settings = Settings.from_env(cluster.operator_env())
        self.template: dict[str, Any] | None = None  # a task the operator finished
        self._last_list = 0.0  # when the operator last listed MLTasks (resync_passes)

    # -- helpers

    def create_tasks(self, ns: str, task_names: list[str]):
        calls = parallel(self.objects.create_task, [task_body(ns, n) for n in task_names],
                         self.threads)
        errors = [c.error for c in calls if c.error]
        if errors:
            self.log(f"  {len(errors)} creates failed, first: {errors[0]}")
        return calls

    def workflows_in(self, ns: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.workflows.select(ns)

    def start_operator(self, label: str, proxy=None, warmup: bool = True) -> None:
        t0 = time.monotonic()
        self.cluster.start_operator(label, proxy)
        self.log(f"  operator started ({label}) in {time.monotonic() - t0:.1f}s")
        if warmup:
            self.warm_up(f"{label}-warmup")

    def warm_up(self, ns: str) -> None:
        """One task through the operator: its watches work; then it goes quiet."""
        self.objects.ensure_namespace(ns)
        self.objects.create_task(task_body(ns, "warmup"))
        if not wait_until(lambda: self.workflows.count(ns) >= 1, 120):
            raise RuntimeError(f"the operator made no Workflow for its warm-up task in 120s; "
                               f"log: {self.cluster.operator.log_path}")
        ok, waited = quiet(self.cluster, timeout=60)
        self.log(f"  warm-up done; operator {'quiet' if ok else 'still busy'} after "
                 f"{waited:.0f}s")

    def cleanup(self, namespaces: list[str]) -> None:
        """Stop the operator, delete the namespaces, wait until they are gone."""
        self.cluster.stop_operator()
        took = self.objects.delete_namespaces(namespaces)
        self.log(f"  deleted {', '.join(namespaces)} in {took:.0f}s")
        self.settle_cluster()

    # -- floors (no operator runs)

    def floor_burst(self, n: int) -> dict[str, Any]:
        ns = "floor-burst"
        self.objects.ensure_namespace(ns)
        a = self.meter.sample()
        calls = self.create_tasks(ns, names("t", n))
        t_tasks = max(c.ended for c in calls) - min(c.started for c in calls)
        built = [operator_workflow(c.result, self.settings) for c in calls if not c.error]
        calls2 = parallel(self.objects.create_workflow, built, self.threads)
        t_wfs = max(c.ended for c in calls2) - min(c.started for c in calls2)
        win = Meter.window(a, self.meter.sample())
        errors = sum(1 for x in calls + calls2 if x.error)
        self.log(f"  floor: {n} MLTasks in {t_tasks:.1f}s, {len(built)} Workflows in "
                 f"{t_wfs:.1f}s ({errors} errors)")
        return {"tasks": n, "mltasks_s": round(t_tasks, 2), "workflows_s": round(t_wfs, 2),
                "floor_s": round(t_tasks + t_wfs, 2), "errors": errors,
                "per_task": per_task(win, n)}

    def floor_requests(self, n: int) -> dict[str, Any]:
        """The operator's own requests, made by the same client: N MLTasks, then for each the
        operator's reconcile (mltask_operator.handlers.mltask, its code and builders) over a
        cache holding what the create returned, on 16 threads: its Workflow, working volume,
        status write and Event, with no watch, queue or Kopf in between. What an operator
        that cost nothing would take for the requests its design makes."""
        from mltask_operator.cache import TASK, Cache
        from mltask_operator.clients.kube import Kube
        from mltask_operator.handlers.mltask import reconcile_task

        ns = "floor-requests"
        self.objects.ensure_namespace(ns)
        a = self.meter.sample()
        calls = self.create_tasks(ns, names("t", n))
        t_tasks = max(c.ended for c in calls) - min(c.started for c in calls)
        created = [c.result for c in calls if not c.error]
        cache = Cache()
        for obj in created:
            cache.put(TASK, obj)
        kube = Kube(self.objects.api)
        calls2 = parallel(lambda name: reconcile_task(
            kube, cache, ns, name, defaults=self.settings.run_defaults,
            transfer=self.settings.transfer), [o["metadata"]["name"] for o in created],
            self.threads)
        t_start = max(c.ended for c in calls2) - min(c.started for c in calls2)
        win = Meter.window(a, self.meter.sample())
        errors = [x.error for x in calls + calls2 if x.error]
        self.log(f"  floor of the operator's requests: {n} MLTasks in {t_tasks:.1f}s, "
                 f"{len(created)} starts in {t_start:.1f}s ({len(errors)} errors"
                 + (f", first: {errors[0]}" if errors else "") + ")")
        return {"tasks": n, "mltasks_s": round(t_tasks, 2), "starts_s": round(t_start, 2),
                "floor_s": round(t_tasks + t_start, 2), "errors": len(errors),
                "per_task": per_task(win, n)}

    def request_costs(self, n: int) -> dict[str, Any]:
        """What each of the operator's requests costs the API server, one kind at a time: N
        MLTasks, then the bodies the operator's reconcile writes for each (recorded, not
        sent), replayed kind by kind with 16 threads: the Workflows, the working volumes, the
        status writes, the Events. API server and etcd CPU per request, and the wall time of
        each kind."""
        from mltask_operator.cache import TASK, Cache
        from mltask_operator.clients.kube import Kube
        from mltask_operator.handlers.mltask import reconcile_task

        ns = "request-costs"
        self.objects.ensure_namespace(ns)
        kinds: dict[str, dict[str, Any]] = {}

        def measure(label: str, fn, items: list[Any]) -> list[Any]:
            a = self.meter.sample()
            calls = parallel(fn, items, self.threads)
            took = max(c.ended for c in calls) - min(c.started for c in calls)
            time.sleep(1)  # the API server's work that follows the responses
            win = Meter.window(a, self.meter.sample())
            kinds[label] = {
                "requests": len(items), "wall_s": _r(took),
                "errors": sum(1 for c in calls if c.error),
                **{f"{name}_ms": round(1000 * win.cpu.get(name, 0) / len(items), 2)
                   for name in ("kube-apiserver", "etcd", "kube-controller-manager")}}
            return [c.result for c in calls if not c.error]

        created = measure("POST mltasks", self.objects.create_task,
                          [task_body(ns, name) for name in names("t", n)])
        recorder = _Recorder()
        cache = Cache()
        for obj in created:
            cache.put(TASK, obj)
        for obj in created:
            reconcile_task(recorder, cache, ns, obj["metadata"]["name"],
                           defaults=self.settings.run_defaults,
                           transfer=self.settings.transfer)
        kube = Kube(self.objects.api)
        measure("POST workflows", self.objects.create_workflow, recorder.workflows)
        measure("POST persistentvolumeclaims", kube.ensure_pvc, recorder.pvcs)
        measure("PUT mltasks/status", self.objects.replace_task_status, recorder.statuses)
        measure("POST events", lambda args: kube.event(*args), recorder.events)
        floor = sum(kinds[k]["kube-apiserver_ms"] for k in ("POST mltasks", "POST workflows"))
        design = sum(v["kube-apiserver_ms"] for v in kinds.values())
        self.log("  API server CPU per request: " + ", ".join(
            f"{k} {v['kube-apiserver_ms']:g} ms" for k, v in kinds.items()))
        return {"tasks": n, "kinds": kinds, "floor_apiserver_ms": round(floor, 2),
                "design_apiserver_ms": round(design, 2)}

    def paced(self, ns: str, prefix: str, rate: float, seconds: float, direct: bool
              ) -> tuple[dict[str, float], float, float]:
        """Create rate x seconds tasks, one every 1/rate s (16 threads); with `direct`, each
        job also creates the task's Workflow itself. Returns (created time by task name,
        first, last)."""
        total = int(rate * seconds)
        created: dict[str, float] = {}
        lock = threading.Lock()
        errors: list[str] = []

        def job(name: str) -> None:
            try:
                obj = self.objects.create_task(task_body(ns, name))
                with lock:
                    created[name] = time.monotonic()
                if direct:
                    self.objects.create_workflow(operator_workflow(obj, self.settings))
            except Exception as e:  # noqa: BLE001 - reported
                errors.append(f"{name}: {e}")

        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for i, name in enumerate(names(prefix, total)):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(job, name)
        if errors:
            self.log(f"  {len(errors)} paced creates failed, first: {errors[0]}")
        times = sorted(created.values())
        return created, times[0] if times else t0, times[-1] if times else t0

    def latencies(self, ns: str, created: dict[str, float], timeout: float
                  ) -> dict[str, Any]:
        wf_of = {f"{n}-1": n for n in created}
        wait_until(lambda: sum(1 for k in self.workflows_in(ns) if k[1] in wf_of)
                   >= len(created), timeout)
        seen = {k[1]: v["added"] for k, v in self.workflows_in(ns).items()
                if k[1] in wf_of and v["added"] is not None}
        lat = [seen[wf] - created[task] for wf, task in wf_of.items() if wf in seen]
        return {"tasks": len(created), "with_workflow": len(lat),
                "p50_s": _r(percentile(lat, 50)), "p90_s": _r(percentile(lat, 90)),
                "p99_s": _r(percentile(lat, 99)), "max_s": _r(max(lat) if lat else None)}

    def floor_steady(self, rate: float, seconds: float) -> dict[str, Any]:
        ns = "floor-steady"
        self.objects.ensure_namespace(ns)
        created, first, last = self.paced(ns, "t", rate, seconds, direct=True)
        out = self.latencies(ns, created, timeout=120)
        out["achieved_rate"] = _r(len(created) / (last - first) if last > first else None)
        self.log(f"  floor steady: p50 {out['p50_s']}s p99 {out['p99_s']}s at "
                 f"{out['achieved_rate']}/s")
        return out

    # -- the operator

    def steady(self, rate: float, seconds: float) -> dict[str, Any]:
        ns = "steady"
        try:
            self.start_operator("steady")
            self.objects.ensure_namespace(ns)
            a = self.meter.sample()
            created, first, last = self.paced(ns, "t", rate, seconds, direct=False)
            out = self.latencies(ns, created, timeout=self.args.timeout)
            quiet(self.cluster, timeout=120)
            out["achieved_rate"] = _r(len(created) / (last - first) if last > first else None)
            out["per_task"] = per_task(Meter.window(a, self.meter.sample()), len(created))
            self.log(f"  steady: p50 {out['p50_s']}s p90 {out['p90_s']}s p99 {out['p99_s']}s "
                     f"({out['with_workflow']}/{out['tasks']} Workflows)")
        finally:
            self.cleanup([ns, "steady-warmup"])
        return out

    def burst(self, n: int) -> dict[str, Any]:
        """N tasks at once; the operator stays up with them for the finished-task phase."""
        ns = "burst"
        self.start_operator("burst")
        out: dict[str, Any] = {"tasks": n, "rss_start_mib": _mem(self.cluster)}
        self.objects.ensure_namespace(ns)
        a = self.meter.sample()
        t0 = time.monotonic()
        calls = self.create_tasks(ns, names("t", n))
        out["create_s"] = _r(max(c.ended for c in calls) - t0)
        done = wait_until(lambda: self.workflows.count(ns) >= n, self.args.timeout, 0.1)
        added = [v["added"] for v in self.workflows_in(ns).values() if v["added"]]
        out["workflows"] = len(added)
        out["all_workflows_s"] = _r(max(added) - t0) if done and added else None
        if not done:
            out["note"] = (f"only {len(added)} of {n} Workflows after {self.args.timeout:.0f}s")
        ok, waited = quiet(self.cluster, timeout=180)
        out["per_task"] = per_task(Meter.window(a, self.meter.sample()), n)
        out["quiet_after_s"] = _r(waited)
        out["rss_after_mib"] = _mem(self.cluster)
        self.log(f"  burst: {len(added)}/{n} Workflows, the last {out['all_workflows_s']}s "
                 f"after the first create; operator quiet {waited:.0f}s later")
        return out

    def finish(self) -> dict[str, Any]:
        """Argo's part for every Workflow in the cluster: all steps Succeeded; then wait until
        the operator marked every task completed."""
        wfs = [k for k, v in self.workflows.select().items() if v.get("phase") != "Succeeded"]
        t0 = time.monotonic()
        calls = parallel(lambda key: self.objects.succeed_workflow(*key), wfs, self.threads)
        errors = [c.error for c in calls if c.error]
        total = self.tasks.count()
        ok = wait_until(lambda: self.tasks.count(None, lambda r: r["status"] == COMPLETED)
                        >= total, self.args.timeout, 0.5)
        took = time.monotonic() - t0
        done = self.tasks.count(None, lambda r: r["status"] == COMPLETED)
        self.log(f"  {len(wfs)} Workflows succeeded ({len(errors)} errors); "
                 f"{done}/{total} tasks completed in {took:.0f}s")
        if not ok:
            raise RuntimeError(f"only {done} of {total} tasks completed after "
                               f"{self.args.timeout}s")
        quiet(self.cluster, timeout=180)
        return {"finished": len(wfs), "errors": len(errors), "seconds": _r(took)}

    def make_template(self, ns: str) -> None:
        """A task the operator finished itself: the model for seeded finished tasks."""
        for (tns, name), rec in self.tasks.select(ns).items():  # noqa: B007 - used after
            if rec["status"] == COMPLETED and name != "warmup":
                break
        else:
            self.objects.create_task(task_body(ns, "template"))
            if not wait_until(lambda: ("template-1" in {k[1] for k in self.workflows_in(ns)}),
                              120):
                raise RuntimeError("no Workflow for the template task")
            self.objects.succeed_workflow(ns, "template-1")
            if not wait_until(lambda: self.tasks.select(ns).get(
                    (ns, "template"), {}).get("status") == COMPLETED, 120):
                raise RuntimeError("the template task did not complete")
            tns, name = ns, "template"
        custom = self.objects.custom
        self.template = custom.get_namespaced_custom_object(G, V, tns, P, name)

    def seed(self, ns: str, count: int, start: int) -> dict[str, Any]:
        """`count` finished tasks as the operator leaves them, without running them: the
        template task's status and the operator's annotations under the new name, and a
        Succeeded Workflow built by the operator's own builder."""
        assert self.template is not None
        old = self.template["metadata"]["name"]
        status = self.template.get("status") or {}
        try:
            from mltask_operator.api.v1alpha1.mltask import MLTask
            from mltask_operator.mltask_status import compute_status
        except ImportError:  # the operator changed: the renamed template status stands
            compute_status = None

        def one(name: str) -> None:
            obj = self.objects.create_task(seeded_task(self.template, ns, name))
            wf = succeeded_workflow(operator_workflow(obj, self.settings))
            obj["status"] = renamed(status, f"{old}-", f"{name}-")
            if compute_status is not None:
                now = _parse_time(status.get("completionTime"))
                with_status = MLTask.model_validate(obj)
                obj["status"] = compute_status(with_status, wf, now).to_k8s()
            self.objects.replace_task_status(obj)
            self.objects.create_workflow(wf)

        t0 = time.monotonic()
        calls = parallel(one, names("f", count, start), self.threads)
        errors = [c.error for c in calls if c.error]
        self.log(f"  seeded {count - len(errors)} finished tasks in "
                 f"{time.monotonic() - t0:.0f}s ({len(errors)} errors"
                 + (f", first: {errors[0]}" if errors else "") + ")")
        return {"seeded": count - len(errors), "errors": len(errors)}

    def finished_levels(self, ns: str, levels: list[int], window_s: float,
                        measure_idle: bool, idle_at: list[int] | None
                        ) -> list[dict[str, Any]]:
        out = []
        seeded_so_far = 0
        for level in levels:
            have = self.tasks.count(ns, lambda r: r["status"] == COMPLETED)
            rec: dict[str, Any] = {"level": level}
            if have < level:
                if self.template is None:
                    self.make_template(ns)
                    have = self.tasks.count(ns, lambda r: r["status"] == COMPLETED)
                # Seeded with the operator stopped, then a new operator started: it finds
                # them finished as a restarted operator would (an operator that sees a task
                # without status starts it, whatever its annotations say)
                self.cluster.stop_operator()
                rec["seed"] = self.seed(ns, level - have, seeded_so_far)
                seeded_so_far += level - have
                a = self.meter.sample()
                t0 = time.monotonic()
                self.cluster.start_operator(f"finished-{level}")
                rec["seed"]["operator_start_s"] = _r(time.monotonic() - t0)
                # at 10,000 tasks today's resync never lets the operator rest long: bounded
                ok, waited = quiet(self.cluster, timeout=min(self.args.timeout, 240))
                win = Meter.window(a, self.meter.sample())
                rec["seed"]["operator_status_writes"] = sum(
                    v for k, v in win.operator.items() if k[1] == "mltasks/status")
                rec["seed"]["operator_requests"] = sum(win.operator.values())
                rec["seed"]["settled_s"] = _r(waited)
                rec["seed"]["settled"] = ok
            else:
                ok, waited = quiet(self.cluster, timeout=min(self.args.timeout, 240))
            k = self.tasks.count(ns, lambda r: r["status"] == COMPLETED)
            running = self.tasks.count(None, lambda r: r["status"] != COMPLETED)
            rec.update({"finished": k, "unfinished_in_cluster": running})
            if measure_idle and (idle_at is None or level in idle_at):
                rec["idle"] = self.idle(k, window_s)
            rec["rss_mib"] = _mem(self.cluster)
            self.log(f"  operator RSS with {k} finished tasks: {rec['rss_mib']}")
            out.append(rec)
        return out

    def resync_passes(self, after: float, until: float) -> float | None:
        """The monotonic time the operator's next resync pass starts after `after` (its first
        LIST of MLTasks after 10 s without one: a pass lists page by page, then reconciles),
        waiting until `until` at most; None if none started."""
        key = ("LIST", "mltasks", "")
        last_list, count = self._last_list, self.meter.operator_counts()[key]
        while time.monotonic() < until:
            time.sleep(0.25)
            now, new = time.monotonic(), self.meter.operator_counts()[key]
            if new > count:
                count = new
                starts = now - last_list > 10
                last_list = self._last_list = now
                if starts and now > after:
                    return now
        return None

    def idle(self, k: int, window_s: float) -> dict[str, Any]:
        """Requests per finished task per minute, over one resync cycle: from the start of
        one resync pass to the start of the next, at most `window_s` (with no pass seen, a
        window of `window_s`)."""
        # an operator whose resync lists (before issue 13) starts a pass within an interval;
        # one that walks its memory never lists: then the window is a fixed one, at once
        now = time.monotonic()
        start = self.resync_passes(now, now + self.settings.resync_seconds + 10)
        a = self.meter.sample()
        end = self.resync_passes(a.t + 1, a.t + window_s) if start else None
        if end is None:
            time.sleep(max(0.0, a.t + window_s - time.monotonic()))
        win = Meter.window(a, self.meter.sample())
        minutes = win.seconds / 60
        operator = sum(win.operator.values())
        # a watch reopened (after MLTASK_WATCH_IDLE_TIMEOUT of silence, or its server timeout)
        # costs the same with 10 tasks as with 10,000: counted apart from per-object requests
        watches = sum(v for key, v in win.operator.items() if key[0] == "WATCH")
        per_object = operator - watches
        out = {
            "operator_object_requests_per_task_min": round(per_object / k / minutes, 3),
            "operator_watch_requests_per_s": round(watches / win.seconds, 2),
            "window_s": _r(win.seconds),
            "window": ("one resync cycle (pass start to pass start)" if end else
                       "from a resync pass's start, capped (the next pass had not started)"
                       if start else "no resync pass seen: a fixed window"),
            "operator_requests_per_task_min": round(operator / k / minutes, 3),
            "operator_requests_per_s": round(operator / win.seconds, 1),
            "operator_breakdown_per_min": {
                " ".join(x for x in key if x): round(v / minutes, 1)
                for key, v in sorted(win.operator.items(), key=lambda kv: -kv[1])},
            "cluster_requests_per_task_min": round(
                sum((+_minus(win.all_requests, win.bench)).values()) / k / minutes, 3),
            "others_breakdown_per_min": {  # neither the operator's nor the bench's
                " ".join(x for x in key if x): round(v / minutes, 1)
                for key, v in sorted(win.others.items(), key=lambda kv: -kv[1])},
            "operator_cpu_pct": round(100 * win.cpu.get("operator", 0) / win.seconds, 1),
            "apiserver_cpu_pct": round(100 * win.cpu.get("kube-apiserver", 0) / win.seconds,
                                       1),
        }
        self.log(f"  idle with {k} finished tasks: {out['operator_requests_per_task_min']} "
                 f"operator requests per task per minute ({out['operator_requests_per_s']}/s; "
                 f"not watches: {out['operator_object_requests_per_task_min']}) "
                 f"over {win.seconds:.0f}s: {out['window']}")
        return out

    def settle_cluster(self, timeout: float = 240) -> None:
        """Wait until the API server is near idle: the controller manager's garbage collector
        goes on deleting a deleted namespace's objects (a GET each, 20/s) after the namespace
        is gone, and would load the next figure."""
        t0 = time.monotonic()
        a = self.meter.sample()
        while time.monotonic() - t0 < timeout:
            time.sleep(3)
            b = self.meter.sample()
            win = Meter.window(a, b)
            requests = sum(v for key, v in win.all_requests.items() if key[0] != "WATCH")
            if requests / win.seconds < 5 and win.cpu.get("kube-apiserver", 0) < 0.15 * (
                    win.seconds):
                self.log(f"  cluster settled in {time.monotonic() - t0:.0f}s")
                return
            a = b
        self.log(f"  cluster still busy after {timeout:.0f}s; going on")

    def recovery(self, mode: str, n: int, cut_s: float) -> dict[str, Any]:
        ns = f"recovery-{mode}"
        proxy = self.cluster.proxy()
        try:
            self.start_operator(ns, proxy=proxy)
            self.objects.ensure_namespace(ns)
            t_cut = time.monotonic()
            proxy.cut(mode)
            time.sleep(min(2.0, cut_s / 10))
            calls = self.create_tasks(ns, names("t", n))
            created_by = max(c.ended for c in calls) - t_cut
            during = self.workflows.count(ns)
            time.sleep(max(0.0, t_cut + cut_s - time.monotonic()))
            t_back = time.monotonic()
            proxy.restore()
            done = wait_until(lambda: self.workflows.count(ns) >= n, self.args.timeout, 0.1)
            added = [v["added"] for v in self.workflows_in(ns).values() if v["added"]]
            out = {"mode": mode, "tasks": n, "cut_s": cut_s,
                   "tasks_created_within_s": _r(created_by),
                   "workflows_during_cut": during, "workflows": len(added),
                   # the resync runs every 60 s from the operator's start: where the return
                   # falls in that cycle matters while the resync is what recovers
                   "return_after_operator_start_s": _r(t_back - self.cluster.operator_started),
                   "after_return_s": _r(max(added) - t_back) if done and added else None}
            if not done:
                out["note"] = (f"only {len(added)} of {n} Workflows "
                               f"{self.args.timeout:.0f}s after the return")
            self.log(f"  recovery ({mode}): {len(added)}/{n} Workflows, the last "
                     f"{out['after_return_s']}s after the connection came back")
        finally:
            self.cluster.stop_operator()
            proxy.close()
            self.cleanup([ns, f"{ns}-warmup"])
        return out

    def sigkill(self, n: int, at: float) -> dict[str, Any]:
        ns = "sigkill"
        try:
            return self._sigkill(ns, n, at)
        finally:
            self.cleanup([ns, f"{ns}-warmup"])

    def _sigkill(self, ns: str, n: int, at: float) -> dict[str, Any]:
        self.start_operator(ns)
        self.objects.ensure_namespace(ns)
        creator = threading.Thread(target=self.create_tasks, args=(ns, names("t", n)),
                                   daemon=True)
        creator.start()
        kill_at = math.ceil(at * n)
        if not wait_until(lambda: self.workflows.count(ns) >= kill_at, self.args.timeout, 0.05):
            raise RuntimeError(f"not {kill_at} Workflows after {self.args.timeout}s")
        self.cluster.kill_operator()
        at_kill = self.workflows.count(ns)
        t_restart = time.monotonic()
        self.cluster.start_operator(f"{ns}-restarted")
        healthy = time.monotonic() - t_restart
        creator.join()

        def converged() -> bool:
            wfs = {k[1] for k in self.workflows_in(ns)}
            tasks = self.tasks.select(ns)
            return len(tasks) >= n and all(r["workflow"] in wfs for r in tasks.values())

        done = wait_until(converged, self.args.timeout, 0.2)
        took = time.monotonic() - t_restart
        per_task: Counter[str] = Counter()
        per_attempt: Counter[tuple[str, str]] = Counter()
        for rec in self.workflows_in(ns).values():
            per_task[rec["task"]] += 1
            per_attempt[(rec["task"], rec["attempt"])] += 1
        out = {"tasks": n, "killed_at_workflows": at_kill,
               "duplicates": sum(c - 1 for c in per_task.values() if c > 1),
               "duplicates_same_attempt": sum(c - 1 for c in per_attempt.values() if c > 1),
               "workflows": sum(per_task.values()),
               "restart_healthy_s": _r(healthy),
               "converged_s": _r(took) if done else None}
        if not done:
            out["note"] = f"not converged {self.args.timeout:.0f}s after the restart"
        self.log(f"  sigkill at {at_kill}/{n} Workflows: {out['duplicates']} duplicates, "
                 f"converged {out['converged_s']}s after the restart")
        return out


class _Recorder:
    """Stands in for the operator's API calls (clients.kube.Kube) in request_costs: keeps
    what a start would send, sends nothing."""

    instance = "bench"

    def __init__(self) -> None:
        self.workflows: list[dict[str, Any]] = []
        self.pvcs: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.events: list[tuple[Any, ...]] = []

    def create(self, kind: Any, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.workflows.append(body)
        return body, True

    def ensure_pvc(self, body: dict[str, Any]) -> bool:
        self.pvcs.append(body)
        return True

    def replace_status(self, kind: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(body)
        return body

    def event(self, *args: Any) -> None:
        self.events.append(args)


def _minus(a: Counter, b: Counter) -> Counter:
    out = a.copy()
    out.subtract(b)
    return out


def _mem(cluster: BenchCluster) -> dict[str, float]:
    return {k: round(v, 1) for k, v in memory_mib(cluster.pid("operator")).items()}


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def _parse_time(value: str | None):
    import datetime

    if not value:
        return datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


__all__ = ["AG", "AP", "AV", "Phases"]
