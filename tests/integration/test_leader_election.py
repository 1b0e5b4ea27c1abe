"""Two operator replicas on the real API server: one holds the Lease and works, the other
stands by and takes over when the leader dies."""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from harness.operator_proc import OperatorProcess
from harness.tasks import Tasks, example
from mltask_operator.leader import LeaseElector

pytestmark = pytest.mark.integration


def test_lease_elector_excludes_a_second_holder(api: client.ApiClient, namespace: str) -> None:
    a = LeaseElector(api, namespace, "elect", "replica-a", lease_seconds=5)
    b = LeaseElector(api, namespace, "elect", "replica-b", lease_seconds=5)
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    assert a.try_acquire() is True, "the holder renews"
    lease = client.CoordinationV1Api(api).read_namespaced_lease("elect", namespace)
    assert lease.spec.holder_identity == "replica-a" and lease.spec.lease_duration_seconds == 5
    a.release()
    assert b.try_acquire() is True, "a released Lease is free at once"
    stop = threading.Event()
    started = time.monotonic()
    assert a.wait_until_leader(stop) is True  # b stops renewing: a gets it after expiry
    assert time.monotonic() - started >= 4
    lease = client.CoordinationV1Api(api).read_namespaced_lease("elect", namespace)
    assert lease.spec.holder_identity == "replica-a" and lease.spec.lease_transitions == 2


def test_only_the_leader_reconciles_and_a_standby_takes_over(
        control_plane, mltask_crds, api: client.ApiClient, namespace: str, argo) -> None:
    env = {"MLTASK_LEADER_ELECTION": "true", "MLTASK_LEADER_ELECTION_NAMESPACE": namespace,
           "MLTASK_LEADER_ELECTION_LEASE_SECONDS": "5", "MLTASK_NAMESPACES": namespace}
    a = OperatorProcess(control_plane.kubeconfig, control_plane.workdir / f"{namespace}-a.log",
                        env={**env, "POD_NAME": "replica-a"})
    b = OperatorProcess(control_plane.kubeconfig, control_plane.workdir / f"{namespace}-b.log",
                        env={**env, "POD_NAME": "replica-b"})
    leases = client.CoordinationV1Api(api)
    tasks = Tasks(api, namespace)
    try:
        a.start()
        b.start()  # healthy while standing by
        holder = leases.read_namespaced_lease("mltask-operator", namespace).spec.holder_identity
        assert holder == "replica-a"
        body = example("training")
        tasks.create(body)
        name = body["metadata"]["name"]
        argo.wait_for(namespace, f"{name}-1")
        assert "Standing by" in b.tail(200) and "Created Workflow" not in b.tail(200)

        a.kill()  # no release: b must wait for the Lease to expire
        killed = time.monotonic()
        deadline = killed + 30
        while time.monotonic() < deadline:
            spec = leases.read_namespaced_lease("mltask-operator", namespace).spec
            if spec.holder_identity == "replica-b":
                break
            time.sleep(0.2)
        assert spec.holder_identity == "replica-b", b.tail()
        took_over = time.monotonic() - killed
        tasks.patch(name, {"suspend": True})
        wf = argo.wait_for(namespace, f"{name}-1")
        deadline = time.monotonic() + 30
        while not wf["spec"].get("shutdown") and time.monotonic() < deadline:
            time.sleep(0.2)
            wf = argo.get(namespace, f"{name}-1")
        assert wf["spec"].get("shutdown") == "Stop", b.tail()
        print(f"standby took over {took_over:.1f}s after the leader was killed")
    finally:
        a.stop()
        b.stop()
