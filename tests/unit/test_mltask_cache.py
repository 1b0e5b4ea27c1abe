"""Reuse of identical finished work (spec.cache): the cache key, which completed tasks may be
reused, the in-memory index by (namespace, key), the plan of a task completed without an
attempt, a pipeline handing its upstream's sha256 on, and what one reconcile asks of the API
server on a hit (no Workflow, no volume) and on a miss."""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any

import pytest
from test_reconcile_requests import RecordingKube

from harness.pipelines import pipeline_example
from harness.tasks import example
from mltask_operator.api.v1alpha1.mltask import MLTask, MLTaskSpec, MLTaskStatus, Phase
from mltask_operator.api.v1alpha1.pipeline import Pipeline
from mltask_operator.builders.mltask import child_spec, output_digests
from mltask_operator.cache import TASK, Cache
from mltask_operator.handlers.mltask import reconcile_task
from mltask_operator.mltask_cache_key import InputRef, cache_key, image_identity, source_key
from mltask_operator.mltask_planner import Action, plan, reuse_source

NOW = datetime.datetime(2026, 12, 3, 12, 0, tzinfo=datetime.UTC)
SHA_A, SHA_B = "a" * 64, "b" * 64


def spec_of(body: dict[str, Any]) -> MLTaskSpec:
    return MLTaskSpec.model_validate(body["spec"])


def cached_task(name: str = "prep-1", namespace: str = "ml", **spec: Any) -> dict[str, Any]:
    body = example("preprocessing")
    body["metadata"].update(name=name, namespace=namespace, uid=f"u-{name}",
                            resourceVersion="7", generation=1)
    body["spec"]["cache"] = {"enabled": True}
    body["spec"].update(spec)
    return body


def completed(body: dict[str, Any], *, ago: datetime.timedelta = datetime.timedelta(hours=1),
              key: str | None = None, **status: Any) -> dict[str, Any]:
    """`body` as it looks once its attempt completed with caching on."""
    out = copy.deepcopy(body)
    done = (NOW - ago).isoformat().replace("+00:00", "Z")
    out["status"] = {"status": "completed", "executeStep": "done", "attempt": 1,
                     "completionTime": done, "startTime": done,
                     "cacheKey": key or cache_key(spec_of(body)),
                     "outputs": {"kind": "dataset", "name": "digits-minmax",
                                 "uri": "s3://mltask-examples/datasets/digits/x.npz",
                                 "size": 10, "sha256": SHA_B},
                     "metrics": {"rows": 1797.0}, **status}
    return out


# ---------------------------------------------------------------------------- the cache key

@dataclass
class KeyCase:
    name: str
    change: dict[str, Any]
    same: bool
    resolved: dict[str, InputRef] = field(default_factory=dict)


def _set(body: dict[str, Any], path: str, value: Any) -> None:
    node = body["spec"]
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


KEY_CASES = [
    KeyCase("a changed parameter", {"config.parameters.seed": "1"}, same=False),
    KeyCase("an input sha256 given", {"input.dataset.sha256": SHA_A}, same=False),
    KeyCase("another input URI", {"input.dataset.uri": "s3://mltask-examples/raw/v2.csv.gz"},
            same=False),
    KeyCase("unpack", {"input.dataset.unpack": True}, same=False),
    KeyCase("another image tag", {"steps.run.image": "localhost/mltask-example-sklearn:0.2"},
            same=False),
    KeyCase("another command", {"steps.run.command": ["python3", "-m", "other"]}, same=False),
    KeyCase("an env variable", {"steps.run.env": [{"name": "X", "value": "1"}]}, same=False),
    KeyCase("a ConfigMap", {"config.configMapRef": {"name": "prep"}}, same=False),
    KeyCase("another output URI", {"output.uri": "s3://mltask-examples/other/"}, same=False),
    KeyCase("another output name", {"output.dataset.name": "other"}, same=False),
    KeyCase("another storage endpoint", {"storage.endpoint": "http://s3.local:9000"},
            same=False),
    KeyCase("a custom upload step", {"steps.upload": {"image": "acme/up:1"}}, same=False),
    KeyCase("placement and resources", {"runtime.nodeSelector": {"pool": "gpu"},
                                        "steps.run.resources": {"limits": {"memory": "1Gi"}}},
            same=True),
    KeyCase("retries, cleanup, TTL, suspend", {"runtime.retryPolicy": {"limit": 0},
                                               "cleanup": {"keepWorkVolume": True},
                                               "ttlSecondsAfterFinished": 60,
                                               "suspend": True}, same=True),
    KeyCase("descriptions and the cache settings", {
        "description": "x", "output.dataset.description": "y",
        "cache": {"enabled": False, "maxAge": "1h"}}, same=True),
    KeyCase("the storage Secret", {"storage.secretRef": {"name": "other"}}, same=True),
    KeyCase("a resolved input with its sha256", {}, same=False,
            resolved={"dataset": InputRef("s3://mltask-examples/raw/digits.csv.gz", SHA_A)}),
]


