"""Install paths on the real API server: the Helm chart and kustomize overlays create cleanly,
the pods pass restricted Pod Security admission, and the chart's RBAC is enough for the
operator's whole flow (cluster-wide and namespaced), used in full (the API server's audit log
says so), and refuses everything else."""

from __future__ import annotations

import copy
import datetime
import importlib.util
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from harness import argo_standin as argo_fn
from harness.chart import (
    GPU_VALUES,
    RELEASE,
    RELEASE_NS,
    find,
    pod_env,
    render,
    rules,
)
from harness.controlplane import ARGOCD_CRDS_DIR, PROMETHEUS_CRDS_DIR, REPO, ControlPlaneError
from harness.operator_proc import OperatorProcess, service_account_kubeconfig
from harness.pipelines import Pipelines, pipeline_example
from harness.tasks import RESULT, Tasks, example
from harness.waiting import wait_gone

pytestmark = pytest.mark.integration
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
#: what the chart's objects carry; its admission policies are cluster-wide
CHART_OBJECTS = "app.kubernetes.io/part-of=mltask-operator"


@pytest.fixture(autouse=True)
def _no_task_policy_left_behind(api: client.ApiClient):
    """The chart's task policy binds every namespace: once a test here has applied it, it would
    refuse the later test files' own specs (a custom download step with storage credentials,
    say). Each test's policies go with it; test_task_policy_admission tests the policy itself."""
    yield
    adm = client.AdmissionregistrationV1Api(api)
    for b in adm.list_validating_admission_policy_binding(label_selector=CHART_OBJECTS).items:
        adm.delete_validating_admission_policy_binding(b.metadata.name)
    for p in adm.list_validating_admission_policy(label_selector=CHART_OBJECTS).items:
        adm.delete_validating_admission_policy(p.metadata.name)


def apply(control_plane, docs: list[dict[str, Any]], tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return control_plane.kubectl("apply", "--server-side", "--force-conflicts",
                                 "--field-manager=install-test", "-f", str(path)).stdout


def ensure_namespace(api: client.ApiClient, name: str,
                     labels: dict[str, str] | None = None) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels=labels)))
    except client.ApiException as e:
        if e.status != 409:
            raise
        if labels:
            core.patch_namespace(name, {"metadata": {"labels": labels}})


def delete_lease(api: client.ApiClient, namespace: str, name: str) -> None:
    try:
        client.CoordinationV1Api(api).delete_namespaced_lease(name, namespace)
    except client.ApiException as e:
        if e.status != 404:
            raise


# --------------------------------------------------------------------------------- Argo CD


def test_argocd_application_and_health_checks_install_as_written(
        control_plane, api: client.ApiClient, tmp_path: Path) -> None:
    """examples/argocd-application.yaml passes Argo CD's own Application schema (its CRD from
    the pinned argo-cd module), and the argocd-cm patch merges into an existing argocd-cm with
    the command the README gives, keeping what was there."""
    crd = ARGOCD_CRDS_DIR / "application-crd.yaml"
    assert crd.exists(), f"{crd} missing: run `make tools` (copies it from the pinned module)"
    control_plane.kubectl("apply", "--server-side", "--field-manager=install-test", "-f",
                          str(crd))
    control_plane.wait_established(["applications.argoproj.io"])
    ensure_namespace(api, "argocd")
    example_app = REPO / "examples" / "argocd-application.yaml"
    control_plane.kubectl("apply", "--server-side", "--field-manager=install-test",
                          "--validate=strict", "-f", str(example_app))
    app = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "argoproj.io", "v1alpha1", "argocd", "applications", "mltask-operator")
    assert app["spec"]["source"]["path"] == "charts/mltask-operator"
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    # the schema really validates: a misspelt field and a wrong type are refused
    bad = yaml.safe_load(example_app.read_text())
    bad["metadata"]["name"] = "mltask-operator-bad"
    bad["spec"]["syncPolicy"]["automated"]["selfHeal"] = "sometimes"
    with pytest.raises(ControlPlaneError, match=r"spec.syncPolicy.automated.selfHeal"):
        apply(control_plane, [bad], tmp_path, "bad-application")

    core = client.CoreV1Api(api)
    try:
        core.delete_namespaced_config_map("argocd-cm", "argocd")
    except client.ApiException as e:
        if e.status != 404:
            raise
    core.create_namespaced_config_map("argocd", {
        "metadata": {"name": "argocd-cm"}, "data": {"url": "https://argocd.example.com"}})
    patch = REPO / "manifests" / "argocd" / "argocd-cm-patch.yaml"
    control_plane.kubectl("-n", "argocd", "patch", "configmap", "argocd-cm",
                          "--patch-file", str(patch))
    data = core.read_namespaced_config_map("argocd-cm", "argocd").data
    lua = (REPO / "manifests" / "argocd" / "health.lua").read_text()
    assert data["url"] == "https://argocd.example.com", "the patch keeps existing keys"
    for kind in ("MLTask", "Pipeline"):
        assert data[f"resource.customizations.health.mltask.dev_{kind}"].strip() == lua.strip()


