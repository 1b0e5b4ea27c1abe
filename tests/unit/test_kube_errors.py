"""How the operator reads the API server's refusals (clients.kube): a create in a namespace
being deleted is Gone (nothing to reconcile, no error logged and retried), not a failure;
tests/integration/test_kube_client.py has the real API server refuse it."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from mltask_operator.clients import kube as kube_mod


def refusal(status: int, reason: str, causes: list[dict[str, str]] | None = None,
            body: str | None = None) -> client.ApiException:
    e = client.ApiException(status=status, reason=reason)
    e.body = body if body is not None else json.dumps(
        {"kind": "Status", "message": "refused", "reason": reason,
         "details": {"causes": causes or []}, "code": status})
    return e


TERMINATING = refusal(403, "Forbidden", [{"reason": "NamespaceTerminating",
                                          "message": "namespace ns is being terminated",
                                          "field": "metadata.namespace"}])


@pytest.mark.parametrize("error", [
    refusal(403, "Forbidden", [{"reason": "FieldValueForbidden"}]),  # RBAC, a policy
    refusal(403, "Forbidden", body="not json"),
    refusal(500, "Internal Server Error", [{"reason": "NamespaceTerminating"}]),
])
def test_other_refusals_are_not_a_namespace_going(error: client.ApiException) -> None:
    assert not kube_mod._namespace_terminating(error)


def test_the_api_servers_refusal_in_a_terminating_namespace_is() -> None:
    """The body kube-apiserver answers (tests/integration/test_kube_client.py gets it)."""
    assert kube_mod._namespace_terminating(TERMINATING)
