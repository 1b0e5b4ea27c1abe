"""MLTask admission on the real kube-apiserver: bad tasks refused, update rules, examples."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from kubernetes import client

from harness.tasks import REPO, G, P, V, example
from mltask_operator.api.v1alpha1.mltask import IMMUTABLE_FIELDS, MAX_NAME_LENGTH

pytestmark = pytest.mark.integration

Body = dict[str, Any]
Mutation = Callable[[Body], None]

CRD_FILE = REPO / "crds" / "mltask.dev_mltasks.yaml"
EXAMPLES = sorted((REPO / "examples").glob("mltask-*.yaml"))
STARTED = {"status": "running", "executeStep": "download", "attempt": 1,
           "workflowName": "simulated-1", "startTime": "2026-01-01T00:00:00Z"}


# ---------------------------------------------------------------------------------- helpers


@pytest.fixture
def objects(api: client.ApiClient, mltask_crds: list[str]) -> client.CustomObjectsApi:
    """The custom-objects API, once the session's CRDs (crds/*.yaml) are Established."""
    assert "mltasks.mltask.dev" in mltask_crds
    return client.CustomObjectsApi(api)


def create(objects: client.CustomObjectsApi, namespace: str, body: Body) -> Body:
    return objects.create_namespaced_custom_object(G, V, namespace, P, body,
                                                   field_validation="Strict")


def patch_spec(objects: client.CustomObjectsApi, namespace: str, name: str, spec: Body) -> Body:
    """A JSON merge patch of the spec (no resourceVersion, so a concurrent status write is fine)."""
    return objects.patch_namespaced_custom_object(G, V, namespace, P, name, {"spec": spec})


def mark_started(objects: client.CustomObjectsApi, namespace: str, name: str) -> None:
    """Write a running status through the status subresource, as the operator does on start."""
    out = objects.patch_namespaced_custom_object_status(G, V, namespace, P, name,
                                                        {"status": STARTED})
    assert {k: out["status"].get(k) for k in STARTED} == STARTED


def refusal(err: client.ApiException) -> tuple[int, str, str, list[Body]]:
    """(HTTP status, Status reason, message, causes) of a refused request."""
    body = json.loads(err.body)
    return err.status, body.get("reason", ""), body["message"], \
        (body.get("details") or {}).get("causes") or []


def _walk(body: Body, path: str) -> tuple[Any, str]:
    *parents, last = path.split("/")
    node: Any = body
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    return node, last


def put(path: str, value: Any) -> Mutation:
    """Set the value at a '/'-separated path (list items by index, e.g. tolerations/0)."""
    def mutate(body: Body) -> None:
        node, last = _walk(body, path)
        node[last] = copy.deepcopy(value)
    return mutate


def drop(path: str) -> Mutation:
    """Remove the key at a '/'-separated path; it must be there."""
    def mutate(body: Body) -> None:
        node, last = _walk(body, path)
        del node[last]
    return mutate


def chain(*mutations: Mutation) -> Mutation:
    """Apply several mutations in order."""
    def mutate(body: Body) -> None:
        for m in mutations:
            m(body)
    return mutate


# ----------------------------------------------------------------------------- the corpus


class Case(NamedTuple):
    id: str
    base: str            # which examples/mltask-<base>.yaml to start from
    mutate: Mutation
    field: str           # the field path the API server's message must name
    words: str           # what the message must say about it
    reason: str | None   # the cause's reason (422 only); None: a 400 strict decoding error
    at_field: bool = True  # whether the API server reports the cause at `field` itself


UNKNOWN = None  # strict field validation: 400 BadRequest, "unknown field", no causes
SECRET_REF = {"secretKeyRef": {"name": "s3-credentials", "key": "key"}}
#: Download and upload steps of a task's own (the examples leave them to the operator).
OWN_DOWNLOAD = {"image": "registry.example.com/s3-sync:1.4", "command": ["s3-sync", "get"]}
OWN_UPLOAD = {"image": "registry.example.com/s3-sync:1.4", "command": ["s3-sync", "put"]}

