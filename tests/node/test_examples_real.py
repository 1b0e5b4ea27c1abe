"""The examples run for real: the three MLTasks and the pipeline, on the real node, under Argo's
real controller and executor, with the project's own transfer steps and the example image doing
real scikit-learn work, their outputs stored in the local S3 server."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import time
from typing import Any

import pytest
import yaml

from harness.tasks import REPO, step
from harness.workspace import Workspace, kubectl_mltask, stored

pytestmark = pytest.mark.timeout(1800)

EXAMPLES = REPO / "examples"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())


def check_output_is_stored(ws: Workspace, status: dict[str, Any]) -> bytes:
    """status.outputs names an object of the bucket whose size and sha256 it reports."""
    out = status["outputs"]
    data = stored(ws.s3, out["uri"])
    assert out["size"] == len(data), out
    assert out["sha256"] == hashlib.sha256(data).hexdigest(), out
    return data


def test_the_three_mltask_examples_run_in_order(ws: Workspace) -> None:
    """preprocessing stores a dataset, training a model from it, optimization a smaller model;
    each reads what the previous one stored, as a user applying the examples in order does."""
    prep = ws.tasks.create(load("mltask-preprocessing.yaml"))["metadata"]["name"]
    st = ws.tasks.wait_state(prep, "completed", timeout=240)["status"]
    assert st["outputs"]["uri"] == "s3://mltask-examples/datasets/digits/digits-minmax.npz"
    check_output_is_stored(ws, st)
    assert st["metrics"]["samples"] == 1797, st["metrics"]  # the digits scikit-learn ships
    assert [s["phase"] for s in st["steps"]] == ["Succeeded"] * 3

    train = ws.tasks.create(load("mltask-training.yaml"))["metadata"]["name"]
    st = ws.tasks.wait_state(train, "completed", timeout=240)["status"]
    model = check_output_is_stored(ws, st)
    accuracy = st["metrics"]["accuracy"]
    assert 0.9 < accuracy <= 1.0, st["metrics"]  # held out: a real number, not a constant
    run_pod = ws.core.read_namespaced_pod(step(st, "run")["pod"], ws.namespace)
    main = next(c for c in run_pod.spec.containers if c.name == "main")
    limits = main.resources.limits
    assert limits["nvidia.com/gpu"] == "1", "the GPU example asks for a GPU"
    assert run_pod.spec.node_name == ws.node_name, "and runs on the real node advertising it"
    log = kubectl_mltask(ws, "logs", train, "--step", "run").stdout
    assert "epoch" in log and "accuracy" in log, log

    opt = ws.tasks.create(load("mltask-optimization.yaml"))["metadata"]["name"]
    st = ws.tasks.wait_state(opt, "completed", timeout=240)["status"]
    smaller = check_output_is_stored(ws, st)
    m = st["metrics"]
    assert len(smaller) < len(model) and m["compressionRatio"] > 1.5, m
    assert m["baselineAccuracy"] == pytest.approx(accuracy)
    assert m["accuracy"] >= accuracy - 0.02, "the example's maxAccuracyDrop holds"


def test_the_pipeline_example_runs_to_completed(ws: Workspace) -> None:
    """The three-stage pipeline: each upload's object is handed to the next task; the run
    step's log reads back, and `logs -f` ends when the pod ends."""
    body = load("pipeline-digits.yaml")
    name = body["metadata"]["name"]
    ws.pipelines.create(body)
    train = f"{name}-train"
    deadline = time.monotonic() + 240  # the pipeline creates it once preprocessing completed
    while train not in ws.pipelines.children():
        assert time.monotonic() < deadline, "the pipeline never created its training task"
        time.sleep(0.5)
    ws.tasks.wait(train, lambda s: s.get("executeStep") == "run_task", "training to run",
                  timeout=240)
    t0 = time.monotonic()
    follow = subprocess.run([*ws.kubectl_mltask_argv, "logs", train, "--step", "run", "-f"],
                            capture_output=True, text=True, timeout=300, env=ws.cli_env)
    assert follow.returncode == 0, follow.stderr
    assert "accuracy" in follow.stdout, follow.stdout  # the training's last lines
    st = ws.tasks.get(train)["status"]
    pod = ws.core.read_namespaced_pod(step(st, "run")["pod"], ws.namespace)
    main = next(c for c in pod.status.container_statuses if c.name == "main")
    assert main.state.terminated is not None, f"-f returned while main still ran: {main.state}"
    assert time.monotonic() - t0 < 120

    pl = ws.pipelines.wait(name, lambda s: s.get("status") in ("completed", "failed"),
                           "the pipeline to end", timeout=420)["status"]
    assert pl["status"] == "completed", json.dumps(pl, indent=1)
    objects = {}
    for task in ("preprocess", "train", "optimize"):
        st = ws.tasks.get(f"{name}-{task}")["status"]
        assert st["status"] == "completed"
        objects[task] = st["outputs"]["uri"]
        check_output_is_stored(ws, st)
    assert objects["preprocess"].startswith("s3://mltask-examples/pipelines/digits/")
    train_spec = ws.tasks.get(train)["spec"]
    assert train_spec["input"]["dataset"]["uri"] == objects["preprocess"], "handed on"
    opt_spec = ws.tasks.get(f"{name}-optimize")["spec"]
    assert opt_spec["input"]["model"]["uri"] == objects["train"]
    assert 0.9 < ws.tasks.get(train)["status"]["metrics"]["accuracy"] <= 1.0


def test_the_params_example_keeps_each_runs_outputs_and_a_third_run_reuses_the_first(
        ws: Workspace) -> None:
    """Issue 26, finding 5: two runs with other values write under runs/<their name>/ (no run
    overwrites another's model), and a third run with the first one's values reuses the first
    run's outputs (spec.cache), whose sha256 still holds."""
    base = load("pipeline-params.yaml")
    base["spec"]["defaults"]["cache"] = {"enabled": True}
    runs = {"digits-tuned-a": "0.001", "digits-tuned-b": "0.01", "digits-tuned-c": "0.001"}
    outputs: dict[str, dict[str, Any]] = {}
    for name, rate in runs.items():
        body = copy.deepcopy(base)
        body["metadata"] = {"name": name}
        next(p for p in body["spec"]["parameters"] if p["name"] == "learningRate")["value"] = rate
        ws.pipelines.create(body)
        pl = ws.pipelines.wait(name, lambda s: s.get("status") in ("completed", "failed"),
                               f"{name} to end", timeout=600)["status"]
        assert pl["status"] == "completed", json.dumps(pl, indent=1)
        outputs[name] = ws.tasks.get(f"{name}-train")["status"]
    a, b, c = (outputs[n] for n in runs)
    prefix = "s3://mltask-examples/pipelines/digits/runs/"
    assert a["outputs"]["uri"].startswith(f"{prefix}digits-tuned-a/models/mlp/"), a["outputs"]
    assert b["outputs"]["uri"].startswith(f"{prefix}digits-tuned-b/models/mlp/"), b["outputs"]
    check_output_is_stored(ws, a)  # the second run did not write over the first one's model
    check_output_is_stored(ws, b)
    assert c["outputs"] == a["outputs"], "the third run reuses the first run's model"
    cached = next(x for x in c["conditions"] if x["type"] == "Cached")
    assert (cached["status"], cached["reason"]) == ("True", "CacheHit"), cached
    assert "digits-tuned-a-train" in cached["message"], cached
