"""Argo CD health checks (Lua, run with lupa) for MLTask and Pipeline, for every state."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from harness.tasks import REPO

ARGOCD = REPO / "manifests" / "argocd"
STATES = [("completed", "Healthy"), ("init", "Progressing"), ("running", "Progressing"),
          ("retry", "Progressing"), ("stopping", "Progressing"), ("failed", "Degraded"),
          ("stopped", "Suspended")]


def lua_table(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: lua_table(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([lua_table(lua, v) for v in value])
    return value


def health(script: str, obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    fn = lua.eval(f"function(obj)\n{(ARGOCD / script).read_text()}\nend")
    hs = fn(lua_table(lua, obj))
    return hs["status"], hs["message"]


@pytest.mark.parametrize(("state", "expected"), STATES)
def test_mltask_health(state: str, expected: str) -> None:
    obj = {"metadata": {"generation": 2},
           "status": {"status": state, "executeStep": "run_task", "message": "Running run_task",
                      "observedGeneration": 2}}
    assert health("health-mltask.lua", obj) == (expected, "run_task: Running run_task")


@pytest.mark.parametrize(("state", "expected"), STATES)
def test_pipeline_health(state: str, expected: str) -> None:
    obj = {"metadata": {"generation": 1},
           "status": {"status": state, "progress": "2/3", "message": "Running: train",
                      "observedGeneration": 1}}
    assert health("health-pipeline.lua", obj) == (expected, "2/3: Running: train")


@pytest.mark.parametrize("script", ["health-mltask.lua", "health-pipeline.lua"])
def test_not_yet_reconciled_and_stale_generation(script: str) -> None:
    assert health(script, {"metadata": {"name": "x"}}) == ("Progressing",
                                                           "Waiting for the operator")
    stale = {"metadata": {"generation": 3},
             "status": {"status": "completed", "observedGeneration": 2}}
    assert health(script, stale) == ("Progressing",
                                     "Waiting for the operator to observe generation 3")


def test_missing_message_and_unknown_state() -> None:
    assert health("health-mltask.lua", {"status": {"status": "failed"}}) == ("Degraded",
                                                                             "failed")
    assert health("health-pipeline.lua", {"status": {"status": "weird"}})[0] == "Unknown"


def test_argocd_cm_is_generated_from_the_lua_files() -> None:
    spec = importlib.util.spec_from_file_location("gen", ARGOCD / "gen_argocd_cm.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0, "run `make generate`"
    cm = yaml.safe_load((ARGOCD / "argocd-cm-patch.yaml").read_text())
    assert cm["data"]["resource.customizations.health.mltask.dev_MLTask"] == (
        ARGOCD / "health-mltask.lua").read_text()
    assert cm["data"]["resource.customizations.health.mltask.dev_Pipeline"] == (
        ARGOCD / "health-pipeline.lua").read_text()