INVALID: list[Case] = [
    # --- every CEL rule of the schema (x-kubernetes-validations)
    Case("optimization-without-input-model", "optimization", drop("spec/input/model"),
         "spec.input", "spec.input.model is required when type is optimization",
         "FieldValueRequired"),
    Case("training-with-input-model", "training",
         put("spec/input/model", {"uri": "s3://mltask-examples/models/digits-mlp/model.joblib"}),
         "spec.input", "spec.input.model is only allowed when type is optimization",
         "FieldValueForbidden"),
    Case("preprocessing-without-output-dataset", "preprocessing", drop("spec/output/dataset"),
         "spec.output", "spec.output.dataset is required when type is preprocessing",
         "FieldValueRequired"),
    Case("preprocessing-with-output-model", "preprocessing",
         put("spec/output/model", {"name": "m"}),
         "spec.output", "spec.output.model is not allowed when type is preprocessing",
         "FieldValueForbidden"),
    Case("training-without-output-model", "training", drop("spec/output/model"),
         "spec.output", "spec.output.model is required when type is training or optimization",
         "FieldValueRequired"),
    Case("optimization-without-output-model", "optimization", drop("spec/output/model"),
         "spec.output", "spec.output.model is required when type is training or optimization",
         "FieldValueRequired"),
    Case("training-with-output-dataset", "training",
         put("spec/output/dataset", {"name": "d", "type": "training"}),
         "spec.output", "spec.output.dataset is only allowed when type is preprocessing",
         "FieldValueForbidden"),
    Case("dataset-uri-and-fromTask", "training", put("spec/input/dataset/fromTask", "prep"),
         "spec.input.dataset", "set exactly one of uri or fromTask", "FieldValueInvalid"),
    Case("dataset-neither-uri-nor-fromTask", "training", drop("spec/input/dataset/uri"),
         "spec.input.dataset", "set exactly one of uri or fromTask", "FieldValueInvalid"),
    Case("model-uri-and-fromTask", "optimization", put("spec/input/model/fromTask", "train"),
         "spec.input.model", "set exactly one of uri or fromTask", "FieldValueInvalid"),
    Case("model-neither-uri-nor-fromTask", "optimization", drop("spec/input/model/uri"),
         "spec.input.model", "set exactly one of uri or fromTask", "FieldValueInvalid"),
    Case("env-value-and-valueFrom", "training",
         put("spec/steps/run/env", [{"name": "A", "value": "x", "valueFrom": SECRET_REF}]),
         "spec.steps.run.env[0]", "set either value or valueFrom, not both", "FieldValueInvalid"),
    Case("inline-secret-env-download", "training",
         chain(put("spec/steps/download", OWN_DOWNLOAD),
               put("spec/steps/download/env", [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}])),
         "spec.steps.download.env[0].value", "credentials must come from a Secret",
         "FieldValueForbidden"),
    Case("inline-token-env-upload", "training",
         chain(put("spec/steps/upload", OWN_UPLOAD),
               put("spec/steps/upload/env", [{"name": "HF_TOKEN", "value": "hf_x"}])),
         "spec.steps.upload.env[0].value", "credentials must come from a Secret",
         "FieldValueForbidden"),
    Case("inline-api-key-env-run", "training",
         put("spec/steps/run/env", [{"name": "WANDB_API_KEY", "value": "x"}]),
         "spec.steps.run.env[0].value", "credentials must come from a Secret",
         "FieldValueForbidden"),
    Case("inline-password-env-run", "preprocessing",
         put("spec/steps/run/env", [{"name": "db_password", "value": "hunter2"}]),
         "spec.steps.run.env[0].value", "credentials must come from a Secret",
         "FieldValueForbidden"),
    Case("inline-token-parameter", "training",
         put("spec/config/parameters", {"epochs": "10", "hf_token": "hf_x"}),
         "spec.config.parameters", "credentials must come from a Secret",
         "FieldValueForbidden"),
    Case("name-too-long", "training", put("metadata/name", "t" * (MAX_NAME_LENGTH + 1)),
         "metadata.name", f"metadata.name must be at most {MAX_NAME_LENGTH} characters",
         "FieldValueInvalid", at_field=False),
    Case("name-not-a-dns-label", "training", put("metadata/name", "train.digits"),
         "metadata.name", "metadata.name must be a DNS label", "FieldValueInvalid",
         at_field=False),
    # --- enums and patterns
    Case("bad-type", "training", put("spec/type", "inference"),
         "spec.type", 'Unsupported value: "inference"', "FieldValueNotSupported"),
    Case("bad-dataset-kind", "training", put("spec/input/dataset/kind", "lake"),
         "spec.input.dataset.kind", 'Unsupported value: "lake"', "FieldValueNotSupported"),
    Case("bad-output-dataset-type", "preprocessing", put("spec/output/dataset/type", "eval"),
         "spec.output.dataset.type", 'Unsupported value: "eval"', "FieldValueNotSupported"),
    # --- pod settings (issue 25): pvc:// inputs, shared memory, data volumes, pod labels
    Case("pvc-dataset-with-dot-dot", "training",
         put("spec/input/dataset", {"uri": "pvc://datasets/../secrets"}),
         "spec.input.dataset.uri", "a pvc:// input is pvc://CLAIM/PATH", "FieldValueInvalid"),
    Case("pvc-model-bad-claim", "optimization",
         put("spec/input/model", {"uri": "pvc://Bad_Claim/model.joblib"}),
         "spec.input.model.uri", "a pvc:// input is pvc://CLAIM/PATH", "FieldValueInvalid"),
    Case("zero-shared-memory", "training", put("spec/runtime/sharedMemorySize", "0"),
         "spec.runtime.sharedMemorySize", "sharedMemorySize must be greater than zero",
         "FieldValueInvalid"),
    Case("volume-under-etc", "training",
         put("spec/runtime/volumes", [{"name": "d", "claimName": "c", "mountPath": "/etc/x"}]),
         "spec.runtime.volumes[0].mountPath", "mountPath must be an absolute path other than /",
         "FieldValueInvalid"),
    Case("volume-subpath-up", "training",
         put("spec/runtime/volumes", [{"name": "d", "claimName": "c", "mountPath": "/data",
                                       "subPath": "a/../.."}]),
         "spec.runtime.volumes[0].subPath", "subPath must be a relative path",
         "FieldValueInvalid"),
    Case("volumes-one-mount-path-twice", "training",
         put("spec/runtime/volumes", [{"name": "a", "claimName": "c", "mountPath": "/data"},
                                      {"name": "b", "claimName": "d", "mountPath": "/data"}]),
         "spec.runtime.volumes", "volumes: each mountPath may be used once",
         "FieldValueInvalid"),
    Case("pod-label-of-the-operator", "training",
         put("spec/runtime/podLabels", {"mltask.dev/task": "other"}),
         "spec.runtime.podLabels", "podLabels: keys mltask.dev/* and", "FieldValueForbidden"),
    Case("pod-annotation-of-the-operator", "training",
         put("spec/runtime/podAnnotations", {"mltask.dev/x": "y"}),
         "spec.runtime.podAnnotations", "podAnnotations: keys mltask.dev/* and",
         "FieldValueForbidden"),
    Case("bad-pod-label", "training", put("spec/runtime/podLabels", {"bad key!": "v"}),
         "spec.runtime.podLabels", "podLabels: keys and values must be valid",
         "FieldValueInvalid"),
    Case("bad-pod-annotation-key", "training",
         put("spec/runtime/podAnnotations", {"bad key!": "v"}),
         "spec.runtime.podAnnotations", "podAnnotations: keys must be valid",
         "FieldValueInvalid"),
    Case("bad-retryOn", "training", put("spec/runtime/retryPolicy/retryOn", "Sometimes"),
         "spec.runtime.retryPolicy.retryOn", 'Unsupported value: "Sometimes"',
         "FieldValueNotSupported"),
    Case("bad-imagePullPolicy", "training", put("spec/steps/run/imagePullPolicy", "Sometimes"),
         "spec.steps.run.imagePullPolicy", "should match", "FieldValueInvalid"),
    Case("bad-toleration-operator", "training",
         put("spec/runtime/tolerations", [{"key": "a", "operator": "Maybe"}]),
         "spec.runtime.tolerations[0].operator", "should match", "FieldValueInvalid"),
    Case("bad-toleration-effect", "training",
         put("spec/runtime/tolerations/0/effect", "NoRun"),
         "spec.runtime.tolerations[0].effect", "should match", "FieldValueInvalid"),
    Case("bad-secretRef-name", "training", put("spec/storage/secretRef/name", "S3_Creds"),
         "spec.storage.secretRef.name", "should match", "FieldValueInvalid"),
    Case("bad-file-extension", "training", put("spec/output/model/fileExtension", "p t"),
         "spec.output.model.fileExtension", "should match", "FieldValueInvalid"),
    # --- required fields
    Case("missing-type", "training", drop("spec/type"),
         "spec.type", "Required value", "FieldValueRequired"),
    Case("missing-input-dataset", "training", drop("spec/input/dataset"),
         "spec.input.dataset", "Required value", "FieldValueRequired"),
    Case("missing-run-image", "training", drop("spec/steps/run/image"),
         "spec.steps.run.image", "Required value", "FieldValueRequired"),
    Case("empty-run-image", "training", put("spec/steps/run/image", ""),
         "spec.steps.run.image", "should be at least 1 chars long", "FieldValueInvalid"),
    # --- what the default transfer steps cannot serve, and what a kubelet would refuse later
    Case("dataset-uri-scheme-default-download", "training",
         put("spec/input/dataset/uri", "gs://bkt/x.zip"),
         "spec.input.dataset.uri", "the default download step reads s3://bucket/key",
         "FieldValueInvalid"),
    Case("dataset-uri-bad-bucket-default-download", "training",
         put("spec/input/dataset/uri", "s3://Bad_Bucket/x"),
         "spec.input.dataset.uri", "the default download step reads", "FieldValueInvalid"),
    Case("dataset-uri-https-folder-default-download", "preprocessing",
         put("spec/input/dataset/uri", "https://data.example.com/raw/"),
         "spec.input.dataset.uri", "the default download step reads", "FieldValueInvalid"),
    Case("model-uri-scheme-default-download", "optimization",
         put("spec/input/model/uri", "ftp://m/model.joblib"),
         "spec.input.model.uri", "the default download step reads", "FieldValueInvalid"),
    Case("output-uri-missing-default-upload", "training", drop("spec/output/uri"),
         "spec.output.uri", "the default upload step stores the output", "FieldValueInvalid"),
    Case("output-uri-https-default-upload", "preprocessing",
         put("spec/output/uri", "https://example.com/out/"),
         "spec.output.uri", "the default upload step stores the output", "FieldValueInvalid"),
    Case("image-with-a-space", "training",
         put("spec/steps/run/image", "localhost/mltask-example-sklearn :0.1.0"),
         "spec.steps.run.image", "image must be an image reference without spaces",
         "FieldValueInvalid"),
    Case("fractional-gpu-limit", "training",
         put("spec/steps/run/resources/limits", {"nvidia.com/gpu": "1.5"}),
         "spec.steps.run.resources.limits", "are counted in whole units", "FieldValueInvalid"),
    Case("fractional-gpu-request", "training",
         put("spec/steps/run/resources/requests", {"cpu": "1", "nvidia.com/gpu": "500m"}),
         "spec.steps.run.resources.requests", "are counted in whole units", "FieldValueInvalid"),
    Case("fractional-gpu-alias", "preprocessing",
         put("spec/steps/run/resources/limits", {"gpu": "0.5"}),
         "spec.steps.run.resources.limits", "are counted in whole units", "FieldValueInvalid"),
    Case("root-and-run-as-non-root", "training",
         put("spec/steps/run/securityContext", {"runAsUser": 0, "runAsNonRoot": True}),
         "spec.steps.run.securityContext.runAsNonRoot", "runAsUser 0 is root",
         "FieldValueInvalid"),
    Case("privileged-without-escalation", "training",
         put("spec/steps/run/securityContext",
             {"privileged": True, "allowPrivilegeEscalation": False}),
         "spec.steps.run.securityContext.allowPrivilegeEscalation",
         "a privileged container always allows privilege escalation", "FieldValueInvalid"),
    Case("security-context-negative-uid", "training",
         put("spec/steps/run/securityContext", {"runAsUser": -1}),
         "spec.steps.run.securityContext.runAsUser", "should be greater than or equal to 0",
         "FieldValueInvalid"),
    Case("security-context-unknown-field", "training",
         put("spec/steps/run/securityContext", {"seLinuxOptions": {"level": "s0"}}),
         "spec.steps.run.securityContext.seLinuxOptions", "unknown field", UNKNOWN),
    Case("overcommitted-gpu", "training",
         chain(put("spec/steps/run/resources/requests", {"nvidia.com/gpu": 1}),
               put("spec/steps/run/resources/limits", {"nvidia.com/gpu": 2})),
         "spec.steps.run.resources.requests", "cannot be overcommitted", "FieldValueInvalid"),
    Case("missing-output-model-name", "training", drop("spec/output/model/name"),
         "spec.output.model.name", "Required value", "FieldValueRequired"),
    Case("missing-output-dataset-type", "preprocessing", drop("spec/output/dataset/type"),
         "spec.output.dataset.type", "Required value", "FieldValueRequired"),
    Case("storage-without-secretRef", "preprocessing", drop("spec/storage/secretRef"),
         "spec.storage.secretRef", "Required value", "FieldValueRequired"),
    # --- credentials inline, and other unknown fields (strict field validation)
    Case("inline-storage-accessKey", "training", put("spec/storage/accessKey", "AKIAEXAMPLE"),
         "spec.storage.accessKey", "unknown field", UNKNOWN),
    Case("inline-storage-secretKey", "optimization", put("spec/storage/secretKey", "wJalr"),
         "spec.storage.secretKey", "unknown field", UNKNOWN),
    Case("inline-storage-credentials", "preprocessing",
         put("spec/storage/credentials", {"accessKeyId": "AKIA", "secretAccessKey": "x"}),
         "spec.storage.credentials", "unknown field", UNKNOWN),
    Case("unknown-spec-field", "training", put("spec/gpus", 4),
         "spec.gpus", "unknown field", UNKNOWN),
    # --- numbers out of range
    Case("negative-retry-limit", "training", put("spec/runtime/retryPolicy/limit", -1),
         "spec.runtime.retryPolicy.limit", "should be greater than or equal to 0",
         "FieldValueInvalid"),
    Case("huge-retry-limit", "training", put("spec/runtime/retryPolicy/limit", 21),
         "spec.runtime.retryPolicy.limit", "should be less than or equal to 20",
         "FieldValueInvalid"),
    Case("zero-backoff-factor", "training", put("spec/runtime/retryPolicy/backoff/factor", 0),
         "spec.runtime.retryPolicy.backoff.factor", "should be greater than or equal to 1",
         "FieldValueInvalid"),
    Case("bad-backoff-duration", "training",
         put("spec/runtime/retryPolicy/backoff/duration", "soon"),
         "spec.runtime.retryPolicy.backoff.duration", "should match", "FieldValueInvalid"),
    Case("zero-deadline", "training", put("spec/runtime/activeDeadlineSeconds", 0),
         "spec.runtime.activeDeadlineSeconds", "should be greater than or equal to 1",
         "FieldValueInvalid"),
    Case("negative-deadline", "preprocessing", put("spec/runtime/activeDeadlineSeconds", -60),
         "spec.runtime.activeDeadlineSeconds", "should be greater than or equal to 1",
         "FieldValueInvalid"),
    Case("bad-volume-size", "training", put("spec/runtime/workVolume/size", "lots"),
         "spec.runtime.workVolume.size", "should match", "FieldValueInvalid"),
    Case("zero-volume-size", "training", put("spec/runtime/workVolume/size", "0Gi"),
         "spec.runtime.workVolume.size", "size must be greater than zero", "FieldValueInvalid"),
    Case("negative-volume-size", "training", put("spec/runtime/workVolume/size", "-10Gi"),
         "spec.runtime.workVolume.size", "should match", "FieldValueInvalid"),
    Case("negative-integer-volume-size", "training", put("spec/runtime/workVolume/size", -5),
         "spec.runtime.workVolume.size", "should be greater than or equal to 0",
         "FieldValueInvalid"),
    Case("negative-cpu-request", "preprocessing",
         put("spec/steps/run/resources/requests", {"cpu": "-1"}),
         "spec.steps.run.resources.requests.cpu", "should match", "FieldValueInvalid"),
    Case("bad-gpu-quantity", "training",
         put("spec/steps/run/resources/limits", {"nvidia.com/gpu": "one"}),
         "spec.steps.run.resources.limits.nvidia.com/gpu", "should match", "FieldValueInvalid"),
    Case("negative-retryGeneration", "training", put("spec/retryGeneration", -1),
         "spec.retryGeneration", "should be greater than or equal to 0", "FieldValueInvalid"),
    Case("description-too-long", "training", put("spec/description", "x" * 4097),
         "spec.description", "may not be more than 4096 bytes", "FieldValueTooLong"),
    # --- wrong types
    Case("image-not-a-string", "training", put("spec/steps/run/image", 42),
         "spec.steps.run.image", "must be of type string", "FieldValueTypeInvalid"),
    Case("command-not-a-list", "training", put("spec/steps/run/command", "python3 -m digits.train"),
         "spec.steps.run.command", "must be of type array", "FieldValueTypeInvalid"),
    Case("parameter-not-a-string", "training", put("spec/config/parameters/epochs", 30),
         "spec.config.parameters.epochs", "must be of type string", "FieldValueTypeInvalid"),
    Case("nodeSelector-a-list", "training", put("spec/runtime/nodeSelector", ["gpu"]),
         "spec.runtime.nodeSelector", "must be of type object", "FieldValueTypeInvalid"),
    Case("suspend-not-a-bool", "training", put("spec/suspend", "yes"),
         "spec.suspend", "must be of type boolean", "FieldValueTypeInvalid"),
    Case("retry-limit-a-string", "training", put("spec/runtime/retryPolicy/limit", "3"),
         "spec.runtime.retryPolicy.limit", "must be of type integer", "FieldValueTypeInvalid"),
    Case("input-a-string", "training", put("spec/input", "s3://mltask-examples/x.npz"),
         "spec.input", "must be of type object", "FieldValueTypeInvalid"),
]