@pytest.mark.parametrize("case", KEY_CASES, ids=lambda c: c.name)
def test_the_cache_key_changes_only_with_what_the_output_depends_on(case: KeyCase) -> None:
    base = cached_task()
    changed = copy.deepcopy(base)
    for path, value in case.change.items():
        _set(changed, path, value)
    changed["metadata"]["name"] = "another-name"
    before, after = cache_key(spec_of(base)), cache_key(spec_of(changed), case.resolved)
    assert len(after) == 64 and int(after, 16) >= 0
    assert (before == after) is case.same


def test_a_resolved_input_replaces_the_spec_uri_and_fromtask() -> None:
    a, b = cached_task(), cached_task()
    b["spec"]["input"]["dataset"] = {"fromTask": "upstream", "kind": "project"}
    resolved = {"dataset": InputRef("s3://mltask-examples/raw/digits.csv.gz")}
    assert cache_key(spec_of(b), resolved) == cache_key(spec_of(a))
    assert cache_key(spec_of(b), {"dataset": InputRef("s3://x/y")}) != cache_key(spec_of(a))


def test_an_image_by_digest_is_the_digest_under_any_repository() -> None:
    digest = "sha256:" + "c" * 64
    assert image_identity(f"ghcr.io/acme/train@{digest}") == digest
    assert image_identity(f"mirror.local/train:1.0@{digest}") == digest
    assert image_identity("ghcr.io/acme/train:1.0") == "ghcr.io/acme/train:1.0"
    a = cached_task(steps={"run": {"image": f"ghcr.io/acme/train@{digest}"}})
    b = cached_task(steps={"run": {"image": f"mirror.local/acme/train@{digest}"}})
    assert cache_key(spec_of(a)) == cache_key(spec_of(b))


# --------------------------------------------------------------------- what may be reused

@pytest.mark.parametrize("change, eligible", [
    ({}, True),
    ({"spec": {"archived": True}}, False),
    ({"metadata": {"labels": {"mltask.dev/archived": "true"}}}, False),
    ({"status": {"status": "failed"}}, False),
    ({"status": {"outputs": {"kind": "dataset", "name": "d"}}}, False),   # no output URI
    ({"status": {"cacheKey": None}}, False),                             # ran with caching off
    ({"status": {"conditions": [{"type": "Cached", "status": "True"}]}}, False),  # a copy
    ({"status": {"conditions": [{"type": "Cached", "status": "False"}]}}, True),
])
def test_only_a_task_that_completed_by_running_with_an_output_is_a_source(
        change: dict[str, Any], eligible: bool) -> None:
    body = completed(cached_task())
    for part, fields in change.items():
        body[part].update(fields)
    key = body["status"].get("cacheKey")
    assert (source_key(body) == key and key is not None) is eligible


def _task(body: dict[str, Any]) -> MLTask:
    return MLTask.model_validate(body)


def test_reuse_source_picks_the_latest_eligible_task_of_the_namespace() -> None:
    task = _task(cached_task("new"))
    key = cache_key(task.spec)
    old = completed(cached_task("old"), ago=datetime.timedelta(hours=30))
    recent = completed(cached_task("recent"), ago=datetime.timedelta(hours=2))
    elsewhere = completed(cached_task("other", namespace="team-b"),
                          ago=datetime.timedelta(minutes=1))
    itself = completed(cached_task("new"), ago=datetime.timedelta(minutes=1))
    found = reuse_source(task, key, [old, elsewhere, recent, itself], NOW)
    assert found is not None and (found.namespace, found.name) == ("ml", "recent")
    assert found.outputs["uri"] == recent["status"]["outputs"]["uri"]
    assert found.metrics == {"rows": 1797.0}
    assert reuse_source(task, key, [elsewhere, itself], NOW) is None


