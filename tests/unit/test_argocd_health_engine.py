"""Argo CD health checks run by Argo CD's own Lua engine (util/lua in gopher-lua), not lupa."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_argocd_health import (
    ARGOCD,
    MLTASK_LUA,
    PHASES,
    mltask,
    mltask_sample,
    pipeline,
    pipeline_sample,
    run_check,
)

from harness.controlplane import BIN_DIR

#: tests/tools/argocd, built by tests/tools/build.sh (`make tools`): evaluates each object with
#: gitops-engine's health.GetResourceHealth and util/lua's overrides read from an argocd-cm by
#: Argo CD's settings manager, as the application controller does.
ENGINE = BIN_DIR / "argocd-health"
CM_PATCH = ARGOCD / "argocd-cm-patch.yaml"
HEALTH_TEST = ARGOCD / "health_test.yaml"


def argocd_health(*args: str, objects: list[dict[str, Any]] | None = None,
                  check: bool = True) -> subprocess.CompletedProcess[str]:
    if not ENGINE.exists():
        pytest.fail(f"{ENGINE} not found: run `make tools` (tests/tools/build.sh argocd-health "
                    "builds Argo CD's Lua health engine)")
    res = subprocess.run([str(ENGINE), *args], capture_output=True, text=True, timeout=60,
                         input=json.dumps(objects if objects is not None else []))
    if check and res.returncode != 0:
        raise AssertionError(f"argocd-health {' '.join(args)} failed ({res.returncode}):\n"
                             f"{res.stdout}\n{res.stderr}")
    return res


def engine(objects: list[dict[str, Any]], *args: str) -> list[tuple[str, str]]:
    """(status, message) of each object by Argo CD's engine; the checks from argocd-cm-patch.yaml
    unless `args` says otherwise."""
    out = argocd_health(*(args or ("--argocd-cm", str(CM_PATCH))), objects=objects).stdout
    results = json.loads(out)
    assert len(results) == len(objects), out
    return [(r["status"], r["message"]) for r in results]


def _samples() -> list[tuple[str, dict[str, Any], tuple[str, str]]]:
    return ([(f"MLTask {p}", *mltask_sample(p)) for p in PHASES]
            + [(f"Pipeline {p}", *pipeline_sample(p)) for p in PHASES])


# ----------------------------------------------------------------- every state, both kinds


def test_every_state_of_both_kinds_from_the_argocd_cm_patch() -> None:
    samples = _samples()
    got = engine([obj for _, obj, _ in samples])
    wrong = {name: (result, expected)
             for (name, _, expected), result in zip(samples, got, strict=True)
             if result != expected}
    assert not wrong, f"Argo CD's engine disagrees (got, expected): {wrong}"


def test_the_script_under_each_kinds_argocd_cm_key() -> None:
    # The same script put under resource.customizations.health.mltask.dev_<Kind> by the tool,
    # rather than read from the generated ConfigMap: the same results.
    samples = _samples()
    got = engine([obj for _, obj, _ in samples], "--script", str(MLTASK_LUA),
                  "--group", "mltask.dev", "--kind", "MLTask,Pipeline")
    assert got == [expected for _, _, expected in samples]


#: Objects off the happy path: Argo CD's gopher-lua (Lua 5.1, restricted libraries, objects
#: decoded by apimachinery) must give what lupa gives.
EDGE_CASES: dict[str, dict[str, Any]] = {
    "bare object": {"apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
                    "metadata": {"name": "bare"}},
    "kopf bookkeeping only": mltask({"kopf": {"progress": {}}}),
    "pipeline progress only": pipeline({"progress": "0/3"}),
    "status not a table": mltask("completed"),  # type: ignore[arg-type]
    "status word not a string": mltask({"status": 7, "message": "x"}),
    "generation ahead": mltask({"status": "completed", "executeStep": "done",
                                "message": "Completed", "observedGeneration": 2}, generation=3),
    "large generation ahead": pipeline({"status": "running", "progress": "1/3",
                                        "observedGeneration": 2**40}, generation=2**40 + 1),
    "generation caught up": pipeline({"status": "running", "progress": "1/3",
                                      "message": "Running: train", "observedGeneration": 5},
                                     generation=5),
    "observedGeneration as a string": mltask({"status": "running", "observedGeneration": "0"},
                                             generation=2),
    "no generation": mltask({"status": "failed", "executeStep": "upload", "message": "boom",
                             "observedGeneration": 1}, generation=None),
    "no observedGeneration": mltask({"status": "failed", "executeStep": "upload",
                                     "message": "boom"}, generation=3),
    "no message": mltask({"status": "failed", "executeStep": "run_task",
                          "observedGeneration": 1}),
    "empty message": mltask({"status": "running", "message": "", "observedGeneration": 1}),
    "odd types": mltask({"status": "running", "executeStep": {"not": "a string"},
                         "message": 42}),
    "message with unicode and quotes": mltask({"status": "failed", "executeStep": "run_task",
                                               "message": 'exit 1: "naïve" ✗\nsecond line'}),
    "unknown state": mltask({"status": "exploded", "executeStep": "run_task", "message": "?"}),
    "pipeline with mltask fields": pipeline({"status": "running", "executeStep": "run_task",
                                             "message": "Running: train"}),
    "mltask with pipeline fields": mltask({"status": "running", "progress": "2/3",
                                           "message": "Running run_task"}),
    "pipeline without progress": pipeline({"status": "completed",
                                           "message": "All 3 tasks completed"}),
    "null fields": mltask({"status": "stopped", "executeStep": None, "message": None,
                           "conditions": []}),
}


def test_edge_cases_agree_with_lupa() -> None:
    objects = list(EDGE_CASES.values())
    got = engine(objects)
    lupa = [run_check(MLTASK_LUA, obj) for obj in objects]
    wrong = {name: (argocd, ours) for name, argocd, ours in zip(EDGE_CASES, got, lupa, strict=True)
             if argocd != ours}
    assert not wrong, f"Argo CD's engine (first) and lupa (second) disagree: {wrong}"


def test_a_resource_being_deleted_is_pending_deletion_whatever_the_check_says() -> None:
    # Argo CD answers this itself, before any Lua (gitops-engine's GetResourceHealth): an
    # MLTask held by the operator's finalizer shows Progressing until it is gone.
    obj, _ = mltask_sample("completed")
    obj["metadata"] |= {"deletionTimestamp": "2025-01-01T00:00:00Z",
                        "finalizers": ["mltask.dev/cleanup"]}
    assert engine([obj]) == [("Progressing", "Pending deletion")]


# --------------------------------------------------------------- Argo CD-format testdata


def _health_tests() -> list[dict[str, Any]]:
    return yaml.safe_load(HEALTH_TEST.read_text())["tests"]


def test_health_test_yaml_passes_in_argocds_engine() -> None:
    res = argocd_health("--argocd-cm", str(CM_PATCH), "--test", str(HEALTH_TEST))
    lines = res.stdout.splitlines()
    assert len([line for line in lines if line.startswith("PASS ")]) == len(_health_tests())
    assert lines[-1] == f"ok {HEALTH_TEST}: {len(_health_tests())} tests"


def test_health_test_yaml_passes_in_lupa() -> None:
    for test in _health_tests():
        obj = yaml.safe_load((ARGOCD / test["inputPath"]).read_text())
        expected = (test["healthStatus"]["status"], test["healthStatus"]["message"])
        assert run_check(MLTASK_LUA, obj) == expected, test["inputPath"]


@pytest.mark.parametrize("kind", ["mltask", "pipeline"])
def test_testdata_holds_every_state_as_the_samples(kind: str) -> None:
    sample = mltask_sample if kind == "mltask" else pipeline_sample
    expected_by_path = {t["inputPath"]: (t["healthStatus"]["status"], t["healthStatus"]["message"])
                        for t in _health_tests()}
    for phase in PHASES:
        path = f"testdata/{kind}-{phase}.yaml"
        obj, expected = sample(phase)
        assert (ARGOCD / path).exists(), f"manifests/argocd/{path} missing: add it (the object " \
            f"of test_argocd_health's {kind}_sample) and its entry in health_test.yaml"
        assert yaml.safe_load((ARGOCD / path).read_text()) == obj, \
            f"manifests/argocd/{path} is not {kind}_sample({phase!r}):\n" + yaml.safe_dump(obj)
        assert expected_by_path.get(path) == expected, f"health_test.yaml: {path}"
    on_disk = {p.name for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert on_disk == {Path(p).name for p in expected_by_path}, "every testdata file is tested"


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    shutil.copytree(ARGOCD / "testdata", tmp_path / "testdata")
    tests = _health_tests()
    tests[0]["healthStatus"]["status"] = "Healthy"
    (tmp_path / "health_test.yaml").write_text(yaml.safe_dump({"tests": tests}))
    res = argocd_health("--argocd-cm", str(CM_PATCH), "--test",
                        str(tmp_path / "health_test.yaml"), check=False)
    assert res.returncode == 1, res
    assert f"FAIL {tests[0]['inputPath']}: got Progressing" in res.stdout
    assert f"1 of {len(tests)} tests failed" in res.stderr


# ------------------------------------------------------- what Argo CD refuses, and says so


def test_the_string_library_is_not_there(tmp_path: Path) -> None:
    # Argo CD opens only base, table, package and a safe os for argocd-cm checks.
    script = tmp_path / "health.lua"
    script.write_text('return {status = "Healthy", message = string.upper("x")}\n')
    res = argocd_health("--script", str(script), "--group", "mltask.dev", "--kind", "MLTask",
                        objects=[mltask(None)], check=False)
    assert res.returncode == 1, res
    assert "object 0 (MLTask ml/train)" in res.stderr
    assert "attempt to index a non-table object(nil) with key 'upper'" in res.stderr, res.stderr


_LIBRARY_PROBE = """
local out = {}
for _, name in ipairs({"string", "math", "io", "os", "debug", "coroutine", "utf8", "table",
                       "package", "require", "tostring", "tonumber", "type", "pairs", "ipairs",
                       "next", "select", "unpack", "pcall", "error"}) do
  table.insert(out, name .. "=" .. type(_G[name]))
