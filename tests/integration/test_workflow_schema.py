"""Every Workflow shape the builder can produce is accepted by Argo's full CRD schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from mltask_operator.api.v1alpha1.mltask import MLTask, StepName
from mltask_operator.builders.workflow import ResolvedInputs, build_work_pvc, build_workflow
from mltask_operator.settings import RunStepDefaults

pytestmark = pytest.mark.integration
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("mltask-*.yaml"))


@pytest.mark.parametrize("start_at", list(StepName), ids=str)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_built_workflow_is_accepted_by_argo_schema(
        api: client.ApiClient, namespace: str, path: Path, start_at: StepName) -> None:
    body = yaml.safe_load(path.read_text())
    body["metadata"].update(namespace=namespace, uid="00000000-0000-0000-0000-000000000001")
    body["spec"]["runtime"] = {**body["spec"].get("runtime", {}),
                               "affinity": {"nodeAffinity": {
                                   "requiredDuringSchedulingIgnoredDuringExecution": {
                                       "nodeSelectorTerms": [{"matchExpressions": [{
                                           "key": "gpu", "operator": "In",
                                           "values": ["a100"]}]}]}}},
                               "priorityClassName": "ml-high", "serviceAccountName": "runner",
                               "activeDeadlineSeconds": 3600}
    task = MLTask.model_validate(body)
    # with the cluster's GPU policy (template nodeSelector, tolerations, podSpecPatch)
    policy = RunStepDefaults(node_selector={"pool": "a100"},
                             tolerations=[{"key": "spot", "operator": "Exists"}],
                             runtime_class_name="nvidia")
    wf = build_workflow(task, attempt=2, start_at=start_at,
                        inputs=ResolvedInputs("s3://d/x.zip", "s3://m/y.pt"), defaults=policy)
    objects = client.CustomObjectsApi(api)
    # Strict: an unknown field would be refused, not silently pruned
    created = objects.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows", wf, field_validation="Strict")
    assert created["spec"]["templates"] == wf["spec"]["templates"], "the server pruned fields"
    pvc = build_work_pvc(task)
    client.CoreV1Api(api).create_namespaced_persistent_volume_claim(
        namespace, pvc, field_validation="Strict")
