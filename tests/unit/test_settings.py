"""Operator configuration: every variable is validated at start, with a message naming it."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mltask_operator import settings as settings_module
from mltask_operator.leader import may_hold
from mltask_operator.settings import ConfigError, Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.namespaces, s.resync_seconds, s.log_level, s.leader_election.enabled) == (
        [], 60, "INFO", False)
    assert s.run_defaults.gpu_resource_name == "nvidia.com/gpu"


def test_transfer_steps_default_to_the_operators_own_image() -> None:
    s = Settings.from_env({})
    assert s.transfer.image == f"localhost/mltask-operator:{settings_module.__version__}"
    assert s.transfer.image_pull_policy == "IfNotPresent"
    assert s.transfer.resources["limits"] == {"memory": "1Gi"}
    s = Settings.from_env({"MLTASK_TRANSFER_IMAGE": "localhost/mltask-operator:0.1.0",
                           "MLTASK_TRANSFER_IMAGE_PULL_POLICY": "Never",
                           "MLTASK_TRANSFER_RESOURCES": '{"limits": {"memory": 536870912}}'})
    assert (s.transfer.image, s.transfer.image_pull_policy) == (
        "localhost/mltask-operator:0.1.0", "Never")
    assert s.transfer.resources == {"limits": {"memory": "536870912"}}


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


@dataclass(frozen=True)
class Case:
    name: str
    env: dict[str, str]
    error: str  # the message must contain this, starting with the variable's name


BAD = [
    Case("transfer-image-space", {"MLTASK_TRANSFER_IMAGE": "ghcr.io/x/op :1"},
         "MLTASK_TRANSFER_IMAGE='ghcr.io/x/op :1' must be an image reference without spaces"),
    Case("transfer-pull-policy", {"MLTASK_TRANSFER_IMAGE_PULL_POLICY": "Sometimes"},
         "MLTASK_TRANSFER_IMAGE_PULL_POLICY='Sometimes' must be one of"),
    Case("transfer-resources-json", {"MLTASK_TRANSFER_RESOURCES": "{"},
         "MLTASK_TRANSFER_RESOURCES is not valid JSON"),
    Case("transfer-resources-shape", {"MLTASK_TRANSFER_RESOURCES": '{"cpu": "1"}'},
         "MLTASK_TRANSFER_RESOURCES must look like"),
    Case("resync-not-int", {"MLTASK_RESYNC_SECONDS": "soon"},
         "MLTASK_RESYNC_SECONDS='soon' is not an integer"),
    Case("resync-too-small", {"MLTASK_RESYNC_SECONDS": "1"},
         "MLTASK_RESYNC_SECONDS=1 must be >= 5"),
    Case("client-timeout-not-above-server",
         {"MLTASK_WATCH_SERVER_TIMEOUT": "300", "MLTASK_WATCH_CLIENT_TIMEOUT": "200"},
         "MLTASK_WATCH_CLIENT_TIMEOUT=200 must exceed"),
    Case("log-level", {"MLTASK_LOG_LEVEL": "loud"}, "MLTASK_LOG_LEVEL='loud' must be one of"),
    Case("leader-election-bool", {"MLTASK_LEADER_ELECTION": "perhaps"},
         "MLTASK_LEADER_ELECTION='perhaps' must be true"),
    Case("node-selector-list", {"MLTASK_RUN_NODE_SELECTOR": "[1]"},
         "MLTASK_RUN_NODE_SELECTOR must be a JSON object"),
    Case("node-selector-json", {"MLTASK_RUN_NODE_SELECTOR": "{"},
         "MLTASK_RUN_NODE_SELECTOR is not valid JSON"),
    Case("node-selector-values", {"MLTASK_RUN_NODE_SELECTOR": '{"a": 1}'},
         "MLTASK_RUN_NODE_SELECTOR values must be"),
    Case("toleration-operator", {"MLTASK_RUN_TOLERATIONS": '[{"operator": "Maybe"}]'},
         "MLTASK_RUN_TOLERATIONS[0].operator"),
    Case("lease-seconds", {"MLTASK_LEADER_ELECTION_LEASE_SECONDS": "2"},
         "MLTASK_LEADER_ELECTION_LEASE_SECONDS=2"),
    # ports: 1-65535; 0 only disables metrics; metrics and health apart
    Case("metrics-port-too-big", {"MLTASK_METRICS_PORT": "65536"},
         "MLTASK_METRICS_PORT=65536 must be <= 65535"),
    Case("metrics-port-negative", {"MLTASK_METRICS_PORT": "-1"},
         "MLTASK_METRICS_PORT=-1 must be >= 0"),
    Case("health-port-zero", {"MLTASK_HEALTH_PORT": "0"},
         "MLTASK_HEALTH_PORT=0 must be a port from 1 to 65535"),
    Case("health-port-too-big", {"MLTASK_HEALTH_PORT": "70000"},
         "MLTASK_HEALTH_PORT=70000 must be <= 65535"),
    Case("metrics-port-is-health-port", {"MLTASK_METRICS_PORT": "9000",
                                         "MLTASK_HEALTH_PORT": "9000"},
         "MLTASK_METRICS_PORT=9000 must differ from MLTASK_HEALTH_PORT=9000"),
    Case("metrics-port-is-default-health-port", {"MLTASK_METRICS_PORT": "8081"},
         "MLTASK_METRICS_PORT=8081 must differ from MLTASK_HEALTH_PORT=8081"),
    # namespaces: DNS-1123 labels
    Case("namespace-upper-case", {"MLTASK_NAMESPACES": "ml,Team_A"},
         "MLTASK_NAMESPACES: 'Team_A' is not a valid namespace name"),
    Case("namespace-dot", {"MLTASK_NAMESPACES": "ml.team"},
         "MLTASK_NAMESPACES: 'ml.team' is not a valid namespace name"),
    Case("namespace-too-long", {"MLTASK_NAMESPACES": "a" * 64},
         f"MLTASK_NAMESPACES: '{'a' * 64}' is not a valid namespace name"),
    Case("namespace-trailing-dash", {"MLTASK_NAMESPACES": "ml-"},
         "MLTASK_NAMESPACES: 'ml-' is not"),
    Case("lease-namespace", {"MLTASK_LEADER_ELECTION_NAMESPACE": "Ops"},
         "MLTASK_LEADER_ELECTION_NAMESPACE: 'Ops' is not a valid namespace name"),
    # GPU resource: an extended resource name, domain/name with one slash
    Case("gpu-no-domain", {"MLTASK_GPU_RESOURCE_NAME": "gpu"},
         "MLTASK_GPU_RESOURCE_NAME='gpu' must be an extended resource name"),
    Case("gpu-two-slashes", {"MLTASK_GPU_RESOURCE_NAME": "nvidia.com/gpu/a100"},
         "MLTASK_GPU_RESOURCE_NAME='nvidia.com/gpu/a100' must be an extended resource name"),
    Case("gpu-empty-name", {"MLTASK_GPU_RESOURCE_NAME": "nvidia.com/"},
         "MLTASK_GPU_RESOURCE_NAME='nvidia.com/' must be"),
    Case("gpu-empty-domain", {"MLTASK_GPU_RESOURCE_NAME": "/gpu"},
         "MLTASK_GPU_RESOURCE_NAME='/gpu' must be"),
    Case("gpu-bad-domain", {"MLTASK_GPU_RESOURCE_NAME": "NVIDIA_com/gpu"},
         "MLTASK_GPU_RESOURCE_NAME='NVIDIA_com/gpu' must be"),
    Case("gpu-kubernetes-io", {"MLTASK_GPU_RESOURCE_NAME": "kubernetes.io/gpu"},
         "MLTASK_GPU_RESOURCE_NAME='kubernetes.io/gpu' must be"),
    Case("gpu-space", {"MLTASK_GPU_RESOURCE_NAME": "nvidia.com/a gpu"},
         "MLTASK_GPU_RESOURCE_NAME='nvidia.com/a gpu' must be"),
    # runtime class and Lease: DNS-1123 subdomains
    Case("runtime-class-upper", {"MLTASK_RUN_RUNTIME_CLASS_NAME": "NVIDIA"},
         "MLTASK_RUN_RUNTIME_CLASS_NAME='NVIDIA' is not a valid object name"),
    Case("runtime-class-underscore", {"MLTASK_RUN_RUNTIME_CLASS_NAME": "nvidia_cdi"},
         "MLTASK_RUN_RUNTIME_CLASS_NAME='nvidia_cdi' is not a valid object name"),
    Case("lease-name-slash", {"MLTASK_LEADER_ELECTION_LEASE_NAME": "mltask/operator"},
         "MLTASK_LEADER_ELECTION_LEASE_NAME='mltask/operator' is not a valid object name"),
    Case("lease-name-too-long", {"MLTASK_LEADER_ELECTION_LEASE_NAME": "a" * 254},
         "MLTASK_LEADER_ELECTION_LEASE_NAME="),
]


@pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
def test_bad_values_are_refused_naming_the_variable(case: Case) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(case.env)
    message = str(err.value)
    assert case.error in message
    variable = re.match(r"MLTASK_[A-Z_]+", message)
    assert variable and variable.group() in case.env, "the message opens with the variable"


@dataclass(frozen=True)
class Good:
    name: str
    env: dict[str, str]
    check: Callable[[Settings], object]


GOOD = [
    Good("metrics-disabled", {"MLTASK_METRICS_PORT": "0"}, lambda s: s.metrics_port == 0),
    Good("highest-ports", {"MLTASK_METRICS_PORT": "65535", "MLTASK_HEALTH_PORT": "65534"},
         lambda s: (s.metrics_port, s.health_port) == (65535, 65534)),
    Good("lowest-port", {"MLTASK_HEALTH_PORT": "1"}, lambda s: s.health_port == 1),
    Good("namespace-63", {"MLTASK_NAMESPACES": "a" * 63}, lambda s: s.namespaces == ["a" * 63]),
    Good("namespaces-spaces-and-empty", {"MLTASK_NAMESPACES": " ml-a , ,ml-b,"},
         lambda s: s.namespaces == ["ml-a", "ml-b"]),
    Good("gpu-amd", {"MLTASK_GPU_RESOURCE_NAME": "amd.com/gpu"},
         lambda s: s.run_defaults.gpu_resource_name == "amd.com/gpu"),
    Good("gpu-mig", {"MLTASK_GPU_RESOURCE_NAME": "nvidia.com/mig-1g.10gb"},
         lambda s: s.run_defaults.gpu_resource_name == "nvidia.com/mig-1g.10gb"),
    Good("runtime-class-dots", {"MLTASK_RUN_RUNTIME_CLASS_NAME": "nvidia.cdi"},
         lambda s: s.run_defaults.runtime_class_name == "nvidia.cdi"),
    Good("lease-name-dots", {"MLTASK_LEADER_ELECTION_LEASE_NAME": "mltask.operator"},
         lambda s: s.leader_election.lease_name == "mltask.operator"),
    Good("lease-namespace-from-pod", {"POD_NAMESPACE": "ops"},
         lambda s: s.leader_election.namespace == "ops"),
    Good("lease-namespace-explicit-wins",
         {"POD_NAMESPACE": "ops", "MLTASK_LEADER_ELECTION_NAMESPACE": "leases"},
         lambda s: s.leader_election.namespace == "leases"),
]


@pytest.mark.parametrize("case", GOOD, ids=[c.name for c in GOOD])
def test_good_values_are_accepted(case: Good) -> None:
    assert case.check(Settings.from_env(case.env))


def test_lease_namespace_falls_back_to_the_service_account_mount(monkeypatch, tmp_path) -> None:
    mounted = tmp_path / "namespace"
    mounted.write_text("from-mount")
    monkeypatch.setattr(settings_module, "SERVICE_ACCOUNT_NAMESPACE", mounted)
    assert Settings.from_env({}).leader_election.namespace == "from-mount"
    assert Settings.from_env({"POD_NAMESPACE": "ops"}).leader_election.namespace == "ops"
    monkeypatch.setattr(settings_module, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    assert Settings.from_env({}).leader_election.namespace == "default"


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