def test_corpus_is_large_and_distinct() -> None:
    assert len(INVALID) >= 20
    assert len({c.id for c in INVALID}) == len(INVALID)
    for case in INVALID:
        body = copy.deepcopy(example(case.base))
        case.mutate(body)
        assert body != example(case.base), f"{case.id} does not change its example"


def _crd_rule_messages() -> list[str]:
    """The message of every x-kubernetes-validations rule in the generated MLTask CRD."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            out.extend(r["message"] for r in node.get("x-kubernetes-validations") or [])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(CRD_FILE.read_text()))
    return out


def test_every_crd_rule_is_exercised() -> None:
    """Each CEL rule is broken by a corpus case or by the update-rule tests below."""
    messages = _crd_rule_messages()
    assert len(messages) >= 10
    update_rules = [f"spec.{f} cannot change" for f in IMMUTABLE_FIELDS]
    update_rules.append("spec.retryGeneration may only increase")
    update_rules.append("the task is archived (spec.archived)")
    missed = [m for m in messages
              if not any(c.words in m for c in INVALID if c.reason)
              and not any(m.startswith(u) for u in update_rules)]
    assert missed == []


@pytest.mark.parametrize("case", INVALID, ids=[c.id for c in INVALID])
def test_invalid_mltask_is_refused_and_nothing_is_created(
        objects: client.CustomObjectsApi, namespace: str, case: Case) -> None:
    body = copy.deepcopy(example(case.base))
    case.mutate(body)
    name = body["metadata"]["name"]

    with pytest.raises(client.ApiException) as err:
        create(objects, namespace, body)
    status, reason, message, causes = refusal(err.value)

    if case.reason is UNKNOWN:
        assert (status, reason) == (400, "BadRequest"), message
        assert f'strict decoding error: unknown field "{case.field}"' in message, message
    else:
        assert (status, reason) == (422, "Invalid"), message
        assert case.field in message and case.words in message, message
        cause_field = case.field if case.at_field else "<nil>"
        assert any(c.get("field") == cause_field and c.get("reason") == case.reason
                   and case.words in c.get("message", "") for c in causes), causes

    with pytest.raises(client.ApiException) as missing:
        objects.get_namespaced_custom_object(G, V, namespace, P, name)
    assert missing.value.status == 404
    assert objects.list_namespaced_custom_object(G, V, namespace, P)["items"] == []
    assert objects.list_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows")["items"] == []


# ----------------------------------------------------------------------------- the examples


def test_the_examples_are_found() -> None:
    assert {p.name for p in EXAMPLES} >= {"mltask-preprocessing.yaml", "mltask-training.yaml",
                                          "mltask-optimization.yaml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_is_accepted_strictly(objects: client.CustomObjectsApi, namespace: str,
                                            path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    created = create(objects, namespace, body)

    def kept(sent: Any, stored: Any) -> bool:  # nothing pruned or rewritten, defaults aside
        if isinstance(sent, dict):
            return isinstance(stored, dict) and all(k in stored and kept(v, stored[k])
                                                    for k, v in sent.items())
        return sent == stored or (isinstance(sent, int) and str(sent) == str(stored))

    assert kept(body["spec"], created["spec"]), created["spec"]
    assert created["spec"]["suspend"] is False and created["spec"]["retryGeneration"] == 0
    names = [t["metadata"]["name"]
             for t in objects.list_namespaced_custom_object(G, V, namespace, P)["items"]]
    assert names == [body["metadata"]["name"]]


def test_names_that_only_contain_a_credential_word_are_accepted(
        objects: client.CustomObjectsApi, namespace: str) -> None:
    """The credential rules match whole words: ML knobs such as tokenizer settings pass."""
    body = example("training")
    body["spec"]["steps"]["run"]["env"] = [{"name": "TOKENIZERS_PARALLELISM", "value": "false"}]
    body["spec"]["config"]["parameters"] = {"tokenizer": "bpe", "max_tokens": "512"}
    created = create(objects, namespace, body)
    assert created["spec"]["config"]["parameters"]["tokenizer"] == "bpe"


@pytest.mark.parametrize("uri", [
    "s3://mltask-examples/raw/digits.csv.gz", "s3://mltask-examples/raw/", "s3://mltask-examples",
    "s3://my.bucket-1/raw data/a b.csv",  # S3 keys may hold spaces
    "https://data.example.com/raw data.csv",  # a URL may not: refused
    "https://data.example.com/raw/digits.csv.gz", "https://h:8443/f?x=1",
    "hf://openai/whisper-tiny", "hf://datasets/acme/digits@v1.0/train/",
    "hf://gpt2", "hf://models/acme/digits-mlp/model.joblib",
])
def test_what_the_default_download_serves_is_accepted(
        objects: client.CustomObjectsApi, namespace: str, uri: str) -> None:
    body = example("training")
    assert "download" not in body["spec"]["steps"], "the example leaves download to the operator"
    body["spec"]["input"]["dataset"]["uri"] = uri
    if uri.startswith("https") and " " in uri:  # percent-encode spaces in a URL
        with pytest.raises(client.ApiException) as err:
            create(objects, namespace, body)
        assert "spec.input.dataset.uri" in refusal(err.value)[2]
        return
    assert create(objects, namespace, body)["spec"]["input"]["dataset"]["uri"] == uri


def test_a_step_of_your_own_serves_any_scheme(objects: client.CustomObjectsApi,
                                              namespace: str) -> None:
    body = example("optimization")
    body["spec"]["steps"].update(download=OWN_DOWNLOAD, upload=OWN_UPLOAD)
    body["spec"]["input"]["dataset"]["uri"] = "gs://mltask-examples/digits-minmax.npz"
    body["spec"]["input"]["model"]["uri"] = "azureml://models/digits-mlp/3"
    body["spec"]["output"]["uri"] = "gs://mltask-examples/models/"
    created = create(objects, namespace, body)
    assert created["spec"]["steps"]["download"] == OWN_DOWNLOAD
    assert created["spec"]["steps"]["upload"] == OWN_UPLOAD


@pytest.mark.parametrize("resources", [
    {"limits": {"nvidia.com/gpu": 2, "cpu": "1.5", "memory": "0.5Gi"}},
    {"requests": {"nvidia.com/gpu": "1", "cpu": "500m"}, "limits": {"nvidia.com/gpu": "1"}},
    {"limits": {"gpu": 1}},
    {"requests": {"hugepages-2Mi": "1Gi", "example.kubernetes.io/thing": "0.5"}},
], ids=["int-gpu-fractional-cpu", "equal-request-limit", "gpu-alias", "native-fractions"])
def test_whole_extended_resources_and_fractional_native_ones_are_accepted(
        objects: client.CustomObjectsApi, namespace: str, resources: Body) -> None:
    body = example("training")
    body["spec"]["steps"]["run"]["resources"] = resources
    assert create(objects, namespace, body)["spec"]["steps"]["run"]["resources"]


# ---------------------------------------------------------------------------- update rules

def base_body(base: str) -> Body:
    """examples/mltask-<base>.yaml; "preprocessing-in-pipeline": with a pipelineRef."""
    if base == "preprocessing-in-pipeline":
        body = example("preprocessing")
        body["spec"]["pipelineRef"] = {"name": "digits"}
        return body
    return example(base)


# (field, example, merge patch of the spec changing only that field)
IMMUTABLE: list[tuple[str, str, Body]] = [
    ("type", "preprocessing", {"type": "training"}),
    ("pipelineRef", "training", {"pipelineRef": {"name": "digits"}}),
    ("pipelineRef", "preprocessing-in-pipeline", {"pipelineRef": {"name": "other-pipeline"}}),
    ("pipelineRef", "preprocessing-in-pipeline", {"pipelineRef": None}),
    ("input", "training",
     {"input": {"dataset": {"uri": "s3://mltask-examples/datasets/other.npz"}}}),
    ("input", "optimization",
     {"input": {"model": {"uri": "s3://mltask-examples/models/other/model.joblib"}}}),
    ("config", "training", {"config": {"parameters": {"epochs": "99"}}}),
    ("config", "training", {"config": None}),
    ("steps", "training",
     {"steps": {"run": {"image": "localhost/mltask-example-sklearn:0.2.0"}}}),
    ("output", "training", {"output": {"model": {"name": "digits-mlp-other"}}}),
    ("storage", "training", {"storage": {"secretRef": {"name": "other-credentials"}}}),
    ("storage", "preprocessing", {"storage": None}),
    ("runtime", "training", {"runtime": {"activeDeadlineSeconds": 60}}),
    ("runtime", "training", {"runtime": {"retryPolicy": {"limit": 4}}}),
]


def test_immutable_cases_cover_every_immutable_field() -> None:
    assert sorted({f for f, _, _ in IMMUTABLE}) == sorted(IMMUTABLE_FIELDS)


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "after-start"])
@pytest.mark.parametrize(("field", "base", "change"), IMMUTABLE,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(IMMUTABLE)])
def test_fixed_field_cannot_change(objects: client.CustomObjectsApi, namespace: str,
                                   field: str, base: str, change: Body, started: bool) -> None:
    """The rules hold from creation on, not only once the task has started (no status in them):
    refused both with no status and with a running status written through the subresource."""
    name = create(objects, namespace, base_body(base))["metadata"]["name"]
    if started:
        mark_started(objects, namespace, name)
    before = objects.get_namespaced_custom_object(G, V, namespace, P, name)["spec"]

    with pytest.raises(client.ApiException) as err:
        patch_spec(objects, namespace, name, change)
    status, reason, message, causes = refusal(err.value)

    assert (status, reason) == (422, "Invalid"), message
    assert f"spec.{field}: Forbidden: spec.{field} cannot change" in message, message
    assert any(c.get("field") == f"spec.{field}" and c.get("reason") == "FieldValueForbidden"
               for c in causes), causes
    after = objects.get_namespaced_custom_object(G, V, namespace, P, name)["spec"]
    assert after == before


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "after-start"])
def test_retry_generation_only_increases(objects: client.CustomObjectsApi, namespace: str,
                                         started: bool) -> None:
    name = create(objects, namespace, example("training"))["metadata"]["name"]
    if started:
        mark_started(objects, namespace, name)
    assert patch_spec(objects, namespace, name, {"retryGeneration": 2})["spec"][
        "retryGeneration"] == 2

    for lower in (1, 0, None):  # None: removing it (the default 0) is a decrease too
        with pytest.raises(client.ApiException) as err:
            patch_spec(objects, namespace, name, {"retryGeneration": lower})
        status, reason, message, causes = refusal(err.value)
        assert (status, reason) == (422, "Invalid"), message
        assert "spec.retryGeneration may only increase" in message, message
        assert any(c.get("field") == "spec.retryGeneration" for c in causes), causes

    stored = objects.get_namespaced_custom_object(G, V, namespace, P, name)["spec"]
    assert stored["retryGeneration"] == 2
    assert patch_spec(objects, namespace, name, {"retryGeneration": 2})["spec"][
        "retryGeneration"] == 2, "unchanged is allowed"


def test_an_archived_task_refuses_retry_and_continue_until_unarchived(
        objects: client.CustomObjectsApi, namespace: str) -> None:
    body = example("training")
    body["spec"]["suspend"] = True
    name = create(objects, namespace, body)["metadata"]["name"]
    patch_spec(objects, namespace, name, {"archived": True})
    for change in ({"retryGeneration": 1}, {"suspend": False}):
        with pytest.raises(client.ApiException) as err:
            patch_spec(objects, namespace, name, change)
        status, reason, message, causes = refusal(err.value)
        assert (status, reason) == (422, "Invalid"), message
        assert "spec.archived: Forbidden: the task is archived (spec.archived): unarchive " \
            "it" in message, message
        assert any(c.get("field") == "spec.archived" and c.get("reason") == "FieldValueForbidden"
                   for c in causes), causes
    assert patch_spec(objects, namespace, name, {"description": "kept"})["spec"][
        "description"] == "kept", "other changes are allowed"
    after = patch_spec(objects, namespace, name,
                       {"archived": False, "suspend": False, "retryGeneration": 1})["spec"]
    assert (after["archived"], after["suspend"], after["retryGeneration"]) == (False, False, 1), \
        "unarchiving and retrying in one change is allowed"


@pytest.mark.parametrize("started", [False, True], ids=["before-start", "after-start"])
def test_suspend_description_and_retry_generation_may_change(
        objects: client.CustomObjectsApi, namespace: str, started: bool) -> None:
    created = create(objects, namespace, example("training"))
    name = created["metadata"]["name"]
    if started:
        mark_started(objects, namespace, name)

    steps: list[tuple[Body, Body]] = [
        ({"suspend": True}, {"suspend": True}),
        ({"description": "Train the digits MLP, second try"},
         {"description": "Train the digits MLP, second try"}),
        ({"retryGeneration": 1}, {"retryGeneration": 1}),
        ({"suspend": False, "retryGeneration": 3, "description": None},
         {"suspend": False, "retryGeneration": 3}),
    ]
    for change, expected in steps:
        out = patch_spec(objects, namespace, name, change)["spec"]
        assert {k: out.get(k) for k in expected} == expected, change
    stored = objects.get_namespaced_custom_object(G, V, namespace, P, name)
    assert "description" not in stored["spec"]
    assert (stored["spec"]["suspend"], stored["spec"]["retryGeneration"]) == (False, 3)
    assert stored["metadata"]["generation"] == created["metadata"]["generation"] + len(steps)
    for field in IMMUTABLE_FIELDS:  # and nothing fixed moved meanwhile
        assert stored["spec"].get(field) == created["spec"].get(field), field
