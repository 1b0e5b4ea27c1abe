"""The chart's monitoring on the real API server and against the real operator: the PrometheusRule,
ServiceMonitor and dashboard ConfigMap are accepted (prometheus-operator's CRDs from its Go
module), and every query of the dashboard and expression of the alerts names series the running
operator serves, with the labels it uses. The operator process is scraped after a scripted mix
of tasks (played through with the Argo stand-in) gave every metric family series: a completed
task, one deleted after its TTL, a failed one (a non-zero exit), one whose step was retried, a
Workflow refused by an admission policy, reconciles that raised (a status write refused), and a
Pipeline. `promtool check metrics` lints the scrape."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.chart import RELEASE, RELEASE_NS, find, render
from harness.controlplane import PROMETHEUS_CRDS_DIR, ControlPlaneError, free_port
from harness.monitoring import (
    Scrape,
    analyse,
    dashboard,
    dashboard_queries,
    grafana_to_promql,
    parse_scrape,
    problems,
    promtool,
    rule_exprs,
)
from harness.operator_proc import OperatorProcess
from harness.pipelines import Pipelines, pipeline_example
from harness.policies import denying
from harness.tasks import RESULT, G, P, Tasks, V, example

pytestmark = pytest.mark.integration

MONITORING = ["--set", "metrics.serviceMonitor.enabled=true",
              "--set", "prometheusRule.enabled=true",
              "--set", "grafana.dashboard.enabled=true"]


def apply(control_plane, docs: list[dict[str, Any]], tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return control_plane.kubectl("apply", "--server-side", "--force-conflicts",
                                 "--field-manager=monitoring-test", "-f", str(path)).stdout


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as e:
        if e.status != 409:
            raise


@pytest.fixture(scope="module")
def prometheus_crds(control_plane) -> None:
    """prometheus-operator's ServiceMonitor and PrometheusRule CRDs (from its Go module)."""
    files = [PROMETHEUS_CRDS_DIR / f"monitoring.coreos.com_{p}.yaml"
             for p in ("servicemonitors", "prometheusrules")]
    for f in files:
        assert f.exists(), f"{f} missing: run `make tools` (copies it from the pinned module)"
    control_plane.kubectl("apply", "--server-side", "--field-manager=monitoring-test",
                          *[a for f in files for a in ("-f", str(f))])
    control_plane.wait_established(["servicemonitors.monitoring.coreos.com",
                                    "prometheusrules.monitoring.coreos.com"])


def test_monitoring_objects_are_accepted_by_the_api_server(
        control_plane, api: client.ApiClient, prometheus_crds, tmp_path: Path) -> None:
    """What the chart renders with the ServiceMonitor, the PrometheusRule and the dashboard on
    (the dashboard in another namespace, as for a sidecar that watches only its own) is
    created as rendered; prometheus-operator's schema really checks the rule."""
    ensure_namespace(api, RELEASE_NS)
    ensure_namespace(api, "monitoring")
    docs = [d for d in render(RELEASE_NS, *MONITORING,
                              "--set", "grafana.dashboard.namespace=monitoring",
                              "--set", "grafana.dashboard.annotations.grafana_folder=MLTask",
                              "--set", "prometheusRule.labels.release=prometheus")
            if d["kind"] in ("ServiceMonitor", "Service", "PrometheusRule", "ConfigMap")]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "PrometheusRule", "Service",
                                               "ServiceMonitor"]
    apply(control_plane, docs, tmp_path, "monitoring")
    objects = client.CustomObjectsApi(api)
    rule = objects.get_namespaced_custom_object("monitoring.coreos.com", "v1", RELEASE_NS,
                                                "prometheusrules", RELEASE)
    assert rule["spec"] == find(docs, "PrometheusRule")["spec"], "stored as rendered, none pruned"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    sm = objects.get_namespaced_custom_object("monitoring.coreos.com", "v1", RELEASE_NS,
                                              "servicemonitors", RELEASE)
    assert sm["spec"]["endpoints"][0]["honorLabels"] is True
    cm = client.CoreV1Api(api).read_namespaced_config_map(f"{RELEASE}-dashboard", "monitoring")
    assert cm.metadata.labels["grafana_dashboard"] == "1"
    assert cm.metadata.annotations == {"grafana_folder": "MLTask"}
    assert json.loads(cm.data["mltask-operator.json"]) == dashboard()
    # the CRD's schema really validates: a `for` that is not a duration is refused
    bad = find(docs, "PrometheusRule")
    bad["spec"]["groups"][0]["rules"][0]["for"] = "15 minutes"
    with pytest.raises(ControlPlaneError, match=r"spec.groups\[0\].rules\[0\].for"):
        apply(control_plane, [bad], tmp_path, "bad-prometheusrule")