# ------------------------------------------------------------------------------------ helm


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
                              "--set", "metrics.serviceMonitor.interval=1m30s",
                              "--set", "metrics.serviceMonitor.labels.release=prometheus")
            if d["kind"] in ("ServiceMonitor", "Service")]
    apply(control_plane, docs, tmp_path, "servicemonitor")
    sm = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", RELEASE_NS, "servicemonitors", RELEASE)
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["endpoints"] == [{"port": "metrics", "interval": "1m30s",
                                        "honorLabels": True}]
    svc = client.CoreV1Api(api).read_namespaced_service(f"{RELEASE}-metrics", RELEASE_NS)
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector.items() <= svc.metadata.labels.items(), "the monitor must select the Service"
    assert "metrics" in [p.name for p in svc.spec.ports]
    # the CRD really validates: an interval it does not accept is refused
    bad = next(d for d in docs if d["kind"] == "ServiceMonitor")
    bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(ControlPlaneError, match=r"spec.endpoints\[0\].interval"):
        apply(control_plane, [bad], tmp_path, "bad-servicemonitor")


def test_chart_renders_and_creates_on_the_api_server(control_plane, api: client.ApiClient,
                                                     mltask_crds, tmp_path: Path) -> None:
    ensure_namespace(api, RELEASE_NS)
    docs = render(RELEASE_NS)
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                     "Deployment", "Role", "RoleBinding", "Service", "ServiceAccount",
                     "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    apply(control_plane, docs, tmp_path, "default")
    dep = client.AppsV1Api(api).read_namespaced_deployment(RELEASE, RELEASE_NS)
    pod = dep.spec.template.spec
    assert dep.spec.replicas == 2 and dep.spec.strategy.type == "RollingUpdate"
    psc = pod.security_context
    assert (psc.run_as_non_root, psc.run_as_user, psc.run_as_group, psc.fs_group,
            psc.seccomp_profile.type) == (True, 65532, 65532, 65532, "RuntimeDefault")
    assert pod.service_account_name == RELEASE and pod.automount_service_account_token
    c = pod.containers[0]
    assert c.image == "localhost/mltask-operator:0.1.0"
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
        "MLTASK_LEADER_ELECTION": "true",
        "MLTASK_LEADER_ELECTION_LEASE_NAME": RELEASE, "MLTASK_LEADER_ELECTION_LEASE_SECONDS": "15",
        "MLTASK_GPU_RESOURCE_NAME": "nvidia.com/gpu",
        "MLTASK_GPU_RESOURCE_PREFIXES": "nvidia.com/gpu,nvidia.com/mig-",
        # the default download and upload steps: the operator's own image and pull policy
        "MLTASK_TRANSFER_IMAGE": "localhost/mltask-operator:0.1.0",
        "MLTASK_TRANSFER_IMAGE_PULL_POLICY": "IfNotPresent",
        "MLTASK_TRANSFER_RESOURCES": json.dumps(
            {"limits": {"memory": "1Gi"}, "requests": {"cpu": "100m", "memory": "256Mi"}},
            separators=(",", ":")),
        # the task policy's safe default, always said
        "MLTASK_POLICY_ALLOW_PRIVILEGED": "false", "MLTASK_POLICY_ALLOW_ROOT": "false",
        "MLTASK_POLICY_ALLOWED_CAPABILITIES": "", "MLTASK_POLICY_ALLOWED_SERVICE_ACCOUNTS": "",
        "MLTASK_POLICY_ALLOWED_PRIORITY_CLASSES": "",
        "MLTASK_POLICY_ALLOW_WILDCARD_TOLERATIONS": "false",
        "MLTASK_POLICY_ALLOW_CUSTOM_TRANSFER_IMAGES": "false",
        "MLTASK_POLICY_POD_LABEL_KEYS":
            "kueue.x-k8s.io/queue-name,kueue.x-k8s.io/priority-class,cost-allocation/*",
        "MLTASK_POLICY_POD_ANNOTATION_KEYS":
            "cluster-autoscaler.kubernetes.io/safe-to-evict,cost-allocation/*",
    }, "optional run-step env only when set"
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


