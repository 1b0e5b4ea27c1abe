"""Operator configuration: every variable is validated at start, with a message naming it."""

from __future__ import annotations

import datetime

import pytest

from mltask_operator.leader import may_hold
from mltask_operator.settings import ConfigError, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.namespaces, s.resync_seconds, s.log_level, s.leader_election.enabled) == (
        [], 60, "INFO", False)
    assert s.run_defaults.gpu_resource_name == "nvidia.com/gpu"


def test_full_configuration() -> None:
    s = Settings.from_env({
        "MLTASK_NAMESPACES": "ml-a, ml-b", "MLTASK_LOG_LEVEL": "debug",
        "MLTASK_LEADER_ELECTION": "true", "POD_NAMESPACE": "mltask-system",
        "MLTASK_RUN_NODE_SELECTOR": '{"pool": "a100"}',
        "MLTASK_RUN_TOLERATIONS": '[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
        "MLTASK_RUN_RUNTIME_CLASS_NAME": "nvidia", "MLTASK_GPU_RESOURCE_NAME": "amd.com/gpu"})
    assert s.namespaces == ["ml-a", "ml-b"] and s.log_level == "DEBUG"
    assert s.leader_election.enabled and s.leader_election.namespace == "mltask-system"
    assert s.run_defaults.node_selector == {"pool": "a100"}
    assert s.run_defaults.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert s.run_defaults.gpu_resource_name == "amd.com/gpu"


@pytest.mark.parametrize(("env", "words"), [
    ({"MLTASK_RESYNC_SECONDS": "soon"}, "MLTASK_RESYNC_SECONDS='soon' is not an integer"),
    ({"MLTASK_RESYNC_SECONDS": "1"}, "MLTASK_RESYNC_SECONDS=1 must be >= 5"),
    ({"MLTASK_WATCH_SERVER_TIMEOUT": "300", "MLTASK_WATCH_CLIENT_TIMEOUT": "200"},
     "MLTASK_WATCH_CLIENT_TIMEOUT=200 must exceed"),
    ({"MLTASK_LOG_LEVEL": "loud"}, "MLTASK_LOG_LEVEL='loud' must be one of"),
    ({"MLTASK_LEADER_ELECTION": "perhaps"}, "MLTASK_LEADER_ELECTION='perhaps' must be true"),
    ({"MLTASK_RUN_NODE_SELECTOR": "[1]"}, "MLTASK_RUN_NODE_SELECTOR must be a JSON object"),
    ({"MLTASK_RUN_NODE_SELECTOR": "{"}, "MLTASK_RUN_NODE_SELECTOR is not valid JSON"),
    ({"MLTASK_RUN_NODE_SELECTOR": '{"a": 1}'}, "MLTASK_RUN_NODE_SELECTOR values must be"),
    ({"MLTASK_RUN_TOLERATIONS": '[{"operator": "Maybe"}]'},
     "MLTASK_RUN_TOLERATIONS[0].operator"),
    ({"MLTASK_GPU_RESOURCE_NAME": "gpu"}, "MLTASK_GPU_RESOURCE_NAME='gpu' must be a vendor"),
    ({"MLTASK_LEADER_ELECTION_LEASE_SECONDS": "2"}, "MLTASK_LEADER_ELECTION_LEASE_SECONDS=2"),
])
def test_bad_values_are_refused_naming_the_variable(env: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert words in str(err.value)


def test_operator_exits_2_on_bad_configuration(monkeypatch, capsys) -> None:
    from mltask_operator.__main__ import main

    monkeypatch.setenv("MLTASK_WORKERS", "0")
    assert main([]) == 2
    assert "invalid configuration: MLTASK_WORKERS=0 must be >= 1" in capsys.readouterr().err


T0 = datetime.datetime(2026, 11, 23, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("holder", "age", "expected"), [
    (None, 0, True), ("me", 0, True), ("me", 100, True),
    ("other", 5, False), ("other", 15, False), ("other", 16, True),
])
def test_may_hold(holder: str | None, age: int, expected: bool) -> None:
    renewed = T0 - datetime.timedelta(seconds=age)
    assert may_hold(holder, renewed, 15, "me", T0) is expected
