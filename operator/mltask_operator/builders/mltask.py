"""Builds the child MLTask of one Pipeline task: defaults applied, upstream outputs filled in."""

from __future__ import annotations

import copy
from collections.abc import Mapping
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


def output_digests(children: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The sha256 of each completed child's output (task name -> status.outputs.sha256), for
    child_spec: what makes a downstream task's cache key change when its input did."""
    out: dict[str, str] = {}
    for task, body in children.items():
        st = body.get("status") or {}
        digest = (st.get("outputs") or {}).get("sha256")
        if st.get("status") == "completed" and digest:
            out[task] = str(digest)
    return out


def child_spec(pipeline: Pipeline, task: PipelineTask, outputs: dict[str, str],
               digests: Mapping[str, str] | None = None) -> MLTaskSpec:
    """The task's spec with its $(params.NAME) placeholders replaced by the pipeline's
    parameters, the pipeline defaults it does not override, and every fromTask replaced by the
    URI the upstream task produced (`outputs`: task name -> output URI) and its sha256 when
    known (`digests`: task name -> sha256)."""
    tpl = params.apply(task.spec, params.resolve(pipeline.spec))
    d = pipeline.spec.defaults
    if d is not None:
        if tpl.storage is None and d.storage is not None:
            tpl.storage = d.storage.model_copy(deep=True)
        if tpl.cache is None and d.cache is not None:
            tpl.cache = d.cache.model_copy()
        rt = tpl.runtime
        if rt.node_selector is None and d.node_selector is not None:
            rt.node_selector = dict(d.node_selector)
        if rt.tolerations is None and d.tolerations is not None:
            rt.tolerations = [t.model_copy() for t in d.tolerations]
        if rt.service_account_name is None:
            rt.service_account_name = d.service_account_name
        if rt.priority_class_name is None:
            rt.priority_class_name = d.priority_class_name
        for name in ("shared_memory_size", "image_pull_secrets", "volumes", "pod_labels",
                     "pod_annotations", "scheduler_name", "runtime_class_name"):
            if getattr(rt, name) is None and getattr(d, name) is not None:
                setattr(rt, name, copy.deepcopy(getattr(d, name)))
    for kind, upstream in tpl.input.upstreams().items():
        source = getattr(tpl.input, kind)
        source.uri, source.from_task = outputs[upstream], None
        source.sha256 = (digests or {}).get(upstream, source.sha256)
    return MLTaskSpec.model_validate({**dict(tpl), "pipeline_ref": {"name": pipeline.name}})


def build_child(pipeline: Pipeline, task: PipelineTask, outputs: dict[str, str],
                digests: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": MLTASK_KIND,
        "metadata": {
            "name": child_name(pipeline.name, task.name),
            "namespace": pipeline.namespace,
            "labels": child_labels(pipeline.name, task.name),
            "ownerReferences": [pipeline.owner_reference()],
        },
        "spec": child_spec(pipeline, task, outputs, digests).to_k8s(),
    }