# ----------------------------------------------------------------------- Pod Security


def test_pods_are_admitted_under_restricted_pod_security(
        control_plane, api: client.ApiClient, tmp_path: Path) -> None:
    """The namespace enforces the restricted Pod Security Standard (the API server's
    PodSecurity admission); the Deployment controller's pods are admitted, and a pod built
    from the chart's template passes a dry run, while a weaker one is refused."""
    ns = "mltask-psa"
    ensure_namespace(api, ns, RESTRICTED)
    docs = [d for d in render(ns) if d["kind"] in ("ServiceAccount", "Deployment")]
    apply(control_plane, docs, tmp_path, "psa")
    core = client.CoreV1Api(api)
    template = find(docs, "Deployment")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "psa-", "namespace": ns, **template["metadata"]},
           "spec": template["spec"]}
    core.create_namespaced_pod(ns, pod, dry_run="All")  # admitted
    weaker = copy.deepcopy(pod)
    weaker["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(ns, weaker, dry_run="All")
    message = json.loads(err.value.body)["message"]
    assert err.value.status == 403 and 'violates PodSecurity "restricted' in message, message
    selector = ",".join(f"{k}={v}" for k, v in template["metadata"]["labels"].items())
    deadline = time.monotonic() + 60
    pods: list[Any] = []
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        if len(pods) == 2:
            break
        time.sleep(0.5)
    events = [e.message for e in core.list_namespaced_event(ns).items
              if e.reason == "FailedCreate"]
    assert len(pods) == 2, f"the ReplicaSet's pods were not admitted: {events}"


# ------------------------------------------------------------------------------- kustomize


def test_manifests_are_generated_from_the_chart() -> None:
    spec = importlib.util.spec_from_file_location("gen", REPO / "manifests" / "generate.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for rel, text in gen.files().items():
        assert (REPO / "manifests" / rel).read_text() == text, f"{rel}: run `make generate`"


@pytest.mark.parametrize("overlay", ["cluster-wide", "single-namespace"])
def test_kustomize_overlay_creates_on_the_api_server(control_plane, api: client.ApiClient,
                                                     mltask_crds, overlay: str,
                                                     tmp_path: Path) -> None:
    built = control_plane.kubectl("kustomize", str(REPO / "manifests" / "overlays" / overlay))
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    out = apply(control_plane, docs, tmp_path, overlay)
    assert "deployment.apps/mltask-operator serverside-applied" in out
    dep = json.loads(control_plane.kubectl("get", "deployment", RELEASE, "-n", RELEASE_NS,
                                           "-o", "json").stdout)
    env = {e["name"]: e.get("value") or "" for e in dep["spec"]["template"]["spec"]["containers"][0]
           ["env"]}
    assert env["MLTASK_NAMESPACES"] == ("ml" if overlay == "single-namespace" else "")
    labels = client.CoreV1Api(api).read_namespace(RELEASE_NS).metadata.labels
    assert RESTRICTED.items() <= labels.items()


@pytest.fixture
def quiet_operator(operator):
    """Stop the session's admin operator so only the chart-identity operator works."""
    operator.stop()
    yield
    operator.start()


def test_kustomize_namespace_override_leads_from_its_own_namespace(
        control_plane, api: client.ApiClient, mltask_crds, quiet_operator, namespace: str,
        tmp_path: Path) -> None:
    """A user's overlay with `namespace: ops`: the Role for the Lease lands in ops, and the
    operator, run as the ops ServiceAccount with the Deployment's environment, takes the Lease
    there (with the namespace written into the env it would stand by forever on 403s)."""
    user = tmp_path / "user-overlay"
    user.mkdir()
    (user / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "ops", "namePrefix": "ops-",
        "resources": [os.path.relpath(REPO / "manifests" / "overlays" / "cluster-wide", user)]}))
    docs = [d for d in yaml.safe_load_all(control_plane.kubectl("kustomize", str(user)).stdout)
            if d and d["kind"] != "CustomResourceDefinition"]
    apply(control_plane, docs, tmp_path, "ops")
    dep = find(docs, "Deployment")
    env = pod_env(dep, "ops-operator-0")
    assert env["POD_NAMESPACE"] == "ops"
    env.update({"MLTASK_METRICS_PORT": "0", "MLTASK_NAMESPACES": namespace})
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = service_account_kubeconfig(control_plane, api, "ops", sa, tmp_path / "sa.yaml")
    proc = OperatorProcess(kubeconfig, tmp_path / "operator-ops.log", env=env)
    proc.start()
    try:
        leases = client.CoordinationV1Api(api)
        deadline = time.monotonic() + 30
        holder = None
        while time.monotonic() < deadline and holder != "ops-operator-0":
            try:
                holder = leases.read_namespaced_lease(env["MLTASK_LEADER_ELECTION_LEASE_NAME"],
                                                      "ops").spec.holder_identity
            except client.ApiException as e:
                if e.status != 404:
                    raise
            time.sleep(0.2)
        assert holder == "ops-operator-0", proc.tail()
    finally:
        proc.stop()


