"""The bench's client side: a request-counting API client, MLTask and Workflow bodies, parallel
creation with a fixed number of threads, and watches that timestamp what they see."""

from __future__ import annotations

import copy
import datetime
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config, watch

from harness import argo_standin
from harness.tasks import RESULT, example
from mltask_operator import labels as keys
from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders import workflow as wfb
from mltask_operator.clients.kube import classify
from mltask_operator.settings import Settings

G, V, P = "mltask.dev", "v1alpha1", "mltasks"
AG, AV, AP = "argoproj.io", "v1alpha1", "workflows"


# --------------------------------------------------------------------------- counting client


class RequestCounter:
    """Requests the bench made, by (verb, resource[/subresource], dry run), as the API server
    names them in apiserver_request_total."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def add(self, method: str, url: str) -> None:
        key = classify(method, url)
        if key is not None:
            with self._lock:
                self._counts[key] += 1

    def snapshot(self) -> Counter[tuple[str, str, str]]:
        with self._lock:
            return self._counts.copy()


class CountingApiClient(client.ApiClient):
    """An ApiClient that counts every request it sends."""

    counter: RequestCounter

    def call_api(self, method, url, *args, **kwargs):  # type: ignore[override]
        self.counter.add(method, url)
        return super().call_api(method, url, *args, **kwargs)


def make_client(kubeconfig: str, threads: int, counter: RequestCounter) -> CountingApiClient:
    """The bench's client: `threads` connections, so 16 threads never wait for one."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = max(threads, 4) + 4  # the threads, and the watches
    api = CountingApiClient(cfg)
    api.counter = counter
    return api


# --------------------------------------------------------------------------- bodies


def task_body(namespace: str, name: str) -> dict[str, Any]:
    """The bench's MLTask: examples/mltask-training.yaml under another name."""
    body = example("training")
    body["metadata"] = {"name": name, "namespace": namespace}
    return body


def operator_settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


def operator_workflow(task_obj: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The Workflow the operator creates for a task's first attempt, built by the operator's
    own builder with the operator's settings."""
    task = MLTask.model_validate(task_obj)
    inputs = wfb.ResolvedInputs(dataset_uri=str(task.spec.input.dataset.uri),
                                model_uri=str(task.spec.input.model.uri)
                                if task.spec.input.model else None)
    return wfb.build_workflow(task, attempt=1, start_at=StepName.DOWNLOAD, inputs=inputs,
                              defaults=settings.run_defaults, transfer=settings.transfer)


def succeeded_workflow(wf: dict[str, Any]) -> dict[str, Any]:
    """A Workflow as Argo leaves it when every step succeeded (harness.argo_standin)."""
    return argo_standin.succeed_all(wf, result=RESULT, metrics={"accuracy": 0.9})


# --------------------------------------------------------------------------- parallel calls


@dataclass
class Call:
    key: Any
    started: float
    ended: float
    result: Any = None
    error: str | None = None


def parallel(fn: Callable[[Any], Any], items: Iterable[Any], threads: int) -> list[Call]:
    """fn(item) for every item with `threads` threads; timings and errors per item."""

    def one(item: Any) -> Call:
        t0 = time.monotonic()
        try:
            result = fn(item)
        except client.ApiException as e:
            return Call(item, t0, time.monotonic(), error=f"HTTP {e.status} {e.reason}")
        except Exception as e:  # noqa: BLE001 - counted and reported, never hidden
            return Call(item, t0, time.monotonic(), error=f"{type(e).__name__}: {e}")
        return Call(item, t0, time.monotonic(), result)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, list(items)))


