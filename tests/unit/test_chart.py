"""The Helm chart rendered with the pinned helm, no cluster: lint, values refused or accepted by
the schema and the templates' checks, RBAC without what the operator never does, upgrade
strategy, environment and NOTES."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from harness.chart import (
    CHART,
    GPU_VALUES,
    KUBE_VERSION,
    RELEASE,
    RELEASE_NS,
    find,
    helm,
    render,
    render_error,
    rules,
)


@pytest.mark.parametrize("values", [[], ["-f", str(GPU_VALUES)]], ids=["default", "gpu-pool"])
def test_helm_lint(values: list[str]) -> None:
    out = helm("lint", str(CHART), "--kube-version", KUBE_VERSION, *values).stdout
    assert "0 chart(s) failed" in out


def test_helm_lint_refuses_an_unknown_key() -> None:
    res = helm("lint", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicaz=2",
               check=False)
    assert res.returncode != 0 and "additional properties 'replicaz' not allowed" in res.stdout, \
        res.stdout


BAD = [
    # (id, helm args, words the error must contain: the value's path or the template's message)
    ("replicas-string", ["--set", "replicas=two"], "at '/replicas': got string, want integer"),
    ("replicas-negative", ["--set", "replicas=-1"], "/replicas"),
    ("memory-word", ["--set", "resources.requests.memory=lots"], "/resources/requests/memory"),
    ("memory-negative", ["--set", "resources.limits.memory=-1Gi"], "/resources/limits/memory"),
    ("cpu-word", ["--set", "resources.requests.cpu=lots"], "/resources/requests/cpu"),
    ("cpu-unit", ["--set", "resources.requests.cpu=100mcpu"], "/resources/requests/cpu"),
    ("cpu-negative-number", ["--set-json", "resources.requests.cpu=-1"],
     "/resources/requests/cpu"),
    ("storage-word", ["--set", "resources.limits.ephemeral-storage=big"],
     "/resources/limits/ephemeral-storage"),
    ("namespace-name", ["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    ("unknown-key", ["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
    ("log-level", ["--set", "logLevel=loud"], "/logLevel"),
    ("gpu-no-domain", ["--set", "runStepDefaults.gpuResourceName=gpu"],
     "/runStepDefaults/gpuResourceName"),
    ("gpu-empty", ["--set", "runStepDefaults.gpuResourceName="],
     "/runStepDefaults/gpuResourceName"),
    ("gpu-two-slashes", ["--set", "runStepDefaults.gpuResourceName=nvidia.com/gpu/a100"],
     "/runStepDefaults/gpuResourceName"),
    ("runtime-class", ["--set", "runStepDefaults.runtimeClassName=NVIDIA"],
     "/runStepDefaults/runtimeClassName"),
    ("interval-words", ["--set", "metrics.serviceMonitor.interval=15 seconds"],
     "/metrics/serviceMonitor/interval"),
    ("interval-empty", ["--set", "metrics.serviceMonitor.interval="],
     "/metrics/serviceMonitor/interval"),
    ("interval-unit-order", ["--set", "metrics.serviceMonitor.interval=30s1m"],
     "/metrics/serviceMonitor/interval"),
    ("failure-rate-over-one", ["--set", "prometheusRule.alerts.failureRate.threshold=1.5"],
     "/prometheusRule/alerts/failureRate/threshold"),
    ("failure-rate-word", ["--set", "prometheusRule.alerts.failureRate.threshold=high"],
     "/prometheusRule/alerts/failureRate/threshold"),
    ("error-threshold-negative",
     ["--set-json", "prometheusRule.alerts.reconcileErrors.threshold=-1"],
     "/prometheusRule/alerts/reconcileErrors/threshold"),
    ("alert-for-words", ["--set", "prometheusRule.alerts.workflowWait.for=15 minutes"],
     "/prometheusRule/alerts/workflowWait/for"),
    ("alert-window-zero", ["--set", "prometheusRule.alerts.reconcileErrors.window=0"],
     "/prometheusRule/alerts/reconcileErrors/window"),
    ("alert-min-tasks-zero", ["--set", "prometheusRule.alerts.failureRate.minTasks=0"],
     "/prometheusRule/alerts/failureRate/minTasks"),
    ("alert-severity-space", ["--set", "prometheusRule.alerts.noActiveReplica.severity=very bad"],
     "/prometheusRule/alerts/noActiveReplica/severity"),
    ("alert-unknown", ["--set", "prometheusRule.alerts.diskFull.for=1m"],
     "additional properties 'diskFull' not allowed"),
    ("dashboard-label-key", ["--set", "grafana.dashboard.labelKey=grafana dashboard"],
     "/grafana/dashboard/labelKey"),
    ("dashboard-label-value", ["--set", "grafana.dashboard.labelValue=-1-"],
     "/grafana/dashboard/labelValue"),
    ("dashboard-namespace", ["--set", "grafana.dashboard.namespace=Monitoring"],
     "/grafana/dashboard/namespace"),
    ("replicas-without-election", ["--set", "leaderElection.enabled=false"],
     "replicas > 1 needs leaderElection.enabled"),
    ("client-timeout", ["--set", "watch.clientTimeout=100"], "watch.clientTimeout must exceed"),
    ("metrics-port-is-health-port", ["--set", "metrics.port=8081"],
     "metrics.port and healthPort must differ (both 8081)"),
    ("health-port-is-metrics-port", ["--set", "healthPort=9000", "--set", "metrics.port=9000"],
     "metrics.port and healthPort must differ (both 9000)"),
    ("service-monitor-without-service", ["--set", "metrics.serviceMonitor.enabled=true",
                                         "--set", "metrics.service.enabled=false"],
     "metrics.serviceMonitor.enabled needs metrics.service.enabled"),
    ("no-service-account-and-no-name", ["--set", "serviceAccount.create=false"],
     "serviceAccount.create=false needs serviceAccount.name"),
]


@pytest.mark.parametrize(("args", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_values_are_refused_naming_them(args: list[str], words: str) -> None:
    error = render_error(*args)
    assert words in error, error


@pytest.mark.parametrize("interval", ["30s", "1m30s", "1h", "2h45m", "500ms", "1d", "0"])
def test_prometheus_durations_are_accepted(interval: str) -> None:
    docs = render(RELEASE_NS, "--set", "metrics.serviceMonitor.enabled=true",
                  "--set-string", f"metrics.serviceMonitor.interval={interval}")
    assert find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["interval"] == interval


@pytest.mark.parametrize("quantity", ["100m", "0.5", "2", "1.5Gi", "512Mi", "1e3", "+1"])
def test_quantities_are_accepted(quantity: str) -> None:
    docs = render(RELEASE_NS, "--set-string", f"resources.requests.cpu={quantity}",
                  "--set-json", "resources.limits.cpu=2")
    res = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert (res["requests"]["cpu"], res["limits"]["cpu"]) == (quantity, 2)


@pytest.mark.parametrize("threshold", ["0.3", "0", "1", ".5"])
def test_decimal_thresholds_from_helm_set_are_accepted(threshold: str) -> None:
    """`helm --set x=0.3` gives a string (only integers become numbers): still a threshold."""
    docs = render(RELEASE_NS, "--set", "prometheusRule.enabled=true",
                  "--set", f"prometheusRule.alerts.failureRate.threshold={threshold}")
    rule = find(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]
    assert f") > {threshold}\n" in rule["expr"]


def test_service_monitor_only_when_enabled() -> None:
    def kinds(*args: str) -> list[str]:
        return [d["kind"] for d in render(RELEASE_NS, *args)]

    assert "ServiceMonitor" not in kinds()
    assert kinds("--set", "metrics.serviceMonitor.enabled=true").count("ServiceMonitor") == 1


def test_an_existing_service_account_is_bound_instead_of_default() -> None:
    docs = render(RELEASE_NS, "--set", "serviceAccount.create=false",
                  "--set", "serviceAccount.name=ops-operator")
    assert not [d for d in docs if d["kind"] == "ServiceAccount"]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops-operator"
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert bindings and all(b["subjects"] == [{"kind": "ServiceAccount", "name": "ops-operator",
                                               "namespace": RELEASE_NS}] for b in bindings)


@pytest.mark.parametrize(("args", "strategy"), [
    ([], "RollingUpdate"),
    (["--set", "replicas=1"], "RollingUpdate"),  # a new pod waits for the Lease
    (["--set", "replicas=1", "--set", "leaderElection.enabled=false"], "Recreate"),
], ids=["two-with-election", "one-with-election", "one-without-election"])
def test_upgrade_never_runs_two_active_operators(args: list[str], strategy: str) -> None:
    dep = find(render(RELEASE_NS, *args), "Deployment")
    assert dep["spec"]["strategy"] == {"type": strategy}


def test_lease_namespace_is_the_pods_own() -> None:
    """Not the release namespace written in: kustomize's `namespace:` moves the pod and its
    Role, and the operator must look for the Lease where its Role is."""
    container = find(render(RELEASE_NS), "Deployment")["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "MLTASK_LEADER_ELECTION_NAMESPACE" not in env
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert not [e for e in container["env"] if e.get("value") == RELEASE_NS], \
        "no namespace written into the environment"


# ------------------------------------------------------------------------------------ RBAC

#: What the operator never does: granting it would be an over-grant (see
#: tests/integration/test_install.py for the audit of what a full run does use).
NEVER = [
    ("mltask.dev", "mltasks", "update"), ("mltask.dev", "mltasks", "deletecollection"),
    ("mltask.dev", "pipelines", "create"), ("mltask.dev", "pipelines", "update"),
    ("mltask.dev", "pipelines", "deletecollection"),
    ("mltask.dev", "mltasks/status", "patch"), ("mltask.dev", "mltasks/status", "get"),
    ("mltask.dev", "pipelines/status", "patch"), ("mltask.dev", "pipelines/status", "get"),
    ("", "events", "patch"), ("", "events", "update"),
    ("events.k8s.io", "events", "create"), ("events.k8s.io", "events", "patch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "get"),
    ("argoproj.io", "workflows", "update"), ("mltask.dev", "pipelines", "get"),
    ("", "persistentvolumeclaims", "update"), ("", "secrets", "get"), ("", "pods", "list"),
    ("", "pods", "get"), ("", "pods", "create"), ("", "pods", "patch"),
]


@pytest.mark.parametrize("values", [[], ["-f", str(GPU_VALUES)]], ids=["default", "gpu-pool"])
def test_rbac_grants_nothing_the_operator_never_does(values: list[str]) -> None:
    docs = render(RELEASE_NS, *values)
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    granted = set().union(*(rules(r) for r in roles))
    assert not [n for n in NEVER if n in granted]
    assert not any("*" in part for rule in granted for part in rule), "no wildcards"
    if values:
        assert not [r for r in roles if r["kind"] == "ClusterRole"]
        assert not [g for g in granted if g[1] in ("customresourcedefinitions", "namespaces")], \
            "Kopf's scanning is off when namespaces are listed"
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == len(roles)
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE,
                                  "namespace": RELEASE_NS}]


# ----------------------------------------------------------------------------------- NOTES


def notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it (helm template does not render NOTES, so a copy of
    the chart renders the same text as an object)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + text + "{{- end -}}\n")
    (chart / "templates" / "notes.yaml").write_text(
        'kind: Notes\nmetadata: {name: notes}\ntext: {{ include "test.notes" . | toJson }}\n')
    out = helm("template", RELEASE, str(chart), "--namespace", RELEASE_NS, "--kube-version",
               KUBE_VERSION, "--show-only", "templates/notes.yaml", *args).stdout
    return str(yaml.safe_load(out)["text"])


def test_notes_point_at_the_lease_holder_and_the_crd_upgrade(tmp_path: Path) -> None:
    text = notes(tmp_path)
    assert f"kubectl -n {RELEASE_NS} get lease {RELEASE}\n" in text
    assert "jsonpath='{.spec.holderIdentity}'" in text and "only the Lease holder works" in text
    assert "kubectl apply --server-side -f charts/mltask-operator/crds/" in text
    assert "pod-security.kubernetes.io/enforce=restricted" in text
    single = notes(tmp_path / "single", "--set", "replicas=1",
                   "--set", "leaderElection.enabled=false")
    assert f"logs deploy/{RELEASE}" in single and "get lease" not in single


def test_notes_say_watched_namespaces_must_exist(tmp_path: Path) -> None:
    text = notes(tmp_path, "-f", str(GPU_VALUES))
    assert "Watching: ml-team-a, ml-team-b (these namespaces must exist)" in text


def test_values_file_documents_every_value() -> None:
    """Every leaf of values.yaml has a `# --` comment above its key (or its parent's)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = [i for i, line in enumerate(lines) if line and not line.lstrip().startswith("#")
            and ":" in line and not line.lstrip().startswith("-")]
    for i in keys:
        above = lines[i - 1].strip() if i else ""
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith(
                "# --"):
            j -= 1
        assert above.startswith("#") and lines[j].strip().startswith("# --"), lines[i]
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
