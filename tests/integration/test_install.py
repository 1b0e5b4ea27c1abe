"""Install paths on the real API server: the Helm chart and kustomize overlays create cleanly,
and the chart's RBAC is enough for the operator's whole flow and refuses everything else."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.controlplane import BIN_DIR, PROMETHEUS_CRDS_DIR, REPO, ControlPlaneError
from harness.operator_proc import OperatorProcess
from harness.pipelines import Pipelines, pipeline_example
from harness.tasks import RESULT, Tasks, example

pytestmark = pytest.mark.integration
CHART = REPO / "charts" / "mltask-operator"
GPU_VALUES = REPO / "examples" / "helm-values-gpu-pool.yaml"
RELEASE, RELEASE_NS = "mltask-operator", "mltask-system"
KUBE_VERSION = "1.34.4"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(BIN_DIR / "helm"), *args], capture_output=True, text=True,
                         timeout=120)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


def render(namespace: str, *args: str) -> list[dict[str, Any]]:
    out = helm("template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds",
               "--kube-version", KUBE_VERSION, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def apply(control_plane, docs: list[dict[str, Any]], tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return control_plane.kubectl("apply", "--server-side", "--force-conflicts",
                                 "--field-manager=install-test", "-f", str(path)).stdout


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as e:
        if e.status != 409:
            raise


# ------------------------------------------------------------------------------------ helm


@pytest.mark.parametrize("values", [[], ["-f", str(GPU_VALUES)]], ids=["default", "gpu-pool"])
def test_helm_lint(values: list[str]) -> None:
    out = helm("lint", str(CHART), "--kube-version", KUBE_VERSION, *values).stdout
    assert "0 chart(s) failed" in out


def test_helm_lint_refuses_an_unknown_key() -> None:
    res = helm("lint", str(CHART), "--kube-version", KUBE_VERSION, "--set", "replicaz=2",
               check=False)
    assert res.returncode != 0 and "additional properties 'replicaz' not allowed" in res.stdout, \
        res.stdout


@pytest.mark.parametrize(("args", "words"), [
    (["--set", "replicas=two"], "at '/replicas': got string, want integer"),
    (["--set", "replicas=-1"], "/replicas"),
    (["--set", "resources.requests.memory=lots"], "/resources/requests/memory"),
    (["--set", "watchNamespaces={Team_A}"], "/watchNamespaces/0"),
    (["--set", "bogus=1"], "additional properties 'bogus' not allowed"),
    (["--set", "logLevel=loud"], "/logLevel"),
    (["--set", "runStepDefaults.gpuResourceName=gpu"], "/runStepDefaults/gpuResourceName"),
    (["--set", "leaderElection.enabled=false"], "replicas > 1 needs leaderElection.enabled"),
    (["--set", "watch.clientTimeout=100"], "watch.clientTimeout must exceed"),
])
def test_bad_values_are_refused_naming_them(args: list[str], words: str) -> None:
    res = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *args,
               check=False)
    assert res.returncode != 0 and words in res.stderr, res.stderr


def test_service_monitor_only_when_enabled() -> None:
    def kinds(*args: str) -> list[str]:
        return [d["kind"] for d in render(RELEASE_NS, *args)]

    assert "ServiceMonitor" not in kinds()
    assert kinds("--set", "metrics.serviceMonitor.enabled=true").count("ServiceMonitor") == 1


def test_service_monitor_is_accepted_by_prometheus_operators_crd(
        control_plane, api: client.ApiClient, tmp_path: Path) -> None:
    """The real ServiceMonitor schema (prometheus-operator's CRD from its Go module) accepts
    what the chart renders, and the monitor selects the metrics Service by its port name."""
    crd = PROMETHEUS_CRDS_DIR / "monitoring.coreos.com_servicemonitors.yaml"
    assert crd.exists(), f"{crd} missing: run `make tools` (copies it from the pinned module)"
    control_plane.kubectl("apply", "--server-side", "--field-manager=install-test", "-f",
                          str(crd))
    control_plane.wait_established(["servicemonitors.monitoring.coreos.com"])
    ensure_namespace(api, RELEASE_NS)
    docs = [d for d in render(RELEASE_NS, "--set", "metrics.serviceMonitor.enabled=true",
                              "--set", "metrics.serviceMonitor.interval=15s",
                              "--set", "metrics.serviceMonitor.labels.release=prometheus")
            if d["kind"] in ("ServiceMonitor", "Service")]
    apply(control_plane, docs, tmp_path, "servicemonitor")
    sm = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", RELEASE_NS, "servicemonitors", RELEASE)
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "interval": "15s"}]
    svc = client.CoreV1Api(api).read_namespaced_service(f"{RELEASE}-metrics", RELEASE_NS)
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc.metadata.labels.items(), "the monitor must select the Service"
    assert "metrics" in [p.name for p in svc.spec.ports]
    # the CRD really validates: an interval it does not accept is refused
    bad = next(d for d in docs if d["kind"] == "ServiceMonitor")
    bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(ControlPlaneError, match=r"spec.endpoints\[0\].interval"):
        apply(control_plane, [bad], tmp_path, "bad-servicemonitor")


NAMESPACED_RULES = {
    *((g, r, v) for g, rs, vs in [
        ("mltask.dev", ["mltasks", "pipelines"],
         ["get", "list", "watch", "create", "patch", "update"]),
        ("mltask.dev", ["mltasks/status", "pipelines/status"], ["get", "update", "patch"]),
        ("mltask.dev", ["mltasks/finalizers", "pipelines/finalizers"], ["update"]),
        ("argoproj.io", ["workflows"], ["get", "list", "watch", "create", "patch"]),
        ("", ["persistentvolumeclaims"], ["get", "create"]),
        ("", ["events"], ["create", "patch"]),
        ("events.k8s.io", ["events"], ["create", "patch"]),
    ] for r in rs for v in vs),
}
CRD_RULES = {("apiextensions.k8s.io", "customresourcedefinitions", v)
             for v in ("get", "list", "watch")}
# patch: a leader that stops clears the Lease holder so a standby takes over at once
LEASE_RULES = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "update", "patch")}


def rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in doc["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"]
                for v in rule["verbs"]}
    return out


@pytest.mark.parametrize("values", [[], ["-f", str(GPU_VALUES)]], ids=["default", "gpu-pool"])
def test_rbac_grants_exactly_what_the_operator_uses(values: list[str]) -> None:
    docs = render(RELEASE_NS, *values)
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): rules(d)
             for d in docs if d["kind"] in ("ClusterRole", "Role")}
    lease = ("Role", RELEASE_NS, f"{RELEASE}-leader-election")
    expected = {lease: LEASE_RULES}
    if values:
        expected |= {("Role", ns, RELEASE): NAMESPACED_RULES for ns in ("ml-team-a", "ml-team-b")}
    else:
        expected[("ClusterRole", None, RELEASE)] = NAMESPACED_RULES | CRD_RULES
    assert roles == expected
    everything = set().union(*roles.values())
    assert not any("*" in part for rule in everything for part in rule), "no wildcards"
    bindings = [d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == len(roles)
    for b in bindings:
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE,
                                  "namespace": RELEASE_NS}]


def test_chart_renders_and_creates_on_the_api_server(control_plane, api: client.ApiClient,
                                                     mltask_crds, tmp_path: Path) -> None:
    ensure_namespace(api, RELEASE_NS)
    docs = render(RELEASE_NS)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                     "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount"]
    apply(control_plane, docs, tmp_path, "default")
    dep = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, RELEASE_NS)
    pod = dep.spec.template.spec
    assert dep.spec.replicas == 2
    psc = pod.security_context
    assert (psc.run_as_non_root, psc.run_as_user, psc.run_as_group, psc.fs_group,
            psc.seccomp_profile.type) == (True, 65532, 65532, 65532, "RuntimeDefault")
    assert pod.service_account_name == RELEASE and pod.automount_service_account_token
    c = pod.containers[0]
    assert c.image == "ghcr.io/example/mltask-operator:0.1.0"
    assert (c.command, c.args) == (["mltask-operator"], ["--liveness=http://0.0.0.0:8081/healthz"])
    sc = c.security_context
    assert (sc.allow_privilege_escalation, sc.read_only_root_filesystem,
            sc.capabilities.drop) == (False, True, ["ALL"])
    ports = {p.name: p.container_port for p in c.ports}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in (c.liveness_probe, c.readiness_probe):
        assert (probe.http_get.path, ports[probe.http_get.port]) == ("/healthz", 8081)
    assert [(m.name, m.mount_path) for m in c.volume_mounts] == [("tmp", "/tmp")]
    assert pod.volumes[0].name == "tmp" and pod.volumes[0].empty_dir is not None
    env = {e.name: e.value or "" for e in c.env}
    assert env == {
        "POD_NAME": "", "POD_NAMESPACE": "", "MLTASK_NAMESPACES": "",
        "MLTASK_RESYNC_SECONDS": "60", "MLTASK_WORKERS": "8", "MLTASK_METRICS_PORT": "8080",
        "MLTASK_HEALTH_PORT": "8081", "MLTASK_LOG_LEVEL": "INFO",
        "MLTASK_WATCH_SERVER_TIMEOUT": "300", "MLTASK_WATCH_CLIENT_TIMEOUT": "330",
        "MLTASK_LEADER_ELECTION": "true", "MLTASK_LEADER_ELECTION_NAMESPACE": RELEASE_NS,
        "MLTASK_LEADER_ELECTION_LEASE_NAME": RELEASE, "MLTASK_LEADER_ELECTION_LEASE_SECONDS": "15",
        "MLTASK_GPU_RESOURCE_NAME": "nvidia.com/gpu"}, "optional run-step env only when set"
    downward = {e.name: e.value_from.field_ref.field_path for e in c.env if e.value_from}
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert c.resources.requests == {"cpu": "100m", "memory": "256Mi"}
    assert c.resources.limits == {"memory": "512Mi"}
    svc = client.CoreV1Api(api).read_namespaced_service(f"{RELEASE}-metrics", RELEASE_NS)
    assert [(p.name, p.port, p.target_port) for p in svc.spec.ports] == [
        ("metrics", 8080, "metrics")]


def test_gpu_values_give_namespaced_rbac_and_the_gpu_policy(
        control_plane, api: client.ApiClient, mltask_crds, tmp_path: Path) -> None:
    for ns in ("mltask-gpu", "ml-team-a", "ml-team-b"):
        ensure_namespace(api, ns)
    docs = render("mltask-gpu", "-f", str(GPU_VALUES))
    rbac = sorted((d["kind"], d["metadata"].get("namespace")) for d in docs
                  if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"))
    assert rbac == [("Role", "ml-team-a"), ("Role", "ml-team-b"), ("Role", "mltask-gpu"),
                    ("RoleBinding", "ml-team-a"), ("RoleBinding", "ml-team-b"),
                    ("RoleBinding", "mltask-gpu")], "no ClusterRole when namespaces are listed"
    apply(control_plane, docs, tmp_path, "gpu")
    dep = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, "mltask-gpu")
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert env["MLTASK_NAMESPACES"] == "ml-team-a,ml-team-b"
    assert json.loads(env["MLTASK_RUN_TOLERATIONS"])[0]["key"] == "nvidia.com/gpu"
    assert json.loads(env["MLTASK_RUN_NODE_SELECTOR"])["nvidia.com/gpu.present"] == "true"
    assert env["MLTASK_RUN_RUNTIME_CLASS_NAME"] == "nvidia"


# ------------------------------------------------------------------------------- kustomize


def test_manifests_are_generated_from_the_chart() -> None:
    spec = importlib.util.spec_from_file_location("gen", REPO / "manifests" / "generate.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for rel, text in gen.files().items():
        assert (REPO / "manifests" / rel).read_text() == text, f"{rel}: run `make generate`"


@pytest.mark.parametrize("overlay", ["cluster-wide", "single-namespace"])
def test_kustomize_overlay_creates_on_the_api_server(control_plane, mltask_crds,
                                                     overlay: str, tmp_path: Path) -> None:
    built = control_plane.kubectl("kustomize", str(REPO / "manifests" / "overlays" / overlay))
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    out = apply(control_plane, docs, tmp_path, overlay)
    assert "deployment.apps/mltask-operator serverside-applied" in out
    dep = json.loads(control_plane.kubectl("get", "deployment", RELEASE, "-n", RELEASE_NS,
                                           "-o", "json").stdout)
    env = {e["name"]: e.get("value") or "" for e in dep["spec"]["template"]["spec"]["containers"][0]
           ["env"]}
    assert env["MLTASK_NAMESPACES"] == ("ml" if overlay == "single-namespace" else "")


# ------------------------------------------------------------------------------------ RBAC


@pytest.fixture
def quiet_operator(operator):
    """Stop the session's admin operator so only the chart-identity operator works."""
    operator.stop()
    yield
    operator.start()


def sa_kubeconfig(control_plane, api: client.ApiClient, namespace: str, sa: str,
                  path: Path) -> Path:
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        sa, namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[control_plane.server],
                                           expiration_seconds=3600))).status.token
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {
            "server": control_plane.server,
            "certificate-authority": str(control_plane.certs / "ca.crt")}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa"}}]}))
    return path


