"""A cluster admission policy for tests: a ValidatingAdmissionPolicy that refuses objects (422),
as a platform team's Kyverno, Gatekeeper or VAP rules would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client


@contextmanager
def denying(api: client.ApiClient, namespace: str, *, group: str, version: str, plural: str,
            expression: str, message: str, probe: dict[str, Any]) -> Iterator[None]:
    """Refuse CREATE of `group/plural` objects in `namespace` unless CEL `expression` holds.

    Waits until the API server enforces it (a dry-run create of `probe` is refused), and
    removes the policy afterwards."""
    adm = client.AdmissionregistrationV1Api(api)
    name = f"deny-{plural}-{namespace}"
    adm.create_validating_admission_policy({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{
                     "apiGroups": [group], "apiVersions": [version], "operations": ["CREATE"],
                     "resources": [plural]}]},
                 "validations": [{"expression": expression, "message": message}]}})
    adm.create_validating_admission_policy_binding({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {
                     "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}})
    try:
        objects = client.CustomObjectsApi(api)
        deadline = time.monotonic() + 30
        while True:  # the policy takes effect once the API server has loaded it
            try:
                objects.create_namespaced_custom_object(group, version, namespace, plural,
                                                        probe, dry_run="All")
            except client.ApiException as e:
                if e.status == 422:
                    break
                raise
            assert time.monotonic() < deadline, f"the admission policy {name} never took effect"
            time.sleep(0.2)
        yield
    finally:
        adm.delete_validating_admission_policy_binding(name)
        adm.delete_validating_admission_policy(name)