# ------------------------------------------------------------------- the operator's /metrics

#: The operator's metric families (operator/mltask_operator/metrics.py): type and label names.
FAMILIES = [
    ("mltask_status_transitions_total", "counter", {"status"}),
    ("mltask_workflows_created_total", "counter", {"action"}),
    ("mltask_workflows_refused_total", "counter", {"reason"}),
    ("mltask_reconcile_errors_total", "counter", {"kind"}),
    ("mltask_pipeline_status_transitions_total", "counter", {"status"}),
    ("mltask_pipeline_tasks_created_total", "counter", set()),
    ("mltask_step_retries_total", "counter", {"type", "step", "cause"}),
    ("mltask_ttl_deleted_total", "counter", {"kind"}),
    ("mltask_cache_lookups_total", "counter", {"result"}),
    ("mltask_api_requests_total", "counter", {"verb", "resource", "code"}),
    ("mltask_reconcile_duration_seconds", "histogram", {"kind"}),
    ("mltask_task_duration_seconds", "histogram", {"type", "status"}),
    ("mltask_step_duration_seconds", "histogram", {"type", "step"}),
    ("mltask_workflow_wait_seconds", "histogram", {"type"}),
    ("mltask_operator_leader", "gauge", set()),
    ("mltask_workqueue_depth", "gauge", set()),
    ("mltask_tasks", "gauge", {"namespace", "type", "status"}),
    ("mltask_pipelines", "gauge", {"namespace", "status"}),
    ("mltask_work_volume_bytes", "gauge", {"namespace"}),
]

#: Label values the operator documents, where they are a closed set.
STATUSES = {"init", "running", "completed", "failed", "stopping", "stopped", "retry"}
VALUES = [
    ("mltask_status_transitions_total", "status", STATUSES),
    ("mltask_tasks", "status", STATUSES),
    ("mltask_task_duration_seconds_count", "status", {"completed", "failed", "stopped"}),
    ("mltask_step_retries_total", "cause", {"infrastructure", "exit_code"}),
    ("mltask_step_retries_total", "step", {"download", "run", "upload"}),
    ("mltask_step_duration_seconds_count", "step", {"download", "run", "upload"}),
    ("mltask_reconcile_errors_total", "kind", {"MLTask", "Pipeline"}),
    ("mltask_reconcile_duration_seconds_count", "kind", {"MLTask", "Pipeline"}),
    ("mltask_ttl_deleted_total", "kind", {"MLTask", "Pipeline"}),
    ("mltask_workflows_refused_total", "reason",
     {"WorkflowRejected", "VolumeRejected", "NameTaken", "PolicyViolation"}),
]

#: What the scripted mix makes sure of, beyond every family having series: (sample, labels
#: that one of its series has).
EXPECTED = [
    ("mltask_task_duration_seconds_count", {"type": "training", "status": "completed"}),
    ("mltask_task_duration_seconds_count", {"type": "training", "status": "failed"}),
    ("mltask_step_retries_total", {"type": "training", "step": "run",
                                   "cause": "infrastructure"}),
    ("mltask_workflows_refused_total", {"reason": "WorkflowRejected"}),
    ("mltask_reconcile_errors_total", {"kind": "MLTask"}),
    ("mltask_ttl_deleted_total", {"kind": "MLTask"}),
    ("mltask_tasks", {"type": "training", "status": "running"}),
    ("mltask_tasks", {"type": "preprocessing", "status": "init"}),
    ("mltask_pipelines", {"status": "running"}),
    ("mltask_operator_leader", {}),
]