# ------------------------------------------------------------------------------------ RBAC

#: Granted but never called in a run: the OwnerReferencesPermissionEnforcement admission plugin
#: (on in this control plane) checks it when the operator sets an owner reference with
#: blockOwnerDeletion; test_block_owner_deletion_needs_the_finalizers_rule proves it is needed.
ADMISSION_ONLY = {("mltask.dev", "mltasks/finalizers", "update"),
                  ("mltask.dev", "pipelines/finalizers", "update")}


def test_block_owner_deletion_needs_the_finalizers_rule(
        control_plane, api: client.ApiClient, mltask_crds, namespace: str, tmp_path: Path,
        as_service_account) -> None:
    """OwnerReferencesPermissionEnforcement (on here, as on OpenShift and hardened clusters):
    an owner reference with blockOwnerDeletion needs `update` on the owner's finalizers. The
    chart's identity creates a working volume owned by a task; the same rules without the
    finalizers rule are refused."""
    ensure_namespace(api, RELEASE_NS)
    docs = render(RELEASE_NS)
    apply(control_plane, docs, tmp_path, "default")
    body = example("training")
    body["spec"]["suspend"] = True  # an owner; nothing needs to run
    owner = client.CustomObjectsApi(api).create_namespaced_custom_object(
        "mltask.dev", "v1alpha1", namespace, "mltasks", body)

    def pvc(sa: client.ApiClient, name: str) -> None:
        client.CoreV1Api(sa).create_namespaced_persistent_volume_claim(namespace, {
            "metadata": {"name": name, "ownerReferences": [{
                "apiVersion": "mltask.dev/v1alpha1", "kind": "MLTask",
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
                "controller": True, "blockOwnerDeletion": True}]},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}})

    pvc(as_service_account(RELEASE_NS, RELEASE), "owned-by-the-chart-identity")

    role = copy.deepcopy(find(docs, "ClusterRole"))
    role["metadata"] = {"name": f"no-finalizers-{namespace}"}
    role["rules"] = [r for r in role["rules"]
                     if not any(x.endswith("/finalizers") for x in r["resources"])]
    assert ("mltask.dev", "mltasks/finalizers", "update") not in rules(role)
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_cluster_role(role)
    try:
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "no-finalizers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role["metadata"]["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": "no-finalizers",
                          "namespace": namespace}]})
        with pytest.raises(client.ApiException) as err:
            pvc(as_service_account(namespace, "no-finalizers"), "owned-without-the-rule")
        assert err.value.status == 403 and "blockOwnerDeletion" in err.value.body, err.value.body
    finally:
        rbac.delete_cluster_role(role["metadata"]["name"])


