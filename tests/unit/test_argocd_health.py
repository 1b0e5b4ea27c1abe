"""Argo CD health checks for MLTask and Pipeline (Lua, run with lupa the way Argo CD runs them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from lupa import LuaError, LuaRuntime

from harness.tasks import REPO
from mltask_operator.api.v1alpha1.mltask import Phase

ARGOCD = REPO / "manifests" / "argocd"
MLTASK_LUA = PIPELINE_LUA = ARGOCD / "health.lua"  # one script serves both kinds
CM_KEYS = {"resource.customizations.health.mltask.dev_MLTask": MLTASK_LUA,
           "resource.customizations.health.mltask.dev_Pipeline": PIPELINE_LUA}
ARGOCD_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Argo CD runs an argocd-cm health check in gopher-lua with only the base, table, package and a
# two-function os library: no string or math (nor string methods), no io or debug. Remove them
# here too, so a check that needs one fails in this test rather than in Argo CD.
_ARGOCD_SANDBOX = """
local safe_os = {time = os.time, date = os.date}
debug.setmetatable("", nil)
string, math, io, debug, utf8, coroutine = nil, nil, nil, nil, nil, nil
os = safe_os
"""


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    """Python dicts/lists -> Lua tables, recursively; lists 1-indexed, None keys left out."""
    if isinstance(value, dict):
        table = lua.table()
        for key, item in value.items():
            if item is not None:  # a Lua table cannot hold nil: absent, as in Argo CD
                table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list | tuple):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def run_check(script: Path, obj: dict[str, Any]) -> tuple[str, str]:
    """Run a health check as Argo CD does: `obj` a global, the chunk returns the hs table."""
    lua = LuaRuntime(unpack_returned_tuples=False)
    lua.execute(_ARGOCD_SANDBOX)
    lua.globals().obj = to_lua(lua, obj)
    hs = lua.execute(script.read_text())
    assert lua.eval("type")(hs) == "table", f"{script.name} must return a table"
    status, message = hs["status"], hs["message"]
    assert status in ARGOCD_HEALTH, f"{script.name} returned health {status!r}"
    assert isinstance(message, str), f"{script.name} returned message {message!r}"
    return status, message


def mltask(status: dict[str, Any] | None, generation: int | None = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
        "metadata": {"name": "train", "namespace": "ml", "generation": generation},
        "spec": {"type": "training"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def pipeline(status: dict[str, Any] | None, generation: int | None = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "mltask.dev/v1alpha1", "kind": "Pipeline",
        "metadata": {"name": "digits", "namespace": "ml", "generation": generation},
        "spec": {"tasks": [{"name": "prep"}, {"name": "train"}, {"name": "tune"}]},
    }
    if status is not None:
        obj["status"] = status
    return obj


def _conditions(phase: str) -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": "True" if phase == "completed" else "False",
             "reason": phase.capitalize(), "observedGeneration": 1},
            {"type": "Succeeded", "status": "True" if phase == "completed" else "False",
             "reason": phase.capitalize(), "observedGeneration": 1}]


# ------------------------------------------------------------------------------ the helper


def test_to_lua_builds_nested_tables_with_1_indexed_lists() -> None:
    lua = LuaRuntime()
    obj = to_lua(lua, {"status": {"conditions": _conditions("running"), "message": None},
                       "metadata": {"generation": 4}})
    probe = lua.eval("""function(o)
        local c = o.status.conditions
        return #c, c[1].type, c[2].type, c[0], o.status.message, o.metadata.generation
    end""")
    assert tuple(probe(obj)) == (2, "Ready", "Succeeded", None, None, 4)


def test_sandbox_has_no_string_or_math_library() -> None:
    lua = LuaRuntime()
    lua.execute(_ARGOCD_SANDBOX)
    assert lua.eval("string == nil and math == nil and io == nil and os.exit == nil")
    with pytest.raises(LuaError, match="index"):
        lua.execute('return ("abc"):upper()')


# ------------------------------------------------------------------------------- MLTask

#: The states come from the model (Phase): a new state fails the tests until it is mapped
#: here and in health.lua. Per state: executeStep, message, expected (health, message).
MLTASK_SAMPLES: dict[str, tuple[str, str, tuple[str, str]]] = {
    "init": ("prepare_file", "Preparing the working volume and Workflow",
             ("Progressing", "prepare_file: Preparing the working volume and Workflow")),
    "running": ("run_task", "Running run_task", ("Progressing", "run_task: Running run_task")),
    "retry": ("download", "Retrying download step (retry 1 of 3)",
              ("Progressing", "download: Retrying download step (retry 1 of 3)")),
    "stopping": ("upload", "Stopping at upload", ("Progressing", "upload: Stopping at upload")),
    "completed": ("done", "Completed", ("Healthy", "done: Completed")),
    "failed": ("run_task", "run step exited with code 1",
               ("Degraded", "run_task: run step exited with code 1")),
    "stopped": ("run_task", "Stopped at run_task", ("Suspended", "run_task: Stopped at run_task")),
}
PHASES = [str(p) for p in Phase]


def mltask_sample(phase: str) -> tuple[dict[str, Any], tuple[str, str]]:
    """The MLTask of MLTASK_SAMPLES[phase] as the operator writes it, and its expected health."""
    step, message, expected = MLTASK_SAMPLES[phase]
    obj = mltask({"status": phase, "executeStep": step, "message": message,
                  "attempt": 1, "conditions": _conditions(phase), "observedGeneration": 1})
    return obj, expected


def test_samples_cover_exactly_the_models_states() -> None:
    assert set(MLTASK_SAMPLES) == set(PHASES) == set(PIPELINE_SAMPLES), \
        "map every Phase (api/v1alpha1/mltask.py) to its Argo CD health, and nothing else"


@pytest.mark.parametrize("phase", PHASES)
def test_mltask_every_state(phase: str) -> None:
    assert phase in MLTASK_SAMPLES, f"state {phase!r} has no expected health: map it here and " \
        "in manifests/argocd/health.lua"
    obj, expected = mltask_sample(phase)
    assert run_check(MLTASK_LUA, obj) == expected


def test_mltask_without_status_waits_for_the_operator() -> None:
    assert run_check(MLTASK_LUA, mltask(None)) == ("Progressing", "Waiting for the operator")
    # Kopf may write its own bookkeeping into status before the operator's first status.
    assert run_check(MLTASK_LUA, mltask({"kopf": {"progress": {}}})) == (
        "Progressing", "Waiting for the operator")
    assert run_check(MLTASK_LUA, {"metadata": {"name": "bare"}}) == (
        "Progressing", "Waiting for the operator")


def test_mltask_generation_ahead_of_observed_generation() -> None:
    obj = mltask({"status": "completed", "executeStep": "done", "message": "Completed",
                  "observedGeneration": 2}, generation=3)
    assert run_check(MLTASK_LUA, obj) == (
        "Progressing", "Waiting for the operator to observe generation 3")


def test_mltask_generation_observed_or_unknown_is_not_waiting() -> None:
    caught_up = mltask({"status": "completed", "executeStep": "done", "message": "Completed",
                        "observedGeneration": 3}, generation=3)
    assert run_check(MLTASK_LUA, caught_up) == ("Healthy", "done: Completed")
    no_observed = mltask({"status": "failed", "executeStep": "upload", "message": "boom"},
                         generation=3)
    assert run_check(MLTASK_LUA, no_observed) == ("Degraded", "upload: boom")
    no_metadata = {"status": {"status": "running", "observedGeneration": 1}}
    assert run_check(MLTASK_LUA, no_metadata) == ("Progressing", "running")


def test_mltask_nil_message_falls_back_to_the_status() -> None:
    obj = mltask({"status": "failed", "executeStep": "run_task", "observedGeneration": 1})
    assert run_check(MLTASK_LUA, obj) == ("Degraded", "run_task: failed")
    obj = mltask({"status": "running", "message": "", "observedGeneration": 1})
    assert run_check(MLTASK_LUA, obj) == ("Progressing", "running")
    obj = mltask({"status": "stopped"})
    assert run_check(MLTASK_LUA, obj) == ("Suspended", "stopped")


def test_mltask_unknown_status_or_odd_types() -> None:
    obj = mltask({"status": "exploded", "executeStep": "run_task", "message": "?"})
    assert run_check(MLTASK_LUA, obj) == ("Unknown", "run_task: ?")
    odd = mltask({"status": "running", "executeStep": {"not": "a string"}, "message": 42})
    assert run_check(MLTASK_LUA, odd) == ("Progressing", "running")
    assert run_check(MLTASK_LUA, {"status": "completed"}) == (
        "Progressing", "Waiting for the operator")


# ------------------------------------------------------------------------------ Pipeline

#: Per state (the same Phase as an MLTask): progress, message, expected (health, message).
PIPELINE_SAMPLES: dict[str, tuple[str, str, tuple[str, str]]] = {
    "init": ("0/3", "Starting: prep", ("Progressing", "0/3: Starting: prep")),
    "running": ("2/3", "Running: train", ("Progressing", "2/3: Running: train")),
    "retry": ("1/3", "Retrying: train", ("Progressing", "1/3: Retrying: train")),
    "stopping": ("1/3", "Stopping: train stopping; tune not started",
                 ("Progressing", "1/3: Stopping: train stopping; tune not started")),
    "completed": ("3/3", "All 3 tasks completed", ("Healthy", "3/3: All 3 tasks completed")),
    "failed": ("1/3", "Task train failed: run step exited with code 1",
               ("Degraded", "1/3: Task train failed: run step exited with code 1")),
    "stopped": ("1/3", "Stopped: train stopped; tune not started",
                ("Suspended", "1/3: Stopped: train stopped; tune not started")),
}


def pipeline_sample(phase: str) -> tuple[dict[str, Any], tuple[str, str]]:
    """The Pipeline of PIPELINE_SAMPLES[phase] as the operator writes it, and its expected
    health."""
    progress, message, expected = PIPELINE_SAMPLES[phase]
    done, total = (int(n) for n in progress.split("/"))
    obj = pipeline({"status": phase, "progress": progress, "message": message,
                    "completedTasks": done, "totalTasks": total,
                    "tasks": [{"name": "prep", "status": "completed"},
                              {"name": "train", "status": phase}],
                    "conditions": _conditions(phase), "observedGeneration": 1})
    return obj, expected


@pytest.mark.parametrize("phase", PHASES)
def test_pipeline_every_state(phase: str) -> None:
    assert phase in PIPELINE_SAMPLES, f"state {phase!r} has no expected health: map it here " \
        "and in manifests/argocd/health.lua"
    obj, expected = pipeline_sample(phase)
    assert run_check(PIPELINE_LUA, obj) == expected


def test_pipeline_without_status_waits_for_the_operator() -> None:
    assert run_check(PIPELINE_LUA, pipeline(None)) == ("Progressing", "Waiting for the operator")
    assert run_check(PIPELINE_LUA, pipeline({"progress": "0/3"})) == (
        "Progressing", "Waiting for the operator")


def test_pipeline_generation_ahead_of_observed_generation() -> None:
    obj = pipeline({"status": "running", "progress": "1/3", "message": "Running: train",
                    "observedGeneration": 4}, generation=5)
    assert run_check(PIPELINE_LUA, obj) == (
        "Progressing", "Waiting for the operator to observe generation 5")
    caught_up = pipeline({"status": "running", "progress": "1/3", "message": "Running: train",
                          "observedGeneration": 5}, generation=5)
    assert run_check(PIPELINE_LUA, caught_up) == ("Progressing", "1/3: Running: train")


def test_pipeline_nil_message_and_nil_progress() -> None:
    obj = pipeline({"status": "failed", "progress": "1/3", "observedGeneration": 1})
    assert run_check(PIPELINE_LUA, obj) == ("Degraded", "1/3: failed")
    obj = pipeline({"status": "completed", "message": "All 3 tasks completed"})
    assert run_check(PIPELINE_LUA, obj) == ("Healthy", "All 3 tasks completed")
    obj = pipeline({"status": "init"})
    assert run_check(PIPELINE_LUA, obj) == ("Progressing", "init")


def test_pipeline_ignores_mltask_fields_and_vice_versa() -> None:
    # Each script reads its own kind's prefix field only.
    assert run_check(PIPELINE_LUA, pipeline({"status": "running", "executeStep": "run_task",
                                             "message": "Running: train"})) == (
        "Progressing", "Running: train")
    assert run_check(MLTASK_LUA, mltask({"status": "running", "progress": "2/3",
                                         "message": "Running run_task"})) == (
        "Progressing", "Running run_task")


# ----------------------------------------------------------------- generated argocd-cm


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_argocd_cm", ARGOCD / "gen_argocd_cm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_patch_is_up_to_date() -> None:
    gen = _generator()
    diff = gen.check()
    assert not diff, ("manifests/argocd/argocd-cm-patch.yaml is stale; run "
                      "python manifests/argocd/gen_argocd_cm.py\n" + "".join(diff))
    assert gen.main(["--check"]) == 0


def test_drift_check_detects_a_stale_file(tmp_path: Path) -> None:
    gen = _generator()
    stale = tmp_path / "argocd-cm-patch.yaml"
    stale.write_text(gen.render().replace('"Degraded"', '"Healthy"'))
    assert gen.check(stale), "an edited ConfigMap must count as drift"
    assert gen.check(tmp_path / "missing.yaml"), "a missing ConfigMap must count as drift"
    stale.write_text(gen.render())
    assert gen.check(stale) == []


def test_argocd_cm_patch_carries_the_lua_files() -> None:
    text = (ARGOCD / "argocd-cm-patch.yaml").read_text()
    assert text.startswith("# generated by manifests/argocd/gen_argocd_cm.py; DO NOT EDIT\n")
    cm = yaml.safe_load(text)
    assert (cm["apiVersion"], cm["kind"]) == ("v1", "ConfigMap")
    assert (cm["metadata"]["name"], cm["metadata"]["namespace"]) == ("argocd-cm", "argocd")
    assert cm["metadata"]["labels"]["app.kubernetes.io/part-of"] == "argocd"
    assert set(cm["data"]) == set(CM_KEYS)
    for key, lua_file in CM_KEYS.items():
        assert cm["data"][key] == lua_file.read_text(), key
        assert f"\n  {key}: |\n" in text, f"{key} is not a literal block"