def test_reuse_source_keeps_to_max_age_and_the_key() -> None:
    task = _task(cached_task("new", cache={"enabled": True, "maxAge": "24h"}))
    key = cache_key(task.spec)
    day_old = completed(cached_task("a"), ago=datetime.timedelta(hours=25))
    assert reuse_source(task, key, [day_old], NOW) is None
    fresh = completed(cached_task("a"), ago=datetime.timedelta(hours=23))
    assert reuse_source(task, key, [fresh], NOW) is not None
    assert reuse_source(task, "0" * 64, [fresh], NOW) is None, "indexed under another key"
    off = _task(cached_task("new", cache={"enabled": False}))
    assert reuse_source(off, key, [fresh], NOW) is None, "caching off never reuses"


def test_the_default_max_age_is_a_week() -> None:
    task = _task(cached_task("new"))
    key = cache_key(task.spec)
    assert reuse_source(task, key, [completed(cached_task("a"),
                                              ago=datetime.timedelta(hours=167))], NOW)
    assert not reuse_source(task, key, [completed(cached_task("a"),
                                                  ago=datetime.timedelta(hours=169))], NOW)


def test_a_task_completed_without_an_attempt_is_observed_until_retried() -> None:
    body = cached_task("hit")
    body["status"] = {"status": "completed", "attempt": 0, "observedRetryGeneration": 0}
    task = _task(body)
    assert task.status is not None
    assert plan(task, task.status, workflow_exists=False).action == Action.OBSERVE
    body["spec"]["retryGeneration"] = 1
    task = _task(body)
    assert task.status is not None
    retry = plan(task, task.status, workflow_exists=False)
    assert (retry.action, retry.attempt) == (Action.RETRY, 1)
    body["spec"]["suspend"] = True
    task = _task(body)
    assert task.status is not None
    assert plan(task, task.status, workflow_exists=False).action == Action.HOLD_RETRY


# ------------------------------------------------------------------ the in-memory index

def test_the_cache_indexes_sources_by_namespace_and_key() -> None:
    cache = Cache()
    src = completed(cached_task("src"))
    key = src["status"]["cacheKey"]
    cache.put(TASK, src)
    cache.put(TASK, completed(cached_task("src", namespace="team-b")))
    assert [b["metadata"]["name"] for b in cache.sources("ml", key)] == ["src"]
    assert cache.sources("ml", "0" * 64) == []
    archived = copy.deepcopy(src)
    archived["spec"]["archived"] = True
    cache.put(TASK, archived)
    assert cache.sources("ml", key) == [], "archived: no longer a source"
    cache.put(TASK, src)
    assert len(cache.sources("ml", key)) == 1
    cache.drop(TASK, "ml", "src")
    assert cache.sources("ml", key) == [], "deleted: no longer a source"
    assert len(cache.sources("team-b", key)) == 1


# ----------------------------------------------------------------------------- pipelines

def test_a_pipeline_child_gets_the_default_cache_and_its_upstream_sha256() -> None:
    body = pipeline_example("digits")
    body["metadata"].update(namespace="ml", uid="p-uid", generation=1)
    body["spec"]["defaults"]["cache"] = {"enabled": True, "maxAge": "24h"}
    body["spec"]["tasks"][2]["spec"]["cache"] = {"enabled": False}
    p = Pipeline.model_validate(body)
    pre, train, opt = p.spec.tasks
    assert child_spec(p, pre, {}).cache is not None
    children = {"preprocess": {"status": {"status": "completed",
                                          "outputs": {"uri": "s3://d/x", "sha256": SHA_A}}},
                "train": {"status": {"status": "running", "outputs": {"sha256": SHA_B}}}}
    digests = output_digests(children)
    assert digests == {"preprocess": SHA_A}
    spec = child_spec(p, train, {"preprocess": "s3://d/x"}, digests)
    assert spec.cache is not None and (spec.cache.enabled, spec.cache.max_age) == (True, "24h")
    assert (spec.input.dataset.uri, spec.input.dataset.sha256) == ("s3://d/x", SHA_A)
    other = child_spec(p, train, {"preprocess": "s3://d/x"}, {"preprocess": SHA_B})
    assert cache_key(spec) != cache_key(other), "a changed upstream output changes the key"
    spec = child_spec(p, opt, {"preprocess": "s3://d/x", "train": "s3://m"}, digests)
    assert spec.cache is not None and spec.cache.enabled is False, "its own cache wins"
    assert spec.input.model is not None and spec.input.model.sha256 is None