def audited(control_plane, namespace: str, sa: str, since: datetime.datetime
            ) -> tuple[set[tuple[str, str, str]], list[str]]:
    """What ServiceAccount namespace/sa did since `since`, from the API server's audit log:
    the (group, resource, verb) triples it was allowed, and the requests it was refused."""
    used: set[tuple[str, str, str]] = set()
    refused: list[str] = []
    for event in control_plane.audit_events(f"system:serviceaccount:{namespace}:{sa}", since):
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery (/apis/...): open to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        triple = (ref.get("apiGroup", ""), resource, event["verb"])
        decision = (event.get("annotations") or {}).get("authorization.k8s.io/decision")
        if decision == "forbid" or (decision is None
                                    and (event.get("responseStatus") or {}).get("code") == 403):
            # refused by RBAC (a 403 from a quota or a policy is an allowed call)
            refused.append(f"{event['verb']} {event['requestURI']}")
        else:
            used.add(triple)
    return used, refused


def full_flow(api: client.ApiClient, argo, namespace: str, proc: OperatorProcess) -> None:
    """An MLTask through start, stop, continue and completion, a Pipeline that creates its first
    child and stops it, and the paths that read or delete what a conflict or a refusal left:
    every kind of call the operator makes."""
    tasks = Tasks(api, namespace)
    body = example("training")
    name = body["metadata"]["name"] = f"train-{uuid.uuid4().hex[:6]}"
    tasks.create(body)
    argo.wait_for(namespace, f"{name}-1")
    argo.update(namespace, f"{name}-1", argo_fn.run_pod, "download")
    argo.update(namespace, f"{name}-1", argo_fn.finish_pod, "download", "Error")
    argo.update(namespace, f"{name}-1", argo_fn.run_pod, "download")  # Argo's retry
    tasks.wait_state(name, "running", "download")
    tasks.patch(name, {"suspend": True})   # stop: the operator patches the Workflow
    deadline = time.monotonic() + 30
    wf = argo.get(namespace, f"{name}-1")
    while not wf["spec"].get("shutdown") and time.monotonic() < deadline:
        time.sleep(0.1)
        wf = argo.get(namespace, f"{name}-1")
    assert wf["spec"].get("shutdown") == "Stop", proc.tail()
    argo.update(namespace, f"{name}-1", argo_fn.stop)
    tasks.wait_state(name, "stopped")
    tasks.patch(name, {"suspend": False})  # continue: a new Workflow, the volume read back
    argo.update(namespace, f"{name}-2", argo_fn.succeed_all, result=RESULT)
    st = tasks.wait_state(name, "completed", "done")["status"]
    assert st["outputs"]["uri"] == RESULT["uri"]
    tasks.wait_event(name, "Completed")  # Events are allowed
    # released on completion (delete PVC); attempt 1's Workflow (delete) and its retried
    # download pod (delete pod) went with the continue
    st = tasks.wait(name, lambda s: (s.get("released") or {}).get("workVolume"),
                    "the volume released")["status"]
    assert st["released"]["workflows"] == [f"{name}-1"]
    tasks.patch(name, {"archived": True})  # the archived label (patch)
    tasks.wait(name, lambda s: any(c["type"] == "Archived" and c["status"] == "True"
                                   for c in s.get("conditions") or []), "archived")

    # a task and a pipeline deleted once their TTL after finishing passed (delete)
    short = example("preprocessing")
    short["metadata"]["name"] = sname = f"ttl-{uuid.uuid4().hex[:6]}"
    short["spec"]["ttlSecondsAfterFinished"] = 0
    tasks.create(short)
    argo.wait_for(namespace, f"{sname}-1")
    argo.update(namespace, f"{sname}-1", argo_fn.succeed_all, result=RESULT)
    wait_gone(lambda: tasks.get(sname), f"MLTask {sname} (its TTL)", 30)

    pipes = Pipelines(api, namespace)
    pipeline = pipeline_example("digits")
    pipes.create(pipeline)
    pname = pipeline["metadata"]["name"]
    child = pipes.wait_child(f"{pname}-preprocess")
    assert child["metadata"]["ownerReferences"][0]["kind"] == "Pipeline"
    argo.wait_for(namespace, f"{pname}-preprocess-1")
    pipes.wait(pname, lambda s: s.get("progress") == "0/3", "pipeline status")
    pipes.patch(pname, {"suspend": True})  # the pipeline patches its child (suspend)
    deadline = time.monotonic() + 30
    while not tasks.get(child["metadata"]["name"])["spec"].get("suspend"):
        assert time.monotonic() < deadline, f"the child was never stopped: {proc.tail()}"
        time.sleep(0.2)
    short_pipe = {"apiVersion": "mltask.dev/v1alpha1", "kind": "Pipeline",
                  "metadata": {"name": f"ttl-{uuid.uuid4().hex[:6]}"},
                  "spec": {"ttlSecondsAfterFinished": 3, "tasks": [
                      {"name": "prep", "spec": example("preprocessing")["spec"]}]}}
    spname = short_pipe["metadata"]["name"]
    pipes.create(short_pipe)
    argo.wait_for(namespace, f"{spname}-prep-1")
    argo.update(namespace, f"{spname}-prep-1", argo_fn.succeed_all, result=RESULT)
    pipes.wait_state(spname, "completed")
    pipes.patch(spname, {"archived": True})  # the pipeline's archived label (patch)
    wait_gone(lambda: pipes.get(spname), f"Pipeline {spname} (its TTL)", 30)

    # a Workflow's name held by someone else: read (get) to tell whose it is
    taken = f"taken-{uuid.uuid4().hex[:6]}"
    tasks.objects.create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", namespace, "workflows",
        {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
         "metadata": {"name": f"{taken}-1"},
         "spec": {"entrypoint": "m", "templates": [{"name": "m"}]}})
    squat = example("preprocessing")
    squat["metadata"]["name"] = taken
    tasks.create(squat)
    assert "NameTaken" in [c["reason"] for c in tasks.wait_state(taken, "failed")["status"]
                           ["conditions"] if c["type"] == "Failed"]

    # a working volume refused (a quota): the Workflow made for it is deleted
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(namespace, client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-volumes"),
        spec=client.V1ResourceQuotaSpec(hard={"persistentvolumeclaims": "0"})))
    deadline = time.monotonic() + 30
    while (not core.read_namespaced_resource_quota("no-volumes", namespace).status.hard
           and time.monotonic() < deadline):
        time.sleep(0.2)
    try:
        refused = example("preprocessing")
        refused["metadata"]["name"] = rname = f"noroom-{uuid.uuid4().hex[:6]}"
        tasks.create(refused)
        tasks.wait_state(rname, "failed")
        assert f"{rname}-1" not in [w["metadata"]["name"] for w in tasks.workflows()]
    finally:
        core.delete_namespaced_resource_quota("no-volumes", namespace)

    # a child's name held by an MLTask the pipeline does not own (get), and a Pipeline carrying
    # the finalizer of earlier versions, which Kopf removes (patch)
    other = pipeline_example("digits")
    oname = other["metadata"]["name"] = f"other-{uuid.uuid4().hex[:6]}"
    holder = example("preprocessing")
    holder["metadata"]["name"] = f"{oname}-preprocess"
    holder["spec"]["suspend"] = True
    tasks.create(holder)
    other["metadata"]["finalizers"] = ["mltask.dev/finalizer"]
    pipes.create(other)
    pipes.wait_state(oname, "failed")
    deadline = time.monotonic() + 30
    while pipes.get(oname)["metadata"].get("finalizers") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pipes.get(oname)["metadata"].get("finalizers"), proc.tail()