GI = 2**30
#: The values the scripted mix leaves (its operator watches only the mix's namespace):
#: (sample, labels, value). The series of a closed label set start at 0, so a series that
#: exists proves nothing: these values do.
VALUES_AFTER_MIX = [
    # ended: done and expires completed, fails (exit 2) and refused (its Workflow) failed
    ("mltask_task_duration_seconds_count", {"type": "training", "status": "completed"}, 1),
    ("mltask_task_duration_seconds_count", {"type": "preprocessing", "status": "completed"}, 1),
    ("mltask_task_duration_seconds_count", {"type": "training", "status": "failed"}, 1),
    ("mltask_task_duration_seconds_count", {"type": "preprocessing", "status": "failed"}, 1),
    ("mltask_task_duration_seconds_count", {"status": "stopped"}, 0),
    # retried's run pod lost once (infrastructure); fails' exit 2 is not retried (limit 0)
    ("mltask_step_retries_total", {"type": "training", "step": "run",
                                   "cause": "infrastructure"}, 1),
    ("mltask_step_retries_total", {"cause": "exit_code"}, 0),
    ("mltask_workflows_refused_total", {"reason": "WorkflowRejected"}, 1),
    ("mltask_workflows_refused_total", {"reason": "VolumeRejected"}, 0),
    ("mltask_ttl_deleted_total", {"kind": "MLTask"}, 1),
    # what exists: blocked (init), refused and fails (failed), done (completed), retried and
    # the pipeline's first task (running); expires is gone
    ("mltask_tasks", {"type": "preprocessing", "status": "init"}, 1),
    ("mltask_tasks", {"type": "preprocessing", "status": "failed"}, 1),
    ("mltask_tasks", {"type": "preprocessing", "status": "running"}, 1),
    ("mltask_tasks", {"type": "training", "status": "completed"}, 1),
    ("mltask_tasks", {"type": "training", "status": "failed"}, 1),
    ("mltask_tasks", {"type": "training", "status": "running"}, 1),
    ("mltask_tasks", {}, 6),
    ("mltask_pipelines", {"status": "running"}, 1),
    # volumes held: blocked and digits-preprocess (10Gi each), fails and retried (1Gi each);
    # done's was released on completion, refused never made one
    ("mltask_work_volume_bytes", {}, 22 * GI),
    # first Workflows: done, fails, retried; blocked, expires, digits-preprocess
    ("mltask_workflow_wait_seconds_count", {"type": "training"}, 3),
    ("mltask_workflow_wait_seconds_count", {"type": "preprocessing"}, 3),
    ("mltask_pipeline_tasks_created_total", {}, 1),
]