class Objects:
    """The bench's calls over one client."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def create_task(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            G, V, body["metadata"]["namespace"], P, body)

    def replace_task_status(self, body: dict[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return self.custom.replace_namespaced_custom_object_status(
            G, V, meta["namespace"], P, meta["name"], body)

    def create_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            AG, AV, body["metadata"]["namespace"], AP, body)

    def succeed_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        """Argo's part: the Workflow's steps all succeed (read, then replace with the read
        resourceVersion; a conflict reads again)."""
        return argo_standin.ArgoStandIn(self.api).update(
            namespace, name, argo_standin.succeed_all, result=RESULT,
            metrics={"accuracy": 0.9})

    def ensure_namespace(self, name: str) -> None:
        try:
            self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
                name=name)))
        except client.ApiException as e:
            if e.status != 409:
                raise

    def delete_namespaces(self, names: list[str], timeout: float = 600) -> float:
        """Delete namespaces and wait until they are gone; returns the seconds it took."""
        t0 = time.monotonic()
        for name in names:
            try:
                self.core.delete_namespace(name, propagation_policy="Background")
            except client.ApiException as e:
                if e.status != 404:
                    raise
        pending = list(names)
        while pending:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"namespaces {pending} not gone after {timeout:.0f}s")
            try:
                self.core.read_namespace(pending[0])
                time.sleep(1)
            except client.ApiException as e:
                if e.status != 404:
                    raise
                pending.pop(0)
        return time.monotonic() - t0


# --------------------------------------------------------------------------- watches


class Store:
    """What a watch saw, per (namespace, name): when it was first ADDED (monotonic seconds;
    None for objects that existed when the watch started) and the fields `extract` keeps."""

    def __init__(self, extract: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.extract = extract
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()

    def apply(self, kind: str, obj: dict[str, Any], t: float) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self.lock:
            if kind == "DELETED":
                self.items.pop(key, None)
                return
            rec = self.items.get(key)
            if rec is None:
                rec = self.items[key] = {"added": t if kind == "ADDED" else None}
            rec.update(self.extract(obj))

    def select(self, namespace: str | None = None,
               where: Callable[[dict[str, Any]], bool] | None = None
               ) -> dict[tuple[str, str], dict[str, Any]]:
        with self.lock:
            return {k: dict(v) for k, v in self.items.items()
                    if (namespace is None or k[0] == namespace) and (where is None or where(v))}

    def count(self, namespace: str | None = None,
              where: Callable[[dict[str, Any]], bool] | None = None) -> int:
        with self.lock:
            return sum(1 for k, v in self.items.items()
                       if (namespace is None or k[0] == namespace) and (where is None or where(v)))


def workflow_fields(obj: dict[str, Any]) -> dict[str, Any]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return {"task": labels.get(keys.TASK), "attempt": labels.get(keys.ATTEMPT),
            "phase": (obj.get("status") or {}).get("phase")}


def task_fields(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {"status": status.get("status"), "workflow": status.get("workflowName"),
            "attempt": status.get("attempt")}


class Watcher:
    """Watches one custom resource cluster-wide in a daemon thread and feeds a Store; lists
    again when the watch expires (410) and watches on from where it stopped otherwise."""

    def __init__(self, api: client.ApiClient, group: str, version: str, plural: str,
                 store: Store) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.gvp = (group, version, plural)
        self.store = store
        self.synced = threading.Event()
        self.stopped = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)

    def start(self) -> Watcher:
        self.thread.start()
        if not self.synced.wait(120):
            raise RuntimeError(f"watch of {self.gvp[2]} did not start")
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _list(self) -> str:
        args: dict[str, Any] = {"limit": 500}
        while True:
            page = self.custom.list_cluster_custom_object(*self.gvp, **args)
            now = time.monotonic()
            for obj in page["items"]:
                self.store.apply("EXISTING", obj, now)
            args["_continue"] = page["metadata"].get("continue")
            if not args["_continue"]:
                return page["metadata"]["resourceVersion"]

    def _run(self) -> None:
        rv = None
        while not self.stopped.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    self.synced.set()
                w = watch.Watch()
                for event in w.stream(self.custom.list_cluster_custom_object, *self.gvp,
                                      resource_version=rv, timeout_seconds=240,
                                      allow_watch_bookmarks=True):
                    now = time.monotonic()
                    if event["type"] != "BOOKMARK":
                        self.store.apply(event["type"], event["object"], now)
                    rv = w.resource_version
                    if self.stopped.is_set():
                        w.stop()
                        return
            except client.ApiException as e:
                self.errors += 1
                if e.status == 410:
                    rv = None  # too old: list again (objects already seen keep their time)
                else:
                    time.sleep(1)
            except Exception:  # noqa: BLE001 - a broken stream: watch again
                self.errors += 1
                time.sleep(0.5)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def seeded_task(template: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """A new task's body carrying the template's annotations of the operator (the framework's
    bookkeeping), as a task the operator has handled has them."""
    body = task_body(namespace, name)
    annotations = {k: v for k, v in ((template.get("metadata") or {}).get("annotations")
                                     or {}).items() if k.startswith(G + "/")}
    if annotations:
        body["metadata"]["annotations"] = annotations
    return body


def renamed(obj: Any, old: str, new: str) -> Any:
    """`obj` with every occurrence of the string `old` replaced by `new`."""
    return json.loads(json.dumps(obj).replace(old, new))


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)