def no_permission_problems(log: str) -> list[str]:
    """Lines of the operator's log about missing permissions (Kopf says 'Forbidden', or 'Not
    enough permissions' when it falls back)."""
    return [line for line in log.splitlines()
            if ("forbidden" in line.lower() or "not enough permissions" in line.lower())
            and "exceeded quota" not in line]  # a quota's 403 (the flow's refused volume)


def run_as_chart_identity(control_plane, api: client.ApiClient, argo, docs, release_ns: str,
                          flow_ns: str, tmp_path: Path) -> tuple[set, list, set]:
    """Apply the rendered chart, run the operator as its ServiceAccount with its Deployment's
    environment, run the full flow in `flow_ns`, stop it (releasing the Lease); return what it
    used, what it was refused, and what the chart grants it."""
    apply(control_plane, docs, tmp_path, f"chart-{release_ns}")
    delete_lease(api, release_ns, RELEASE)  # so creating it is part of the run
    env = pod_env(find(docs, "Deployment"), "chart-sa")
    env.update({"MLTASK_METRICS_PORT": "0", "MLTASK_RESYNC_SECONDS": "5"})
    kubeconfig = service_account_kubeconfig(control_plane, api, release_ns, RELEASE,
                                            tmp_path / "sa.yaml")
    since = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    proc = OperatorProcess(kubeconfig, tmp_path / "operator-sa.log", env=env)
    proc.start()
    try:
        full_flow(api, argo, flow_ns, proc)
        leases = client.CoordinationV1Api(api)
        lease = leases.read_namespaced_lease(RELEASE, release_ns)
        assert lease.spec.holder_identity == "chart-sa"
        # the flow can end within the first renew period (2 s): wait for a renewal, so that
        # the Lease `update` the chart grants is used however fast the machine is
        deadline = time.monotonic() + 15
        while lease.spec.renew_time <= lease.spec.acquire_time:
            assert time.monotonic() < deadline, f"Lease never renewed: {proc.tail()}"
            time.sleep(0.2)
            lease = leases.read_namespaced_lease(RELEASE, release_ns)
    finally:
        proc.stop()
    assert client.CoordinationV1Api(api).read_namespaced_lease(
        RELEASE, release_ns).spec.holder_identity is None, "released at stop"
    assert not no_permission_problems(proc.tail(100000)), proc.tail()
    used, refused = audited(control_plane, release_ns, RELEASE, since)
    granted = set().union(*(rules(d) for d in docs if d["kind"] in ("ClusterRole", "Role")))
    return used, refused, granted