# ------------------------------------------------------- one reconcile: a hit, a miss

def test_a_hit_completes_with_the_sources_outputs_and_creates_nothing() -> None:
    src = completed(cached_task("src"))
    cache = Cache()
    cache.put(TASK, src)
    cache.put(TASK, cached_task("new"))
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", "new", clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == ["replace MLTask/status completed", "create Event CacheHit"]
    st = MLTaskStatus.model_validate(cache.task("ml", "new")["status"])
    assert (st.status, st.execute_step, st.attempt) == (Phase.COMPLETED, "done", 0)
    assert st.outputs is not None and st.outputs.to_k8s() == src["status"]["outputs"]
    assert st.metrics == {"rows": 1797.0}
    assert st.cache_key == src["status"]["cacheKey"] and st.workflow_name is None
    cached = next(c for c in st.conditions or [] if c.type == "Cached")
    assert (cached.status, cached.reason) == ("True", "CacheHit")
    assert "MLTask ml/src completed at 2026-12-03T11:00:00Z" in cached.message
    assert next(c for c in st.conditions or [] if c.type == "Succeeded").status == "True"
    kube.calls.clear()
    reconcile_task(kube, cache, "ml", "new", clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls == [], "a hit stays completed, with no request"


@pytest.mark.parametrize("source", [
    completed(cached_task("src", config={"parameters": {"seed": "1"}})),   # changed parameter
    completed(cached_task("src"), key="f" * 64),                           # another key
    completed(cached_task("src", namespace="team-b")),                     # another namespace
    completed(cached_task("src"), ago=datetime.timedelta(days=8)),         # too old
], ids=["changed-parameter", "other-key", "other-namespace", "too-old"])
def test_a_miss_starts_the_attempt_and_records_its_key(source: dict[str, Any]) -> None:
    cache = Cache()
    cache.put(TASK, source)
    cache.put(TASK, cached_task("new"))
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", "new", clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls[:3] == ["create Workflow new-1", "create PersistentVolumeClaim new-work",
                              "replace MLTask/status init"]
    st = cache.task("ml", "new")["status"]
    assert st["cacheKey"] == cache_key(spec_of(cached_task("new")))
    cached = next(c for c in st["conditions"] if c["type"] == "Cached")
    assert (cached["status"], cached["reason"]) == ("False", "CacheMiss")


def test_caching_off_records_no_key_and_no_condition() -> None:
    cache = Cache()
    cache.put(TASK, completed(cached_task("src")))
    cache.put(TASK, cached_task("new", cache={"enabled": False}))
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", "new", clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls[0] == "create Workflow new-1"
    st = cache.task("ml", "new")["status"]
    assert "cacheKey" not in st and all(c["type"] != "Cached" for c in st["conditions"])


def test_a_source_another_task_wrote_over_since_is_a_miss() -> None:
    """Issue 26, finding 5: a later run (another key) wrote other bytes to the source's output
    URI, so reusing the source would hand on the other run's data under the old digest."""
    cache = Cache()
    cache.put(TASK, completed(cached_task("src")))
    cache.put(TASK, completed(cached_task("other", config={"parameters": {"seed": "1"}}),
                              ago=datetime.timedelta(minutes=5)))
    other = cache.task("ml", "other")
    assert other is not None
    other["status"]["outputs"]["sha256"] = SHA_A  # same URI, other bytes, written later
    cache.put(TASK, other)
    cache.put(TASK, cached_task("new"))
    kube = RecordingKube()
    reconcile_task(kube, cache, "ml", "new", clock=lambda: NOW)  # type: ignore[arg-type]
    assert kube.calls[0] == "create Workflow new-1"
    cached = next(c for c in cache.task("ml", "new")["status"]["conditions"]
                  if c["type"] == "Cached")
    assert (cached["status"], cached["reason"]) == ("False", "CacheMiss")