def test_operator_runs_as_the_chart_service_account(
        control_plane, api: client.ApiClient, mltask_crds, quiet_operator, argo,
        namespace: str, tmp_path: Path) -> None:
    ensure_namespace(api, RELEASE_NS)
    apply(control_plane, render(RELEASE_NS), tmp_path, "default")
    kubeconfig = sa_kubeconfig(control_plane, api, RELEASE_NS, RELEASE, tmp_path / "sa.yaml")
    proc = OperatorProcess(kubeconfig, tmp_path / "operator-sa.log", env={
        "MLTASK_LEADER_ELECTION": "true", "MLTASK_LEADER_ELECTION_NAMESPACE": RELEASE_NS,
        "MLTASK_LEADER_ELECTION_LEASE_NAME": RELEASE, "POD_NAME": "chart-sa"})
    proc.start()
    try:
        tasks = Tasks(api, namespace)
        body = example("training")
        name = body["metadata"]["name"]
        tasks.create(body)
        argo.wait_for(namespace, f"{name}-1")
        argo.update(namespace, f"{name}-1", argo_fn.run_pod, "download")
        tasks.wait_state(name, "running", "download")
        tasks.patch(name, {"suspend": True})   # stop: the operator patches the Workflow
        wf = argo.wait_for(namespace, f"{name}-1")
        for _ in range(300):
            if wf["spec"].get("shutdown"):
                break
            wf = argo.get(namespace, f"{name}-1")
        assert wf["spec"].get("shutdown") == "Stop", proc.tail()
        argo.update(namespace, f"{name}-1", argo_fn.stop)
        tasks.wait_state(name, "stopped")
        tasks.patch(name, {"suspend": False})  # continue: a new Workflow
        argo.update(namespace, f"{name}-2", argo_fn.succeed_all, result=RESULT)
        st = tasks.wait_state(name, "completed", "done")["status"]
        assert st["outputs"]["uri"] == RESULT["uri"]
        tasks.wait_event(name, "Completed")  # Events are allowed

        pipes = Pipelines(api, namespace)
        pipes.create(pipeline_example("cifar10"))
        child = pipes.wait_child("cifar10-preprocess")
        assert child["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
        argo.wait_for(namespace, "cifar10-preprocess-1")
        pipes.wait("cifar10", lambda s: s.get("progress") == "0/3", "pipeline status")
        lease = client.CoordinationV1Api(api).read_namespaced_lease(RELEASE, RELEASE_NS)
        assert lease.spec.holder_identity == "chart-sa"
        # a 403 anywhere (Kopf's watches, our writes, events) is logged with reason Forbidden
        assert "Forbidden" not in proc.tail(400), proc.tail()
    finally:
        proc.stop()


FORBIDDEN = [
    ("read a Secret", lambda c, ns: client.CoreV1Api(c).list_namespaced_secret(ns)),
    ("list pods", lambda c, ns: client.CoreV1Api(c).list_namespaced_pod(ns)),
    ("delete a namespace", lambda c, ns: client.CoreV1Api(c).delete_namespace(ns)),
    ("create a ClusterRole", lambda c, ns: client.RbacAuthorizationV1Api(c).create_cluster_role(
        {"metadata": {"name": "escalate"}, "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})),
    ("create a RoleBinding", lambda c, ns: client.RbacAuthorizationV1Api(c)
     .create_namespaced_role_binding(ns, {"metadata": {"name": "x"}, "roleRef": {
         "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
         "subjects": [{"kind": "User", "name": "me"}]})),
    ("delete a Workflow", lambda c, ns: client.CustomObjectsApi(c).delete_namespaced_custom_object(
        "argoproj.io", "v1alpha1", ns, "workflows", "any")),
    ("read a ConfigMap", lambda c, ns: client.CoreV1Api(c).list_namespaced_config_map(ns)),
]


@pytest.mark.parametrize(("what", "call"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_chart_identity_is_refused_what_it_does_not_need(
        control_plane, api: client.ApiClient, mltask_crds, namespace: str, tmp_path: Path,
        as_service_account, what: str, call) -> None:
    ensure_namespace(api, RELEASE_NS)
    apply(control_plane, render(RELEASE_NS), tmp_path, "default")
    sa = as_service_account(RELEASE_NS, RELEASE)
    client.CustomObjectsApi(sa).list_namespaced_custom_object(
        "mltask.dev", "v1alpha1", namespace, "mltasks")  # what it needs works
    with pytest.raises(client.ApiException) as err:
        call(sa, namespace)
    assert err.value.status == 403, (what, err.value.status)


def test_namespaced_install_reaches_only_its_namespaces(
        control_plane, api: client.ApiClient, mltask_crds, namespace: str, tmp_path: Path,
        as_service_account) -> None:
    for ns in ("mltask-gpu", "ml-team-a", "ml-team-b"):
        ensure_namespace(api, ns)
    apply(control_plane, render("mltask-gpu", "-f", str(GPU_VALUES)), tmp_path, "gpu")
    objects = client.CustomObjectsApi(as_service_account("mltask-gpu", RELEASE))
    for ns in ("ml-team-a", "ml-team-b"):
        objects.list_namespaced_custom_object("mltask.dev", "v1alpha1", ns, "mltasks")
    with pytest.raises(client.ApiException) as err:
        objects.list_namespaced_custom_object("mltask.dev", "v1alpha1", namespace, "mltasks")
    assert err.value.status == 403
    with pytest.raises(client.ApiException) as err:
        objects.list_cluster_custom_object("mltask.dev", "v1alpha1", "mltasks")
    assert err.value.status == 403

    def allowed(ns: str | None, verb: str, resource: str, group: str = "mltask.dev") -> bool:
        review = client.AuthorizationV1Api(api).create_subject_access_review({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": f"system:serviceaccount:mltask-gpu:{RELEASE}",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:mltask-gpu"],
                     "resourceAttributes": {"namespace": ns, "verb": verb, "group": group,
                                            "resource": resource}}})
        return review.status.allowed

    assert allowed("ml-team-b", "create", "workflows", "argoproj.io")
    assert allowed("ml-team-a", "update", "mltasks")
    assert not allowed(namespace, "watch", "mltasks")
    assert not allowed("mltask-gpu", "list", "mltasks"), "its own namespace is not watched"
    assert not allowed(None, "watch", "customresourcedefinitions", "apiextensions.k8s.io")
    assert not allowed("ml-team-a", "delete", "workflows", "argoproj.io")
