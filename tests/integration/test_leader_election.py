"""Two operator replicas on the real API server: one holds the Lease and works, the other
stands by (serving metrics and /healthz) and takes over when the leader dies; a leader cut off
from the API server stops before a standby may take over; a standby refused the Lease says so
and fails /healthz."""

from __future__ import annotations

import datetime
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client, config

from harness import waiting
from harness.controlplane import free_port
from harness.operator_proc import OperatorProcess, service_account_kubeconfig
from harness.tasks import Tasks, example
from harness.tcpproxy import BlackholeProxy
from mltask_operator.leader import WARM_RETRIES, LeaseElector

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
    assert b.try_acquire() is False, "a fresh replica leaves a released Lease to a standby"
    time.sleep(b.retry_seconds * WARM_RETRIES)
    assert b.try_acquire() is True, "nobody took it: a warm replica does"
    stop = threading.Event()
    started = time.monotonic()
    assert a.wait_until_leader(stop) is True  # b stops renewing: a gets it after expiry
    assert time.monotonic() - started >= 4
    lease = client.CoordinationV1Api(api).read_namespaced_lease("elect", namespace)
    assert lease.spec.holder_identity == "replica-a" and lease.spec.lease_transitions == 2


def metrics(port: int) -> dict[str, float]:
    """The operator's own samples (mltask_*) from its Prometheus endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("mltask_") and " " in line}


def test_only_the_leader_reconciles_and_a_standby_takes_over(
        control_plane, mltask_crds, api: client.ApiClient, namespace: str, argo,
        operator) -> None:
    """The Lease namespace comes from POD_NAMESPACE, as in the chart's pods. The session's
    cluster-wide operator is stopped meanwhile: only the two replicas may act here."""
    operator.stop()
    env = {"MLTASK_LEADER_ELECTION": "true", "POD_NAMESPACE": namespace,
           "MLTASK_LEADER_ELECTION_LEASE_SECONDS": "5", "MLTASK_NAMESPACES": namespace}
    ports = {"a": free_port(), "b": free_port()}
    a = OperatorProcess(control_plane.kubeconfig, control_plane.workdir / f"{namespace}-a.log",
                        env={**env, "POD_NAME": "replica-a",
                             "MLTASK_METRICS_PORT": str(ports["a"])})
    b = OperatorProcess(control_plane.kubeconfig, control_plane.workdir / f"{namespace}-b.log",
                        env={**env, "POD_NAME": "replica-b",
                             "MLTASK_METRICS_PORT": str(ports["b"])})
    leases = client.CoordinationV1Api(api)
    tasks = Tasks(api, namespace)
    try:
        a.start()
        b.start()  # healthy while standing by
        # healthy comes before the first Lease write: wait for it rather than read at once
        waiting.until(lambda: _holder(leases, namespace) == "replica-a", "replica-a leads")
        # the metrics Service selects both replicas: the standby serves metrics too
        waiting.until(lambda: metrics(ports["a"])["mltask_operator_leader"] == 1,
                      "replica-a reports itself the leader")
        assert metrics(ports["b"])["mltask_operator_leader"] == 0
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
        assert metrics(ports["b"])["mltask_operator_leader"] == 1
        print(f"standby took over {took_over:.1f}s after the leader was killed")
    finally:
        a.stop()
        b.stop()
        operator.start()


def _holder(leases: client.CoordinationV1Api, namespace: str) -> str | None:
    """The Lease's holder, or None while the Lease does not exist yet."""
    try:
        return leases.read_namespaced_lease("mltask-operator", namespace).spec.holder_identity
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def _first_line_at(proc: OperatorProcess, text: str, timeout: float = 60) -> float:
    """The time (time.time()) of the first log line of `proc` containing `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.tail(400).splitlines():
            if text in line:
                stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
        time.sleep(0.02)
    raise AssertionError(f"no {text!r} in the log:\n{proc.tail()}")


def test_the_standby_not_the_replacement_takes_a_released_lease(
        control_plane, mltask_crds, api: client.ApiClient, namespace: str) -> None:
    """A leader pod deleted: it releases the Lease on SIGTERM (here the test is that leader)
    while its Deployment's replacement has just started trying and found the Lease held. The
    release falls just before the replacement's second try, the worst moment: the standby that
    has been waiting takes the Lease all the same, within a retry period, and the replacement
    stands by. Before a replica fresh when it found the Lease free left it to a warm standby,
    the replacement won almost every time."""
    env = {"MLTASK_LEADER_ELECTION": "true", "POD_NAMESPACE": namespace,
           "MLTASK_LEADER_ELECTION_LEASE_SECONDS": "15", "MLTASK_NAMESPACES": namespace}
    procs = {n: OperatorProcess(control_plane.kubeconfig,
                                control_plane.workdir / f"{namespace}-{n}.log",
                                env={**env, "POD_NAME": n})
             for n in ("standby", "replacement")}
    leader = LeaseElector(api, namespace, "mltask-operator", "leader", lease_seconds=15)
    leases = client.CoordinationV1Api(api)
    stop = threading.Event()

    def holder() -> str | None:
        return leases.read_namespaced_lease("mltask-operator", namespace).spec.holder_identity

    try:
        assert leader.try_acquire()
        renewing = leader.keep_renewing(stop.set, stop)
        procs["standby"].start()
        _first_line_at(procs["standby"], "Standing by")
        time.sleep(leader.retry_seconds * (WARM_RETRIES + 0.5))  # the standby is warm
        procs["replacement"].start()
        first_try = _first_line_at(procs["replacement"], "Standing by")
        time.sleep(max(first_try + leader.retry_seconds - 0.2 - time.time(), 0))
        stop.set()
        renewing.join()
        leader.release()
        released = time.monotonic()
        deadline = released + 30
        while holder() not in ("standby", "replacement") and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - released
        logs = "\n".join(f"{n}:\n{p.tail(10)}" for n, p in procs.items())
        assert holder() == "standby", logs
        left = "Lease" in procs["replacement"].tail(50) and "is free: leaving it" in \
            procs["replacement"].tail(50)
        print(f"the standby held the released Lease {took:.1f}s after the release; the "
              f"replacement {'found it free and left it' if left else 'did not find it free'}")
        assert took < leader.retry_seconds + 2, logs
    finally:
        stop.set()
        for p in procs.values():
            p.stop()


def test_leader_cut_off_from_the_api_server_stops_before_a_standby_takes_over(
        control_plane, api: client.ApiClient, namespace: str) -> None:
    """The leader's connection to the API server goes silent (a proxy drops every byte): its
    Lease calls time out, it gives up at the renew deadline, and that is before the standby
    may take the Lease (one Lease duration after the last renew)."""
    proxy = BlackholeProxy("127.0.0.1", control_plane.api_port)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(control_plane.kubeconfig), client_configuration=cfg)
    cfg.host = f"https://127.0.0.1:{proxy.port}"
    leader = LeaseElector(client.ApiClient(cfg), namespace, "cut-off", "leader", lease_seconds=6)
    standby = LeaseElector(api, namespace, "cut-off", "standby", lease_seconds=6)
    stop = threading.Event()
    times: dict[str, float] = {}
    try:
        assert leader.try_acquire()
        leader.keep_renewing(lambda: times.setdefault("leader gave up", time.monotonic()), stop)
        time.sleep(leader.retry_seconds * 2.5)  # renewals pass through the proxy
        renewed = client.CoordinationV1Api(api).read_namespaced_lease(
            "cut-off", namespace).spec.renew_time
        proxy.blackhole.set()
        times["cut off"] = time.monotonic()
        assert standby.wait_until_leader(stop)
        times["standby took over"] = time.monotonic()
        lease = client.CoordinationV1Api(api).read_namespaced_lease("cut-off", namespace).spec
        assert lease.holder_identity == "standby" and lease.acquire_time > renewed
    finally:
        stop.set()
        proxy.close()
    assert "leader gave up" in times, "a hanging Lease call kept the leader past its deadline"
    assert times["leader gave up"] < times["standby took over"], times
    # the last renew happened at most one retry period before the cut
    assert times["leader gave up"] - times["cut off"] <= (
        leader.renew_deadline + leader.retry_seconds + 0.5), times


def test_standby_refused_the_lease_fails_healthz_and_names_the_lease(
        control_plane, api: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    """A ServiceAccount without a Role for Leases (the Lease namespace is not where its Role
    is): the standby logs an error naming the Lease and the HTTP status and fails /healthz, so
    it is restarted rather than looking healthy forever."""
    client.CoreV1Api(api).create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="no-lease")))
    kubeconfig = service_account_kubeconfig(control_plane, api, namespace, "no-lease",
                                            tmp_path / "sa.yaml")
    proc = OperatorProcess(kubeconfig, tmp_path / "operator.log", env={
        "MLTASK_LEADER_ELECTION": "true", "POD_NAMESPACE": namespace, "POD_NAME": "refused",
        "MLTASK_LEADER_ELECTION_LEASE_SECONDS": "5", "MLTASK_NAMESPACES": namespace})
    proc.start()  # healthy at first: a standby
    try:
        deadline = time.monotonic() + 30
        code, body = 200, b""
        while time.monotonic() < deadline and code == 200:
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{proc.health_port}/healthz", timeout=2) as resp:
                    code = resp.status
            except urllib.error.HTTPError as e:
                code, body = e.code, e.read()
        assert code == 500, proc.tail()
        assert b"HTTP 403 Forbidden" in body
        errors = [line for line in proc.tail(200).splitlines() if " ERROR " in line]
        assert errors and f"Lease {namespace}/mltask-operator" in errors[0] \
            and "HTTP 403 Forbidden" in errors[0], proc.tail()
    finally:
        proc.stop()
