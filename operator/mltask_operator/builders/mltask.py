"""Builds the child MLTask of one Pipeline task: defaults applied, upstream outputs filled in."""

from __future__ import annotations

from typing import Any

from mltask_operator import labels
from mltask_operator import pipeline_params as params
from mltask_operator.api.v1alpha1.common import API_VERSION
from mltask_operator.api.v1alpha1.mltask import KIND as MLTASK_KIND
from mltask_operator.api.v1alpha1.mltask import MLTaskSpec
from mltask_operator.api.v1alpha1.pipeline import Pipeline, PipelineTask


def child_name(pipeline: str, task: str) -> str:
    """Deterministic: a restarted operator can never create a second MLTask for a task."""
    return f"{pipeline}-{task}"


def child_labels(pipeline: str, task: str) -> dict[str, str]:
    # Only our own keys: copying the Pipeline's labels would copy Argo CD's tracking label,
    # and Argo CD would then prune the children as resources missing from Git.
    return {
        labels.PIPELINE: pipeline,
        labels.PIPELINE_TASK: task,
        labels.MANAGED_BY: labels.MANAGER,
    }


def child_spec(pipeline: Pipeline, task: PipelineTask,
               outputs: dict[str, str]) -> MLTaskSpec:
    """The task's spec with its $(params.NAME) placeholders replaced by the pipeline's
    parameters, the pipeline defaults it does not override, and every fromTask replaced by the
    URI the upstream task produced (`outputs`: task name -> output URI)."""
    tpl = params.apply(task.spec, params.resolve(pipeline.spec))
    d = pipeline.spec.defaults
    if d is not None:
        if tpl.storage is None and d.storage is not None:
            tpl.storage = d.storage.model_copy(deep=True)
        rt = tpl.runtime
        if rt.node_selector is None and d.node_selector is not None:
            rt.node_selector = dict(d.node_selector)
        if rt.tolerations is None and d.tolerations is not None:
            rt.tolerations = [t.model_copy() for t in d.tolerations]
        if rt.service_account_name is None:
            rt.service_account_name = d.service_account_name
        if rt.priority_class_name is None:
            rt.priority_class_name = d.priority_class_name
    for kind, upstream in tpl.input.upstreams().items():
        source = getattr(tpl.input, kind)
        source.uri, source.from_task = outputs[upstream], None
    return MLTaskSpec.model_validate({**dict(tpl), "pipeline_ref": {"name": pipeline.name}})


def build_child(pipeline: Pipeline, task: PipelineTask,
                outputs: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": MLTASK_KIND,
        "metadata": {
            "name": child_name(pipeline.name, task.name),
            "namespace": pipeline.namespace,
            "labels": child_labels(pipeline.name, task.name),
            "ownerReferences": [pipeline.owner_reference()],
        },
        "spec": child_spec(pipeline, task, outputs).to_k8s(),
    }
