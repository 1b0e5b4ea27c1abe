"""Test helpers over the Pipeline API: create, patch, wait for a status, read children."""

from __future__ import annotations

import time
from typing import Any

import yaml

from harness import argo_standin as argo_fn
from harness.tasks import REPO, G, Resources, V
from harness.tasks import P as TASKS

PIPELINES = "pipelines"
#: What the upload step of a preprocessing task of the pipeline examples reports.
DATASET = {"uri": "s3://mltask-examples/pipelines/digits/datasets/digits-minmax.npz",
           "size": 78_336, "sha256": "cd" * 32}


def pipeline_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "examples" / f"pipeline-{name}.yaml").read_text())


def model_result(name: str) -> dict[str, Any]:
    """What the upload step of a training or optimization task reports for model `name`."""
    return {"uri": f"s3://mltask-examples/models/{name}/model.joblib", "size": 37_704,
            "sha256": "ef" * 32}


class Pipelines(Resources):
    """Small helper over the Pipeline API for one namespace."""

    plural, kind = PIPELINES, "Pipeline"

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.objects.create_namespaced_custom_object(G, V, self.ns, PIPELINES, body,
                                                            field_validation="Strict")

    def children(self) -> dict[str, dict[str, Any]]:
        items = self.objects.list_namespaced_custom_object(G, V, self.ns, TASKS)["items"]
        return {i["metadata"]["name"]: i for i in items}

    def wait_state(self, name: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait(name, lambda s: s.get("status") == status, f"{name} to be {status}",
                         timeout)["status"]

    def wait_child(self, name: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.children().get(name)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"MLTask {name} was not created; have {sorted(self.children())}")


def succeed(argo: argo_fn.ArgoStandIn, ns: str, wf: str, result: dict[str, Any],
            metrics: dict[str, float] | None = None) -> None:
    """Workflow `wf`, once the operator created it, succeeds with the upload step's `result`
    and the run step's `metrics`."""
    argo.wait_for(ns, wf)
    argo.update(ns, wf, argo_fn.succeed_all, result=result,
                metrics=metrics or {"accuracy": 0.9})


def through_training(pipes: Pipelines, argo: argo_fn.ArgoStandIn, accuracy: float,
                     pipeline: str = "digits") -> None:
    """The preprocess and train tasks of a digits pipeline example succeed, the training
    reporting `accuracy`."""
    pipes.wait_child(f"{pipeline}-preprocess")
    succeed(argo, pipes.ns, f"{pipeline}-preprocess-1", DATASET)
    pipes.wait_child(f"{pipeline}-train")
    succeed(argo, pipes.ns, f"{pipeline}-train-1", model_result("digits-mlp"),
            {"accuracy": accuracy})


def task_state(status: dict[str, Any], task: str) -> dict[str, Any]:
    return next(t for t in status.get("tasks") or [] if t["name"] == task)
