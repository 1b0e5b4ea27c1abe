"""The operator's cache is filled at start from a paged listing of each kind, on the real API
server: every object, one page in memory at a time, the links between them included."""

from __future__ import annotations

import pytest
from kubernetes import client

from harness.tasks import example
from mltask_operator.cache import PIPELINE, TASK, WORKFLOW, Cache
from mltask_operator.clients.kube import Kube
from mltask_operator.kinds import MLTASK
from mltask_operator.kinds import WORKFLOW as WF_KIND
from mltask_operator.labels import PIPELINE as PIPELINE_LABEL
from mltask_operator.labels import TASK as TASK_LABEL

pytestmark = pytest.mark.integration
G, V = "mltask.dev", "v1alpha1"


def test_list_pages_through_every_object(api: client.ApiClient, namespace: str,
                                                 mltask_crds: list[str]) -> None:
    custom = client.CustomObjectsApi(api)
    for i in range(7):
        body = example("training")
        body["metadata"] = {"name": f"t{i}", "namespace": namespace}
        custom.create_namespaced_custom_object(G, V, namespace, "mltasks", body)
    kube = Kube(api)
    pages: list[int] = []
    real = kube.objects.list_namespaced_custom_object

    def counting(*a, **kw):  # type: ignore[no-untyped-def]
        rsp = real(*a, **kw)
        pages.append(len(rsp["items"]))
        return rsp

    kube.objects.list_namespaced_custom_object = counting  # type: ignore[method-assign]
    names = [o["metadata"]["name"] for o in kube.list_all(MLTASK, namespace, page=3)]
    assert sorted(names) == [f"t{i}" for i in range(7)]
    assert pages == [3, 3, 1], "three pages of at most 3: the continue token is followed"


def test_prime_fills_the_cache_with_tasks_workflows_and_links(
        api: client.ApiClient, namespace: str, mltask_crds: list[str]) -> None:
    from mltask_operator import main

    custom = client.CustomObjectsApi(api)
    up = example("preprocessing")
    up["metadata"] = {"name": "p-prep", "namespace": namespace,
                      "labels": {PIPELINE_LABEL: "p"}}
    down = example("training")
    down["metadata"] = {"name": "p-train", "namespace": namespace,
                        "labels": {PIPELINE_LABEL: "p"}}
    down["spec"]["input"]["dataset"] = {"fromTask": "p-prep"}
    for body in (up, down):
        custom.create_namespaced_custom_object(G, V, namespace, "mltasks", body)
    wf = {"apiVersion": WF_KIND.api_version, "kind": "Workflow",
          "metadata": {"name": "p-prep-1", "namespace": namespace,
                       "labels": {TASK_LABEL: "p-prep"}},
          "spec": {"entrypoint": "main", "templates": [{"name": "main", "suspend": {}}]}}
    custom.create_namespaced_custom_object(WF_KIND.group, WF_KIND.version, namespace,
                                           WF_KIND.plural, wf)
    other = dict(wf, metadata={"name": "not-ours", "namespace": namespace})
    custom.create_namespaced_custom_object(WF_KIND.group, WF_KIND.version, namespace,
                                           WF_KIND.plural, other)

    cache = Cache()
    main.prime(Kube(api), cache, [namespace])
    assert sorted(cache.keys(TASK)) == [(namespace, "p-prep"), (namespace, "p-train")]
    assert cache.keys(WORKFLOW) == [(namespace, "p-prep-1")], "only the operator's Workflows"
    assert cache.keys(PIPELINE) == []
    assert list(cache.child_heads(namespace, "p")) == ["p-prep", "p-train"]
    assert cache.waiting_for(namespace, "p-prep") == ["p-train"]
    assert cache.task(namespace, "p-train")["spec"]["input"]["dataset"] == {
        "fromTask": "p-prep"}