def value(text: str, sample: str, labels: dict[str, str]) -> float:
    """The sum of `sample` over the series that carry `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == sample and labels.items() <= s.labels.items())


def values_off(text: str) -> list[tuple[str, dict[str, str], float, float]]:
    return [(sample, labels, want, got) for sample, labels, want in VALUES_AFTER_MIX
            if (got := value(text, sample, labels)) != want]


def named(body: dict[str, Any], name: str, **spec: Any) -> dict[str, Any]:
    body["metadata"]["name"] = name
    body["spec"].update(spec)
    return body


@contextlib.contextmanager
def refusing_status_writes(api: client.ApiClient, namespace: str, task: str) -> Iterator[None]:
    """A ValidatingAdmissionPolicy refusing every status write of one MLTask: the operator's
    reconciles of it raise (and are retried) until it is removed."""
    adm = client.AdmissionregistrationV1Api(api)
    name = f"deny-status-{namespace}"
    message = "status writes of this task are refused (test)"
    adm.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [G], "apiVersions": [V], "operations": ["UPDATE"],
                     "resources": [f"{P}/status"]}]},
                 "validations": [{"expression": f"object.metadata.name != '{task}'",
                                  "message": message}]}})
    adm.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    try:
        yield
    finally:
        adm.delete_validating_admission_policy_binding(name)
        adm.delete_validating_admission_policy(name)


def wait_refused(tasks: Tasks, name: str) -> None:
    """Until the API server enforces the status policy (a dry-run status write is refused)."""
    deadline = time.monotonic() + 30
    while True:
        body = tasks.get(name)
        body["status"] = {"message": "probe"}
        try:
            tasks.objects.replace_namespaced_custom_object_status(G, V, tasks.ns, P, name, body,
                                                                  dry_run="All")
        except client.ApiException as e:
            if e.status == 422 and "refused (test)" in (e.body or ""):
                return
            if e.status != 409:
                raise
        assert time.monotonic() < deadline, "the status policy never took effect"
        time.sleep(0.2)


def get_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def has(scrape: Scrape, sample: str, labels: dict[str, str]) -> bool:
    return any(labels.items() <= s.items() for s in scrape.series.get(sample, []))


def scripted_mix(api: client.ApiClient, argo, namespace: str, port: int,
                 proc: OperatorProcess) -> None:
    tasks = Tasks(api, namespace)
    # reconciles that raise: the status write of `blocked` refused; it then stays in init
    # (its Workflow created, no pod started): a waiting task
    with refusing_status_writes(api, namespace, "blocked"):
        tasks.create(named(example("preprocessing"), "blocked"))
        wait_refused(tasks, "blocked")
        proc.start()
        deadline = time.monotonic() + 30
        while not has(parse_scrape(get_metrics(port)), "mltask_reconcile_errors_total",
                      {"kind": "MLTask"}):
            assert time.monotonic() < deadline, f"no reconcile error counted:\n{proc.tail()}"
            time.sleep(0.5)
    tasks.wait_state("blocked", "init", timeout=60)

    # a Workflow refused by a cluster policy: the task fails at once
    probe = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
             "metadata": {"generateName": "probe-"},
             "spec": {"entrypoint": "m", "templates": [{"name": "m"}]}}
    with denying(api, namespace, group="argoproj.io", version="v1alpha1", plural="workflows",
                 expression="has(object.spec.activeDeadlineSeconds)",
                 message="Workflows must set spec.activeDeadlineSeconds", probe=probe):
        tasks.create(named(example("preprocessing"), "refused"))
        tasks.wait_state("refused", "failed")
    deadline = time.monotonic() + 30
    while True:  # the policy's removal, like its creation, takes effect a little later
        try:
            tasks.objects.create_namespaced_custom_object("argoproj.io", "v1alpha1", namespace,
                                                          "workflows", probe, dry_run="All")
            break
        except client.ApiException as e:
            if e.status != 422 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)

    # completed, and completed then deleted after its TTL
    tasks.create(named(example("training"), "done"))
    tasks.create(named(example("preprocessing"), "expires", ttlSecondsAfterFinished=1))
    for name in ("done", "expires"):
        argo.wait_for(namespace, f"{name}-1")
        argo.update(namespace, f"{name}-1", argo_fn.succeed_all, result=RESULT)
    tasks.wait_state("done", "completed", "done")

    # failed: the run step's container exits 2 (no retry: that is the user's code)
    fails = named(example("training"), "fails")
    fails["spec"]["runtime"]["retryPolicy"] = {"limit": 0}
    tasks.create(fails)
    argo.wait_for(namespace, "fails-1")
    argo.update(namespace, "fails-1", argo_fn.run_pod, "download")
    argo.update(namespace, "fails-1", argo_fn.finish_pod, "download")
    argo.update(namespace, "fails-1", argo_fn.run_pod, "run")
    argo.update(namespace, "fails-1", argo_fn.finish_pod, "run", "Failed", exit_code=2,
                message="CUDA out of memory")
    tasks.wait_state("fails", "failed", "run_task")

    # retried: the run pod is lost (infrastructure), Argo starts another, which runs on
    tasks.create(named(example("training"), "retried"))
    argo.wait_for(namespace, "retried-1")
    argo.update(namespace, "retried-1", argo_fn.run_pod, "download")
    argo.update(namespace, "retried-1", argo_fn.finish_pod, "download")
    argo.update(namespace, "retried-1", argo_fn.run_pod, "run")
    tasks.wait_state("retried", "running", "run_task")
    argo.update(namespace, "retried-1", argo_fn.finish_pod, "run", "Error",
                message="pod deleted")
    tasks.wait_state("retried", "retry", "run_task")
    argo.update(namespace, "retried-1", argo_fn.run_pod, "run")
    tasks.wait_state("retried", "running", "run_task")

    # a Pipeline: it creates its first task, which runs
    pipes = Pipelines(api, namespace)
    pipes.create(pipeline_example("digits"))
    pipes.wait_child("digits-preprocess")
    argo.wait_for(namespace, "digits-preprocess-1")
    argo.update(namespace, "digits-preprocess-1", argo_fn.run_pod, "download")
    pipes.wait_state("digits", "running")

    deadline = time.monotonic() + 30
    while True:
        try:
            tasks.get("expires")
        except client.ApiException as e:
            if e.status == 404:
                break
            raise
        assert time.monotonic() < deadline, f"expires was not deleted:\n{proc.tail()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scrape_text(control_plane, api: client.ApiClient, mltask_crds, operator, argo,
                tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of an operator process (watching one namespace) after the scripted mix, once
    every family has series (or 30 s passed: the tests then say which have none)."""
    operator.stop()  # the session's cluster-wide operator would reconcile these tasks too
    namespace = f"metrics-{uuid.uuid4().hex[:6]}"
    ensure_namespace(api, namespace)
    port = free_port()
    workdir = tmp_path_factory.mktemp("metrics")
    proc = OperatorProcess(control_plane.kubeconfig, workdir / "operator.log",
                           env={"MLTASK_METRICS_PORT": str(port),
                                "MLTASK_NAMESPACES": namespace})
    try:
        scripted_mix(api, argo, namespace, port, proc)
        deadline = time.monotonic() + 30
        while True:
            text = get_metrics(port)
            scrape = parse_scrape(text)
            if (all(scrape.family(name) for name, _, _ in FAMILIES)
                    and all(has(scrape, s, lb) for s, lb in EXPECTED)
                    and not values_off(text)) or time.monotonic() > deadline:
                (workdir / "metrics.txt").write_text(text)  # to read when a test fails
                return text
            time.sleep(1)
    finally:
        proc.stop()
        client.CoreV1Api(api).delete_namespace(namespace, propagation_policy="Background")
        operator.start()