def test_operator_runs_as_the_chart_service_account(
        control_plane, api: client.ApiClient, mltask_crds, quiet_operator, argo,
        namespace: str, tmp_path: Path) -> None:
    """Cluster-wide: the full flow works with the chart's rules, and every granted verb was
    used (an over-grant shows up as granted but never used)."""
    ensure_namespace(api, RELEASE_NS)
    used, refused, granted = run_as_chart_identity(
        control_plane, api, argo, render(RELEASE_NS), RELEASE_NS, namespace, tmp_path)
    assert not refused, refused
    assert used <= granted
    unused = granted - used
    assert unused == ADMISSION_ONLY, f"granted, never used: {unused - ADMISSION_ONLY}"


def test_operator_runs_as_the_chart_service_account_namespaced(
        control_plane, api: client.ApiClient, mltask_crds, quiet_operator, argo,
        tmp_path: Path) -> None:
    """watchNamespaces (the GPU values): Roles in the two namespaces only, Kopf's cluster-wide
    scanning off, the Lease in the release namespace; the full flow works and nothing is
    refused, nor logged as forbidden."""
    for ns in ("mltask-gpu", "ml-team-a", "ml-team-b"):
        ensure_namespace(api, ns)
    flow_ns = "ml-team-a"
    for plural in ("pipelines", "mltasks"):  # a fresh start if the session ran this before
        client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(
            "mltask.dev", "v1alpha1", flow_ns, plural)
    used, refused, granted = run_as_chart_identity(
        control_plane, api, argo, render("mltask-gpu", "-f", str(GPU_VALUES)), "mltask-gpu",
        flow_ns, tmp_path)
    assert not refused, refused
    assert used <= granted
    unused = granted - used
    assert unused == ADMISSION_ONLY, f"granted, never used: {unused - ADMISSION_ONLY}"
    assert not [u for u in used if u[1] in ("namespaces", "customresourcedefinitions")]