end
table.insert(out, "require('os')=" .. type(require("os").time) .. "," .. type(require("os").date))
table.insert(out, _VERSION)
return {status = "Healthy", message = table.concat(out, " ")}
"""


def test_what_an_argocd_cm_check_can_use(tmp_path: Path) -> None:
    # What the pinned Argo CD gives a check from argocd-cm (useOpenLibs unset): Lua 5.1 with the
    # base, table and package libraries only. Note: no global `os` at all (util/lua's
    # OpenSafeOs registers time and date as a module, not the global), only require("os").
    script = tmp_path / "probe.lua"
    script.write_text(_LIBRARY_PROBE)
    [(status, message)] = engine([mltask(None)], "--script", str(script), "--group",
                                 "mltask.dev", "--kind", "MLTask")
    assert (status, message.split()) == ("Healthy", [
        "string=nil", "math=nil", "io=nil", "os=nil", "debug=nil", "coroutine=nil", "utf8=nil",
        "table=table", "package=table", "require=function", "tostring=function",
        "tonumber=function", "type=function", "pairs=function", "ipairs=function",
        "next=function", "select=function", "unpack=function", "pcall=function",
        "error=function", "require('os')=function,function", "Lua", "5.1"])


def test_a_kind_without_a_check_is_an_error() -> None:
    other = {"apiVersion": "mltask.dev/v1alpha1", "kind": "Other", "metadata": {"name": "x"}}
    res = argocd_health("--argocd-cm", str(CM_PATCH), objects=[other], check=False)
    assert res.returncode == 1, res
    assert "resource.customizations.health.mltask.dev_Other" in res.stderr


def test_argocd_ignores_a_configmap_not_labelled_part_of_argocd(tmp_path: Path) -> None:
    cm = yaml.safe_load(CM_PATCH.read_text())
    del cm["metadata"]["labels"]["app.kubernetes.io/part-of"]
    unlabelled = tmp_path / "argocd-cm.yaml"
    unlabelled.write_text(yaml.safe_dump(cm))
    obj, _ = mltask_sample("running")
    res = argocd_health("--argocd-cm", str(unlabelled), objects=[obj], check=False)
    assert res.returncode == 1, res
    assert 'configmap "argocd-cm" not found' in res.stderr, res.stderr
    assert "labelled app.kubernetes.io/part-of=argocd" in res.stderr