@pytest.fixture(scope="module")
def scrape(scrape_text: str) -> Scrape:
    return parse_scrape(scrape_text)


@pytest.mark.parametrize(("name", "type_", "labels"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_has_series_with_its_labels(scrape: Scrape, name: str, type_: str,
                                                 labels: set[str]) -> None:
    samples = scrape.family(name)
    base = name.removesuffix("_total")
    assert samples, f"{name}: no series after the scripted mix"
    assert scrape.types.get(base) == type_, (name, scrape.types.get(base))
    if type_ == "histogram":
        assert samples == [f"{name}_bucket", f"{name}_count", f"{name}_sum"], samples
    for sample in samples:
        for s in scrape.series[sample]:
            assert set(s) == labels | ({"le"} if sample.endswith("_bucket") else set()), \
                (sample, s)


def test_the_mix_has_the_expected_values(scrape_text: str) -> None:
    assert values_off(scrape_text) == [], "(sample, labels, expected, got)"


@pytest.mark.parametrize(("sample", "labels"), EXPECTED,
                         ids=[f"{s}{lb}" for s, lb in EXPECTED])
def test_the_mix_shows_up(scrape: Scrape, sample: str, labels: dict[str, str]) -> None:
    assert has(scrape, sample, labels), (sample, labels, scrape.series.get(sample))


def test_gauges_of_the_working_replica(scrape: Scrape, scrape_text: str) -> None:
    values = {line.split()[0]: float(line.split()[1]) for line in scrape_text.splitlines()
              if line and not line.startswith("#") and "{" not in line.split()[0]}
    assert values["mltask_operator_leader"] == 1
    assert values["mltask_pipeline_tasks_created_total"] >= 1


@pytest.mark.parametrize(("sample", "label", "allowed"), VALUES,
                         ids=[f"{v[0]}-{v[1]}" for v in VALUES])
def test_label_values_are_the_documented_ones(scrape: Scrape, sample: str, label: str,
                                              allowed: set[str]) -> None:
    seen = {s[label] for s in scrape.series.get(sample, [])}
    assert seen and seen <= allowed, (sample, label, seen - allowed or "no series")


DASHBOARD_QUERIES = dashboard_queries(dashboard())


@pytest.mark.parametrize(("where", "query"), DASHBOARD_QUERIES,
                         ids=[w for w, _ in DASHBOARD_QUERIES])
def test_dashboard_queries_name_real_series(scrape: Scrape, where: str, query: str) -> None:
    expr = grafana_to_promql(query)
    [a] = analyse([expr])
    assert not problems(a, scrape), (expr, problems(a, scrape))


ALERTS = ["MLTaskFailureRateHigh", "MLTaskOperatorNoActiveReplica", "MLTaskReconcileErrors",
          "MLTaskWorkflowWaitHigh"]


@pytest.mark.parametrize("alert", ALERTS)
def test_alert_expressions_name_real_series(scrape: Scrape, alert: str) -> None:
    rule = find(render(RELEASE_NS, "--set", "prometheusRule.enabled=true"), "PrometheusRule")
    expr = dict(rule_exprs(rule))[alert]
    [a] = analyse([expr])
    assert not problems(a, scrape), (expr, problems(a, scrape))


def test_promtool_check_metrics(scrape_text: str) -> None:
    """Prometheus's naming conventions (promtool check metrics reads the exposition)."""
    res = promtool("check", "metrics", stdin=scrape_text, check=False)
    findings = sorted({line for line in (res.stdout + res.stderr).splitlines() if line})
    assert not findings, "\n".join(findings)