#: Calls the chart's identity must be refused: what it was never given, and the verbs the chart
#: used to grant though nothing calls them.
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
    ("get a Pipeline", lambda c, ns: client.CustomObjectsApi(c).get_namespaced_custom_object(
        "mltask.dev", "v1alpha1", ns, "pipelines", "any")),
    ("delete every MLTask", lambda c, ns: client.CustomObjectsApi(c)
     .delete_collection_namespaced_custom_object("mltask.dev", "v1alpha1", ns, "mltasks")),
    ("read a pod", lambda c, ns: client.CoreV1Api(c).read_namespaced_pod("any", ns)),
    ("read a ConfigMap", lambda c, ns: client.CoreV1Api(c).list_namespaced_config_map(ns)),
    ("update an MLTask", lambda c, ns: client.CustomObjectsApi(c).replace_namespaced_custom_object(
        "mltask.dev", "v1alpha1", ns, "mltasks", "any", {"metadata": {"name": "any"}})),
    ("create a Pipeline", lambda c, ns: client.CustomObjectsApi(c).create_namespaced_custom_object(
        "mltask.dev", "v1alpha1", ns, "pipelines", pipeline_example("digits"))),
    ("update a Pipeline", lambda c, ns: client.CustomObjectsApi(c)
     .replace_namespaced_custom_object("mltask.dev", "v1alpha1", ns, "pipelines", "any",
                                       {"metadata": {"name": "any"}})),
    ("patch an MLTask's status", lambda c, ns: client.CustomObjectsApi(c)
     .patch_namespaced_custom_object_status("mltask.dev", "v1alpha1", ns, "mltasks", "any",
                                            {"status": {}})),
    ("patch an Event", lambda c, ns: client.CoreV1Api(c).patch_namespaced_event(
        "any", ns, {"message": "x"})),
    ("create an events.k8s.io Event", lambda c, ns: client.EventsV1Api(c).create_namespaced_event(
        ns, {"metadata": {"generateName": "x."}, "eventTime": "2026-01-01T00:00:00.000000Z",
             "reportingController": "x/y", "reportingInstance": "x", "action": "A",
             "reason": "R", "regarding": {"kind": "Pod", "name": "x", "namespace": ns},
             "type": "Normal"})),
    ("get a CRD", lambda c, ns: client.ApiextensionsV1Api(c).read_custom_resource_definition(
        "mltasks.mltask.dev")),
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
    assert allowed("ml-team-a", "patch", "mltasks")
    assert not allowed("ml-team-a", "update", "mltasks")
    assert not allowed(namespace, "watch", "mltasks")
    assert not allowed("mltask-gpu", "list", "mltasks"), "its own namespace is not watched"
    assert not allowed(None, "watch", "customresourcedefinitions", "apiextensions.k8s.io")
    assert not allowed(None, "list", "namespaces", "")
    # a task may be deleted one at a time (its TTL after finishing), never a whole collection
    assert allowed("ml-team-a", "delete", "mltasks")
    assert not allowed("ml-team-a", "deletecollection", "mltasks")
    assert not allowed("ml-team-a", "get", "pods"), "pods are deleted by name, never read"
    assert not allowed("ml-team-a", "get", "pipelines"), "reads come from the watch"

