"""The Helm chart under test, rendered with the pinned helm (no cluster needed)."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml

from harness.controlplane import BIN_DIR, REPO

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
    """`helm template` of the chart (CRDs included) as a list of objects."""
    out = helm("template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds",
               "--kube-version", KUBE_VERSION, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def render_error(*args: str) -> str:
    """`helm template` that must fail: its error output."""
    res = helm("template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, *args,
               check=False)
    assert res.returncode != 0, f"helm template {' '.join(args)} succeeded"
    return res.stderr


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind
                and (name is None or d["metadata"]["name"] == name))


def rules(doc: dict[str, Any]) -> set[tuple[str, str, str]]:
    """A (Cluster)Role's rules as (group, resource, verb) triples."""
    out = set()
    for rule in doc["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
        out |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"]
                for v in rule["verbs"]}
    return out


def pod_env(deployment: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The operator container's environment as the kubelet would give it to a pod of this
    Deployment named `pod_name` (values, and the downward API's name and namespace)."""
    meta = deployment["metadata"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    fields = {"metadata.name": pod_name, "metadata.namespace": meta["namespace"]}
    env = {}
    for e in container.get("env") or []:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
    return env
