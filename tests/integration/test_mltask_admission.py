"""MLTask admission on the real API server: examples accepted, a corpus of invalid tasks refused
with a message naming the field and nothing created, and the update rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from harness.tasks import G, P, V, example

pytestmark = pytest.mark.integration
Body = dict[str, Any]


@pytest.fixture
def objects(api: client.ApiClient, mltask_crds) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create(objects: client.CustomObjectsApi, namespace: str, body: Body) -> Body:
    return objects.create_namespaced_custom_object(G, V, namespace, P, body,
                                                   field_validation="Strict")


@pytest.mark.parametrize("name", ["preprocessing", "training", "optimization"])
def test_every_example_is_accepted(objects, namespace: str, name: str) -> None:
    created = create(objects, namespace, example(name))
    assert created["spec"]["suspend"] is False and created["spec"]["retryGeneration"] == 0, \
        "defaults applied"


def spec(b: Body) -> Body:
    return b["spec"]


def _set(path: str, value: Any) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        *parents, last = path.split(".")
        node = b
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return mutate


def _del(path: str) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        *parents, last = path.split(".")
        node = b
        for p in parents:
            node = node[p]
        del node[last]
    return mutate


def _both(*fns: Callable[[Body], None]) -> Callable[[Body], None]:
    def mutate(b: Body) -> None:
        for fn in fns:
            fn(b)
    return mutate


# (id, example, mutation, field the message names, words in the message)
INVALID: list[tuple[str, str, Callable[[Body], None], str, str]] = [
    ("optimization-without-model", "optimization", _del("spec.input.model"), "spec.input",
     "spec.input.model is required when type is optimization"),
    ("model-on-training", "training", _set("spec.input.model", {"uri": "s3://m/x.pt"}),
     "spec.input", "spec.input.model is only allowed when type is optimization"),
    ("preprocessing-without-dataset", "preprocessing", _del("spec.output.dataset"),
     "spec.output", "spec.output.dataset is required when type is preprocessing"),
    ("preprocessing-with-model", "preprocessing",
     _set("spec.output.model", {"name": "m"}), "spec.output",
     "spec.output.model is not allowed when type is preprocessing"),
    ("training-without-model", "training", _del("spec.output.model"), "spec.output",
     "spec.output.model is required when type is training or optimization"),
    ("training-with-dataset", "training",
     _set("spec.output.dataset", {"name": "d", "type": "training"}), "spec.output",
     "spec.output.dataset is only allowed when type is preprocessing"),
    ("uri-and-fromTask", "training", _set("spec.input.dataset.fromTask", "prep"),
     "spec.input.dataset", "set exactly one of uri or fromTask"),
    ("neither-uri-nor-fromTask", "training", _del("spec.input.dataset.uri"),
     "spec.input.dataset", "set exactly one of uri or fromTask"),
    ("bad-type", "training", _set("spec.type", "inference"), "spec.type", "Unsupported value"),
    ("bad-dataset-kind", "training", _set("spec.input.dataset.kind", "lake"),
     "spec.input.dataset.kind", "Unsupported value"),
    ("bad-output-dataset-type", "preprocessing", _set("spec.output.dataset.type", "eval"),
     "spec.output.dataset.type", "Unsupported value"),
    ("bad-retryOn", "training", _set("spec.runtime.retryPolicy.retryOn", "Sometimes"),
     "spec.runtime.retryPolicy.retryOn", "Unsupported value"),
    ("missing-type", "training", _del("spec.type"), "spec.type", "Required value"),
    ("missing-run-image", "training", _del("spec.steps.run.image"), "spec.steps.run.image",
     "Required value"),
    ("missing-steps", "training", _del("spec.steps"), "spec.steps", "Required value"),
    ("inline-storage-keys", "training", _set("spec.storage.accessKey", "AKIA"),
     "spec.storage.accessKey", "unknown field"),
    ("inline-secret-env", "training",
     _set("spec.steps.run.env", [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]),
     "spec.steps.run.env[0].value", "credentials must come from a Secret"),
    ("value-and-valueFrom", "training", _set("spec.steps.run.env", [{
        "name": "A", "value": "x", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
     "spec.steps.run.env[0]", "set either value or valueFrom, not both"),
    ("negative-retry-limit", "training", _set("spec.runtime.retryPolicy.limit", -1),
     "spec.runtime.retryPolicy.limit", "should be greater than or equal to 0"),
    ("huge-retry-limit", "training", _set("spec.runtime.retryPolicy.limit", 100),
     "spec.runtime.retryPolicy.limit", "should be less than or equal to 20"),
    ("zero-deadline", "training", _set("spec.runtime.activeDeadlineSeconds", 0),
     "spec.runtime.activeDeadlineSeconds", "should be greater than or equal to 1"),
    ("bad-volume-size", "training", _set("spec.runtime.workVolume.size", "lots"),
     "spec.runtime.workVolume.size", "should match"),
    ("bad-backoff", "training", _set("spec.runtime.retryPolicy.backoff", {"duration": "soon"}),
     "spec.runtime.retryPolicy.backoff.duration", "should match"),
    ("bad-toleration-operator", "training",
     _set("spec.runtime.tolerations", [{"key": "a", "operator": "Maybe"}]),
     "spec.runtime.tolerations[0].operator", "should match"),
    ("image-not-a-string", "training", _set("spec.steps.run.image", 42),
     "spec.steps.run.image", "must be of type string"),
    ("bad-gpu-quantity", "training",
     _set("spec.steps.run.resources", {"limits": {"nvidia.com/gpu": "one"}}),
     "spec.steps.run.resources.limits.nvidia.com/gpu", "should match"),
    ("name-too-long", "training", _set("metadata.name", "t" * 49), "",
     "metadata.name must be at most 48 characters"),
    ("negative-retryGeneration", "training", _set("spec.retryGeneration", -1),
     "spec.retryGeneration", "should be greater than or equal to 0"),
    ("bad-file-extension", "training", _set("spec.output.model.fileExtension", "p t"),
     "spec.output.model.fileExtension", "should match"),
    ("unknown-top-level-field", "training", _both(_set("spec.gpus", 4)), "spec.gpus",
     "unknown field"),
]


@pytest.mark.parametrize(("case", "base", "mutate", "field", "words"), INVALID,
                         ids=[c[0] for c in INVALID])
def test_invalid_mltask_is_refused_and_nothing_is_created(
        objects, namespace: str, case: str, base: str, mutate, field: str, words: str) -> None:
    body = copy.deepcopy(example(base))
    mutate(body)
    with pytest.raises(client.ApiException) as err:
        create(objects, namespace, body)
    message = json.loads(err.value.body)["message"]
    # schema and CEL errors are 422 Invalid; strict unknown-field errors are 400 BadRequest
    assert err.value.status == (400 if words == "unknown field" else 422), message
    assert field in message and words in message, message
    assert objects.list_namespaced_custom_object(G, V, namespace, P)["items"] == []
    assert objects.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows")["items"] == []


def test_corpus_is_large_enough() -> None:
    assert len(INVALID) >= 20


IMMUTABLE = [
    ("type", lambda s: s.update(type="optimization",
                                input={**s["input"], "model": {"uri": "s3://m.pt"}})),
    ("input", lambda s: s["input"]["dataset"].update(uri="s3://other.zip")),
    ("config", lambda s: s["config"]["parameters"].update(epochs="99")),
    ("steps", lambda s: s["steps"]["run"].update(image="ghcr.io/example/other:1")),
    ("output", lambda s: s["output"]["model"].update(name="other")),
    ("storage", lambda s: s.update(storage={"secretRef": {"name": "other"}})),
    ("runtime", lambda s: s["runtime"].update(activeDeadlineSeconds=60)),
    ("pipelineRef", lambda s: s.update(pipelineRef={"name": "p"})),
]


@pytest.mark.parametrize(("field", "change"), IMMUTABLE, ids=[i[0] for i in IMMUTABLE])
def test_fixed_fields_cannot_change(objects, namespace: str, field: str, change) -> None:
    created = create(objects, namespace, example("training"))
    name = created["metadata"]["name"]
    for _ in range(20):  # the operator may write status meanwhile: read again on 409
        body = objects.get_namespaced_custom_object(G, V, namespace, P, name)
        change(body["spec"])
        with pytest.raises(client.ApiException) as err:
            objects.replace_namespaced_custom_object(G, V, namespace, P, name, body)
        if err.value.status != 409:
            break
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 422 and f"spec.{field}" in message, message
    assert "cannot change once the task has started" in message
    after = objects.get_namespaced_custom_object(G, V, namespace, P, name)
    assert after["spec"] == created["spec"]


def test_actions_can_change_and_retry_generation_only_increases(objects,
                                                                namespace: str) -> None:
    name = create(objects, namespace, example("training"))["metadata"]["name"]

    def patch(spec_patch: Body) -> Body:
        return objects.patch_namespaced_custom_object(G, V, namespace, P, name,
                                                      {"spec": spec_patch})

    assert patch({"suspend": True})["spec"]["suspend"] is True
    assert patch({"suspend": False, "description": "new words"})["spec"]["description"] == \
        "new words"
    assert patch({"retryGeneration": 2})["spec"]["retryGeneration"] == 2
    with pytest.raises(client.ApiException) as err:
        patch({"retryGeneration": 1})
    assert err.value.status == 422 and "spec.retryGeneration may only increase" in err.value.body
